"""The Slack verifier, handshake and event identity, as pure functions on a fixed clock.

The signer is slack_sdk's own; it is cross-checked against Slack's published example and an
hmac/hashlib computation so a bug shared with the verifier it wraps cannot pass unseen.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

from tests.support.provider_checks import reason_of
from tests.support.sign_slack import sign_slack
from webhooks_gateway.providers import slack
from webhooks_gateway.providers.base import (
    Delivery,
    FailureReason,
    PayloadError,
    Reply,
)

NOW = datetime(2025, 11, 22, 8, 26, 40, tzinfo=UTC)
TOLERANCE = 300
SECRET = "8f742231b10e8888abcd99edcbaf85a5"
OLD_SECRET = "1c5e0a9d77b24f03a2f1d6c8e9b0a4f2"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "slack"
HANDSHAKE = FIXTURES / "url_verification.json"
EVENT_FILES = sorted(p for p in FIXTURES.glob("*.json") if p != HANDSHAKE)
BODY = (FIXTURES / "team_join.json").read_bytes()


def verify(
    body: bytes,
    headers: dict[str, str],
    *,
    secrets: tuple[str, ...] = (SECRET,),
    now: datetime = NOW,
    tolerance: int = TOLERANCE,
) -> None:
    slack.verify(
        Delivery(raw=body, headers=Headers(headers)),
        secrets=[SecretStr(secret) for secret in secrets],
        now=now,
        tolerance_seconds=tolerance,
    )


def rejection(body: bytes, headers: dict[str, str], **kwargs: Any) -> FailureReason:
    return reason_of(lambda: verify(body, headers, **kwargs))


def _delivery(body: bytes) -> Delivery:
    return Delivery(raw=body, headers=Headers({}))


def _events(payload: dict[str, Any]) -> list[Any]:
    delivery = _delivery(json.dumps(payload).encode())
    return slack.events(delivery, payload)


def test_slack_signer_reproduces_slack_published_example() -> None:
    # https://api.slack.com/authentication/verifying-requests-from-slack (worked example).
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect"
        b"&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554"
        b"%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = sign_slack(
        body, secret="8f742231b10e8888abcd99yyyzzz85a5", at=datetime.fromtimestamp(1531420618, UTC)
    )
    assert headers["X-Slack-Signature"] == (
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    )


def test_slack_signer_matches_an_independent_hmac() -> None:
    base = f"v0:{int(NOW.timestamp())}:".encode() + BODY
    expected = hmac.new(SECRET.encode(), base, hashlib.sha256).hexdigest()
    assert sign_slack(BODY, secret=SECRET, at=NOW)["X-Slack-Signature"] == f"v0={expected}"


@pytest.mark.parametrize("path", [*EVENT_FILES, HANDSHAKE], ids=lambda p: p.stem)
def test_slack_accepts_fixture_signed_with_configured_secret(path: Path) -> None:
    body = path.read_bytes()
    verify(body, sign_slack(body, secret=SECRET, at=NOW))


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.stem)
def test_slack_reads_fixture_event_type(path: Path) -> None:
    delivery = _delivery(path.read_bytes())
    payload = slack.parse(delivery)
    assert slack.handshake(delivery, payload) is None
    (event,) = slack.events(delivery, payload)
    assert (event.event_type, event.body) == (path.stem, path.read_bytes())


def test_slack_fixture_event_ids_are_unique() -> None:
    ids = []
    for path in EVENT_FILES:
        delivery = _delivery(path.read_bytes())
        ids += [event.event_id for event in slack.events(delivery, slack.parse(delivery))]
    assert len(ids) == len(set(ids)) == len(EVENT_FILES)


def test_slack_event_callback_id_is_the_envelope_event_id() -> None:
    (event,) = _events({"type": "event_callback", "event_id": "Ev9", "event": {"type": "x"}})
    assert (event.event_id, event.event_type) == ("Ev9", "x")


def test_slack_app_rate_limited_is_identified_by_team_app_and_minute() -> None:
    (event,) = _events(json.loads((FIXTURES / "app_rate_limited.json").read_text()))
    assert event.event_id == "app_rate_limited:T0FIXTURE01:A0FIXTUREAPP:1763805600"
    assert event.event_type == "app_rate_limited"


def test_slack_url_verification_is_answered_with_the_challenge() -> None:
    delivery = _delivery(HANDSHAKE.read_bytes())
    reply = slack.handshake(delivery, slack.parse(delivery))
    assert reply == Reply(
        status=200, body={"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    )


@pytest.mark.parametrize("challenge", [None, "", 42])
def test_slack_url_verification_without_challenge_is_a_payload_error(challenge: Any) -> None:
    payload = {"type": "url_verification", "challenge": challenge}
    with pytest.raises(PayloadError):
        slack.handshake(_delivery(json.dumps(payload).encode()), payload)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"type": "event_callback", "event": {"type": "x"}}, id="no-event-id"),
        pytest.param(
            {"type": "event_callback", "event_id": "", "event": {"type": "x"}}, id="empty-id"
        ),
        pytest.param({"type": "event_callback", "event_id": "Ev1"}, id="no-inner-event"),
        pytest.param(
            {"type": "event_callback", "event_id": "Ev1", "event": "x"}, id="event-not-object"
        ),
        pytest.param(
            {"type": "event_callback", "event_id": "Ev1", "event": {}}, id="no-inner-type"
        ),
        pytest.param({"type": "app_rate_limited", "team_id": "T1"}, id="rate-limited-incomplete"),
        pytest.param(
            {
                "type": "app_rate_limited",
                "team_id": "T1",
                "api_app_id": "A1",
                "minute_rate_limited": "1",
            },
            id="rate-limited-minute-not-int",
        ),
        pytest.param({"type": "block_actions"}, id="not-an-events-api-envelope"),
        pytest.param({}, id="no-type"),
    ],
)
def test_slack_unreadable_envelope_is_a_payload_error(payload: dict[str, Any]) -> None:
    with pytest.raises(PayloadError):
        _events(payload)


@pytest.mark.parametrize("skew", [TOLERANCE, -TOLERANCE, 60, -60])
def test_slack_accepts_signature_within_tolerance_either_side(skew: int) -> None:
    verify(BODY, sign_slack(BODY, secret=SECRET, at=NOW - timedelta(seconds=skew)))


def test_slack_rejects_stale_signature() -> None:
    at = NOW - timedelta(seconds=TOLERANCE + 1)
    assert rejection(BODY, sign_slack(BODY, secret=SECRET, at=at)) == "stale"


def test_slack_rejects_signature_from_the_future() -> None:
    at = NOW + timedelta(seconds=TOLERANCE + 1)
    assert rejection(BODY, sign_slack(BODY, secret=SECRET, at=at)) == "stale"


def test_slack_tolerance_setting_cannot_widen_the_sdk_window() -> None:
    at = NOW - timedelta(seconds=TOLERANCE + 30)
    headers = sign_slack(BODY, secret=SECRET, at=at)
    assert rejection(BODY, headers, tolerance=3600) == "stale"


def test_slack_narrower_tolerance_setting_is_honoured() -> None:
    headers = sign_slack(BODY, secret=SECRET, at=NOW - timedelta(seconds=61))
    assert rejection(BODY, headers, tolerance=60) == "stale"


def test_slack_rejects_tampered_body() -> None:
    headers = sign_slack(BODY, secret=SECRET, at=NOW)
    tampered = BODY.replace(b'"is_admin": false', b'"is_admin": true')
    assert tampered != BODY
    assert rejection(tampered, headers) == "mismatch"


def test_slack_rejects_signature_from_wrong_secret() -> None:
    headers = sign_slack(BODY, secret="someone-elses-signing-secret", at=NOW)
    assert rejection(BODY, headers) == "mismatch"


def test_slack_rejects_signature_replayed_under_another_timestamp() -> None:
    headers = sign_slack(BODY, secret=SECRET, at=NOW - timedelta(seconds=10))
    headers["X-Slack-Request-Timestamp"] = str(int(NOW.timestamp()))
    assert rejection(BODY, headers) == "mismatch"


@pytest.mark.parametrize("header", ["X-Slack-Signature", "X-Slack-Request-Timestamp"])
def test_slack_rejects_missing_header(header: str) -> None:
    headers = sign_slack(BODY, secret=SECRET, at=NOW)
    del headers[header]
    assert rejection(BODY, headers) == "missing_header"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        pytest.param("X-Slack-Request-Timestamp", "soon", id="non-numeric-timestamp"),
        pytest.param("X-Slack-Request-Timestamp", "-5", id="negative-timestamp"),
        pytest.param("X-Slack-Signature", "v1=" + "0" * 64, id="other-version"),
        pytest.param("X-Slack-Signature", "v0=abc", id="short-digest"),
        pytest.param("X-Slack-Signature", "v0=" + "Z" * 64, id="not-hex"),
    ],
)
def test_slack_rejects_malformed_headers(header: str, value: str) -> None:
    headers = {**sign_slack(BODY, secret=SECRET, at=NOW), header: value}
    assert rejection(BODY, headers) == "malformed"


def test_slack_rejects_body_that_is_not_utf8() -> None:
    body = b'{"type": "event_callback", "x": "\xff"}'
    headers = {**sign_slack(BODY, secret=SECRET, at=NOW)}
    assert rejection(body, headers) == "malformed"


def test_slack_reads_headers_case_insensitively() -> None:
    headers = {k.lower(): v for k, v in sign_slack(BODY, secret=SECRET, at=NOW).items()}
    verify(BODY, headers)


def test_slack_accepts_signature_from_second_configured_secret() -> None:
    headers = sign_slack(BODY, secret=OLD_SECRET, at=NOW)
    verify(BODY, headers, secrets=(SECRET, OLD_SECRET))


def test_slack_skips_a_blank_configured_secret() -> None:
    verify(BODY, sign_slack(BODY, secret=SECRET, at=NOW), secrets=(" ", SECRET))


def test_slack_rejects_everything_when_no_secret_configured() -> None:
    assert rejection(BODY, sign_slack(BODY, secret=SECRET, at=NOW), secrets=()) == "mismatch"


def test_slack_retry_headers_do_not_change_verification() -> None:
    verify(BODY, sign_slack(BODY, secret=SECRET, at=NOW, retry_num=2))
