"""Mailchimp over real HTTP: a token in the callback URL (or Bearer), the GET URL check, composite ids.

Mailchimp signs nothing, so there is no tampered-body or stale-timestamp case: the token is the whole
proof, and what is tested is that the token is required, compared against every configured secret,
and never written to the gateway's log.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.support.provider_secrets import current, rotated_out
from tests.support.sign_mailchimp import mailchimp_params, sign_mailchimp
from tests.webhooks_gateway.providers.conftest import Gateway, wait_until

SECRET = "MAILCHIMP_WEBHOOK_SECRET"
FIXTURES = Path(__file__).parents[2] / "fixtures" / "mailchimp"
FIXTURE_FILES = sorted(FIXTURES.glob("*.form"))
LIST_ID = "a6b5da1054"
# type:fired_at:list_id:member, member being data[id], data[new_id] or the lower-cased data[email].
EXPECTED_IDS = {
    "subscribe": "subscribe:2009-03-26 21:35:57:a6b5da1054:8a25ff1d98",
    "unsubscribe": "unsubscribe:2009-03-26 21:40:57:a6b5da1054:8a25ff1d98",
    "profile": "profile:2009-03-26 21:31:21:a6b5da1054:8a25ff1d98",
    "upemail": "upemail:2009-03-26 22:15:09:a6b5da1054:51da8c3259",
    "cleaned": "cleaned:2009-03-26 22:01:00:a6b5da1054:api+cleaned@mailchimp.com",
    "campaign": "campaign:2009-03-26 21:31:21:a6b5da1054:5aa2102003",
}


def _subscribe() -> tuple[bytes, str]:
    """A subscribe delivery for a member of this test only, and the id it must be stored under."""
    member = secrets.token_hex(5)
    fired_at = "2025-11-22 08:26:40"
    body = urlencode(
        [
            ("type", "subscribe"),
            ("fired_at", fired_at),
            ("data[id]", member),
            ("data[list_id]", LIST_ID),
            ("data[email]", f"member+{member}@example.com"),
            ("data[email_type]", "html"),
            ("data[merges][EMAIL]", f"member+{member}@example.com"),
            ("data[merges][FNAME]", "Test"),
            ("data[ip_opt]", "10.20.10.30"),
        ]
    ).encode()
    return body, f"subscribe:{fired_at}:{LIST_ID}:{member}"


def test_fixtures_cover_the_documented_event_types() -> None:
    assert {path.stem for path in FIXTURE_FILES} == set(EXPECTED_IDS)


@pytest.mark.parametrize("fixture", FIXTURE_FILES, ids=lambda path: path.stem)
def test_documented_event_is_stored_once_under_its_composite_id(
    gateway: Gateway, fixture: Path
) -> None:
    body = fixture.read_bytes()

    response = gateway.post(
        "mailchimp", body, sign_mailchimp(current(SECRET)), params=mailchimp_params(current(SECRET))
    )

    assert response.status_code == 200, response.text
    (row,) = gateway.rows("mailchimp", EXPECTED_IDS[fixture.stem])
    assert response.json()["inbox_ids"] == [row.id]
    assert (row.event_type, row.status, row.body) == (fixture.stem, "enqueued", body)
    assert row.headers == {}  # the token is never kept


def test_token_as_bearer_header_is_accepted(gateway: Gateway) -> None:
    body, event_id = _subscribe()

    response = gateway.post("mailchimp", body, sign_mailchimp(current(SECRET), as_header=True))

    assert response.status_code == 200, response.text
    assert len(gateway.rows("mailchimp", event_id)) == 1


def test_redelivery_is_a_duplicate(gateway: Gateway) -> None:
    body, event_id = _subscribe()
    headers, params = sign_mailchimp(current(SECRET)), mailchimp_params(current(SECRET))
    gateway.post("mailchimp", body, headers, params=params)

    again = gateway.post("mailchimp", body, headers, params=params)

    assert again.json() == {"status": "duplicate"}
    assert len(gateway.rows("mailchimp", event_id)) == 1


def test_rotated_out_token_is_still_accepted(gateway: Gateway) -> None:
    body, event_id = _subscribe()

    response = gateway.post(
        "mailchimp",
        body,
        sign_mailchimp(rotated_out(SECRET)),
        params=mailchimp_params(rotated_out(SECRET)),
    )

    assert response.status_code == 200, response.text
    assert len(gateway.rows("mailchimp", event_id)) == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("wrong-token-in-url", "mismatch"),
        ("wrong-bearer-token", "mismatch"),
        ("no-token", "missing_header"),
    ],
)
def test_delivery_without_a_valid_token_is_rejected_and_nothing_stored(
    gateway: Gateway, fault: str, reason: str
) -> None:
    body, event_id = _subscribe()
    wrong = secrets.token_urlsafe(24)
    headers = sign_mailchimp(wrong, as_header=fault == "wrong-bearer-token")
    params = mailchimp_params(wrong) if fault == "wrong-token-in-url" else None

    response = gateway.post("mailchimp", body, headers, params=params)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": reason}
    assert gateway.rows("mailchimp", event_id) == []


def test_url_validation_get_is_answered_200_and_stores_nothing(gateway: Gateway) -> None:
    before = gateway.count("mailchimp")

    response = gateway.post(
        "mailchimp", b"", params=mailchimp_params(current(SECRET)), method="GET"
    )

    assert response.status_code == 200
    assert response.content == b""
    assert gateway.count("mailchimp") == before


def test_url_validation_get_needs_the_token_too(gateway: Gateway) -> None:
    response = gateway.post("mailchimp", b"", method="GET")

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": "missing_header"}


def test_wrong_method_is_405(gateway: Gateway) -> None:
    body, event_id = _subscribe()

    response = gateway.post(
        "mailchimp",
        body,
        sign_mailchimp(current(SECRET)),
        params=mailchimp_params(current(SECRET)),
        method="PUT",
    )

    assert response.status_code == 405
    assert response.json()["allowed"] == ["GET", "POST"]
    assert gateway.rows("mailchimp", event_id) == []


def test_token_in_the_url_never_reaches_the_gateway_log(gateway: Gateway) -> None:
    body, event_id = _subscribe()
    wrong = secrets.token_urlsafe(24)
    for token in (current(SECRET), rotated_out(SECRET), wrong):
        gateway.post("mailchimp", body, sign_mailchimp(token), params=mailchimp_params(token))
    gateway.post("mailchimp", b"", params=mailchimp_params(current(SECRET)), method="GET")
    log_path = gateway.service.log_path
    # The accepted delivery is logged with its event id: the log is being written, and read here.
    wait_until(lambda: event_id in log_path.read_text(errors="replace"), what="the delivery's log")

    log = log_path.read_text(errors="replace")

    for token in (current(SECRET), rotated_out(SECRET), wrong):
        assert token not in log
