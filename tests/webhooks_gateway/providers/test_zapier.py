"""Zapier over real HTTP: inbound Zap requests (shared secret), and the REST-hook subscribe endpoints.

Zap requests are not signed (no tampered-body or stale case exists): the `X-Hookfleet-Secret` header
(or Bearer) is the proof. The REST-hook routes use the same secret and write zapier_subscriptions and
audit_log rows, read back here from the database.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.tables import AuditEntry, ZapierSubscription
from tests.support.provider_secrets import current, rotated_out
from tests.support.sign_zapier import sign_zapier
from tests.webhooks_gateway.providers.conftest import Gateway
from webhooks_gateway.providers import zapier
from webhooks_gateway.providers.base import body_hash

SECRET = "ZAPIER_WEBHOOK_SECRET"
FIXTURES = Path(__file__).parents[2] / "fixtures" / "zapier"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))


def _expected_id(fixture: Path) -> str:
    payload = json.loads(fixture.read_bytes())
    return str(
        payload.get("id") or payload.get("idempotency_key") or body_hash(fixture.read_bytes())
    )


def _member_upsert() -> tuple[bytes, str]:
    key = f"zap-run-{secrets.token_hex(8)}"
    payload = {"event": "member.upsert", "idempotency_key": key, "email": f"{key}@example.com"}
    return json.dumps(payload).encode(), key


# --- inbound Zap requests ----------------------------------------------------------------------


def test_fixtures_cover_the_handled_event_types() -> None:
    assert {path.stem for path in FIXTURE_FILES} == zapier.HANDLED_EVENT_TYPES


@pytest.mark.parametrize("fixture", FIXTURE_FILES, ids=lambda path: path.stem)
def test_zap_request_is_stored_once_under_its_own_key_or_body_hash(
    gateway: Gateway, fixture: Path
) -> None:
    body = fixture.read_bytes()

    response = gateway.post("zapier", body, sign_zapier(current(SECRET)))

    assert response.status_code == 200, response.text
    (row,) = gateway.rows("zapier", _expected_id(fixture))
    assert response.json()["inbox_ids"] == [row.id]
    assert (row.event_type, row.status, row.body) == (fixture.stem, "enqueued", body)
    assert row.headers == {}  # the secret header is never kept


def test_body_without_event_or_type_is_a_zap_payload_under_its_body_hash(gateway: Gateway) -> None:
    body = json.dumps({"email": f"{secrets.token_hex(6)}@example.com", "source": "Zap"}).encode()

    response = gateway.post("zapier", body, sign_zapier(current(SECRET)))

    assert response.status_code == 200, response.text
    (row,) = gateway.rows("zapier", body_hash(body))
    assert row.event_type == "zap.payload"


def test_secret_as_bearer_is_accepted(gateway: Gateway) -> None:
    body, event_id = _member_upsert()

    response = gateway.post("zapier", body, sign_zapier(current(SECRET), bearer=True))

    assert response.status_code == 200, response.text
    assert len(gateway.rows("zapier", event_id)) == 1


def test_redelivery_is_a_duplicate(gateway: Gateway) -> None:
    body, event_id = _member_upsert()
    gateway.post("zapier", body, sign_zapier(current(SECRET)))

    again = gateway.post("zapier", body, sign_zapier(current(SECRET)))

    assert again.json() == {"status": "duplicate"}
    assert len(gateway.rows("zapier", event_id)) == 1


def test_rotated_out_secret_is_still_accepted(gateway: Gateway) -> None:
    body, event_id = _member_upsert()

    response = gateway.post("zapier", body, sign_zapier(rotated_out(SECRET)))

    assert response.status_code == 200, response.text
    assert len(gateway.rows("zapier", event_id)) == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("wrong-secret", "mismatch"), ("wrong-bearer", "mismatch"), ("no-secret", "missing_header")],
)
def test_request_without_a_valid_secret_is_rejected_and_nothing_stored(
    gateway: Gateway, fault: str, reason: str
) -> None:
    body, event_id = _member_upsert()
    headers = {
        "wrong-secret": sign_zapier(secrets.token_urlsafe(24)),
        "wrong-bearer": sign_zapier(secrets.token_urlsafe(24), bearer=True),
        "no-secret": {"Content-Type": "application/json"},
    }[fault]

    response = gateway.post("zapier", body, headers)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": reason}
    assert gateway.rows("zapier", event_id) == []


def test_form_encoded_body_is_refused_with_a_hint(gateway: Gateway) -> None:
    response = gateway.post(
        "zapier",
        b"event=member.upsert&email=a%40example.com",
        {**sign_zapier(current(SECRET)), "Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_body"
    assert "Payload Type to json" in response.json()["detail"]


def test_unusable_idempotency_key_is_refused(gateway: Gateway) -> None:
    body = json.dumps({"event": "member.upsert", "idempotency_key": {"nested": 1}}).encode()

    response = gateway.post("zapier", body, sign_zapier(current(SECRET)))

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_body"


def test_wrong_method_is_405(gateway: Gateway) -> None:
    body, event_id = _member_upsert()

    response = gateway.post("zapier", body, sign_zapier(current(SECRET)), method="GET")

    assert response.status_code == 405
    assert gateway.rows("zapier", event_id) == []


# --- REST hooks: Zapier subscribing to our triggers ---------------------------------------------


def _hooks(
    gateway: Gateway,
    method: str,
    suffix: str = "",
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    return httpx.request(
        method,
        f"{gateway.url}/webhooks/zapier/subscribe{suffix}",
        json=body,
        headers=sign_zapier(current(SECRET)) if headers is None else headers,
        params=params,
        timeout=10,
    )


def _hook_url() -> str:
    return f"https://hooks.zapier.com/hooks/standard/1234567/{secrets.token_hex(16)}/"


def _subscription(gateway: Gateway, subscription_id: int) -> ZapierSubscription | None:
    with Session(gateway.engine) as session:
        return session.get(ZapierSubscription, subscription_id)


def _audit_actions(gateway: Gateway, subscription_id: int) -> list[tuple[str, str]]:
    with Session(gateway.engine) as session:
        rows = session.execute(
            select(AuditEntry.actor, AuditEntry.action)
            .where(
                AuditEntry.entity_type == "zapier_subscription",
                AuditEntry.entity_id == str(subscription_id),
            )
            .order_by(AuditEntry.id)
        )
        return [(actor, action) for actor, action in rows]


def _subscription_ids(gateway: Gateway) -> set[int]:
    with Session(gateway.engine) as session:
        return set(session.scalars(select(ZapierSubscription.id)))


def test_subscribe_stores_the_hook_and_audits_it(gateway: Gateway) -> None:
    hook_url = _hook_url()

    response = _hooks(gateway, "POST", body={"hookUrl": hook_url, "event": "member.activated"})

    assert response.status_code == 201, response.text
    subscription_id = response.json()["id"]
    assert response.json() == {"id": subscription_id}
    row = _subscription(gateway, subscription_id)
    assert row is not None
    assert (row.event, row.hook_url, row.deleted_at) == ("member.activated", hook_url, None)
    assert _audit_actions(gateway, subscription_id) == [("zapier", "zapier.subscribed")]


def test_subscribe_accepts_the_legacy_target_url_key(gateway: Gateway) -> None:
    hook_url = _hook_url()

    response = _hooks(gateway, "POST", body={"target_url": hook_url, "event": "rsvp.approved"})

    assert response.status_code == 201, response.text
    row = _subscription(gateway, response.json()["id"])
    assert row is not None
    assert row.hook_url == hook_url


def test_list_shows_active_subscriptions_and_unsubscribe_retires_one(gateway: Gateway) -> None:
    hook_url = _hook_url()
    subscription_id = _hooks(
        gateway, "POST", body={"hookUrl": hook_url, "event": "member.deactivated"}
    ).json()["id"]

    listed = _hooks(gateway, "GET", params={"event": "member.deactivated"})
    assert listed.status_code == 200
    (entry,) = [item for item in listed.json() if item["id"] == subscription_id]
    assert (entry["event"], entry["hookUrl"]) == ("member.deactivated", hook_url)

    deleted = _hooks(gateway, "DELETE", f"/{subscription_id}")

    assert deleted.status_code == 200, deleted.text
    row = _subscription(gateway, subscription_id)
    assert row is not None
    assert row.deleted_at is not None
    assert deleted.json() == {"id": subscription_id, "deleted_at": row.deleted_at.isoformat()}
    assert subscription_id not in {item["id"] for item in _hooks(gateway, "GET").json()}
    assert _audit_actions(gateway, subscription_id) == [
        ("zapier", "zapier.subscribed"),
        ("zapier", "zapier.unsubscribed"),
    ]


def test_unsubscribing_twice_answers_200_and_audits_once(gateway: Gateway) -> None:
    subscription_id = _hooks(
        gateway, "POST", body={"hookUrl": _hook_url(), "event": "rsvp.declined"}
    ).json()["id"]
    first = _hooks(gateway, "DELETE", f"/{subscription_id}")

    second = _hooks(gateway, "DELETE", f"/{subscription_id}")

    assert second.status_code == 200
    assert second.json() == first.json()
    assert [action for _, action in _audit_actions(gateway, subscription_id)].count(
        "zapier.unsubscribed"
    ) == 1


def test_unsubscribing_an_unknown_id_is_404(gateway: Gateway) -> None:
    response = _hooks(gateway, "DELETE", f"/{9_000_000_000 + secrets.randbelow(10**6)}")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "headers",
    [{}, sign_zapier("not-the-secret"), sign_zapier("not-the-secret", bearer=True)],
    ids=["no-secret", "wrong-secret", "wrong-bearer"],
)
def test_hook_routes_refuse_a_caller_without_the_secret(
    gateway: Gateway, headers: dict[str, str]
) -> None:
    subscription_id = _hooks(
        gateway, "POST", body={"hookUrl": _hook_url(), "event": "member.activated"}
    ).json()["id"]
    before = _subscription_ids(gateway)

    responses = [
        _hooks(
            gateway,
            "POST",
            body={"hookUrl": _hook_url(), "event": "member.activated"},
            headers=headers,
        ),
        _hooks(gateway, "GET", headers=headers),
        _hooks(gateway, "DELETE", f"/{subscription_id}", headers=headers),
    ]

    assert [response.status_code for response in responses] == [401, 401, 401]
    assert all(response.json()["error"] == "unauthorized" for response in responses)
    assert _subscription_ids(gateway) == before
    row = _subscription(gateway, subscription_id)
    assert row is not None
    assert row.deleted_at is None


ZAP_URL = "https://hooks.zapier.com/hooks/standard/1234567/abc/"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            {"hookUrl": ZAP_URL.replace("https", "http"), "event": "rsvp.approved"},
            "invalid_hook_url",
        ),
        (
            {"hookUrl": ZAP_URL.replace("https", "ftp"), "event": "rsvp.approved"},
            "invalid_hook_url",
        ),
        (
            {"hookUrl": ZAP_URL.replace("//", "//u:pw@"), "event": "rsvp.approved"},
            "invalid_hook_url",
        ),
        ({"event": "rsvp.approved"}, "invalid_hook_url"),
        ({"hookUrl": ZAP_URL, "event": "member.exploded"}, "unknown_event"),
        ({"hookUrl": ZAP_URL}, "unknown_event"),
    ],
    ids=["plain-http", "ftp", "credentials-in-url", "no-url", "unknown-event", "no-event"],
)
def test_subscribe_refuses_a_bad_hook_url_or_event(
    gateway: Gateway, body: dict[str, Any], error: str
) -> None:
    before = _subscription_ids(gateway)

    response = _hooks(gateway, "POST", body=body)

    assert response.status_code == 400
    assert response.json()["error"] == error
    assert _subscription_ids(gateway) == before


def test_subscribe_accepts_plain_http_to_localhost_for_tests(gateway: Gateway) -> None:
    response = _hooks(
        gateway,
        "POST",
        body={"hookUrl": "http://127.0.0.1:9/zap", "event": "member.payment_failed"},
    )

    assert response.status_code == 201, response.text
