"""Twilio over real HTTP: the signed URL and form, SID:status identity, and proxies' forwarded URLs."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from schemas.migrate import upgrade
from schemas.tables import WebhookEvent
from tests.conftest import make_settings
from tests.support.provider_secrets import current, rotated_out
from tests.support.sign_twilio import sign_twilio
from tests.webhooks_gateway.providers.conftest import Gateway
from webhooks_gateway.app import create_app

SECRET = "TWILIO_AUTH_TOKEN"
FIXTURES = Path(__file__).parents[2] / "fixtures" / "twilio"
FIXTURE_FILES = sorted(FIXTURES.glob("*.form"))
RECORDED_SID = re.compile(rb"\b(SM|CA)[0-9a-f]{32}\b")


def _fresh(fixture: str = "message.delivered") -> tuple[bytes, str]:
    """The recorded callback re-addressed to a SID of this test's own (tests share one inbox)."""
    body = (FIXTURES / f"{fixture}.form").read_bytes()
    match = RECORDED_SID.search(body)
    assert match is not None
    sid = match.group(1).decode() + secrets.token_hex(16)
    return body.replace(match.group(0), sid.encode()), sid


def _url(gateway: Gateway, query: str = "") -> str:
    return f"{gateway.url}/webhooks/twilio" + (f"?{query}" if query else "")


@pytest.mark.parametrize("fixture", FIXTURE_FILES, ids=lambda path: path.stem)
def test_every_recorded_callback_is_stored_once_under_sid_and_status(
    gateway: Gateway, fixture: Path
) -> None:
    body, sid = _fresh(fixture.stem)
    status = fixture.stem.split(".")[1]

    response = gateway.post("twilio", body, sign_twilio(_url(gateway), body, token=current(SECRET)))

    assert response.status_code == 200
    (row,) = gateway.rows("twilio", f"{sid}:{status}")
    assert response.json()["inbox_ids"] == [row.id]
    assert (row.event_type, row.status, row.body) == (fixture.stem, "enqueued", body)


def test_redelivery_is_a_duplicate(gateway: Gateway) -> None:
    body, sid = _fresh()
    headers = sign_twilio(_url(gateway), body, token=current(SECRET))
    gateway.post("twilio", body, headers)

    again = gateway.post("twilio", body, headers)

    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert len(gateway.rows("twilio", f"{sid}:delivered")) == 1


def test_later_status_of_the_same_message_is_a_new_event(gateway: Gateway) -> None:
    sent, sid = _fresh()
    sent = sent.replace(b"Status=delivered", b"Status=sent")
    delivered = sent.replace(b"Status=sent", b"Status=delivered")

    for body in (sent, delivered):
        headers = sign_twilio(_url(gateway), body, token=current(SECRET))
        assert gateway.post("twilio", body, headers).json()["status"] == "accepted"

    assert [row.event_type for row in gateway.rows("twilio", f"{sid}:sent")] == ["message.sent"]
    assert len(gateway.rows("twilio", f"{sid}:delivered")) == 1


def test_replay_with_a_fresh_unsigned_idempotency_token_is_still_a_duplicate(
    gateway: Gateway,
) -> None:
    body, sid = _fresh("message.received")
    signed = sign_twilio(_url(gateway), body, token=current(SECRET))

    first = gateway.post("twilio", body, {**signed, "I-Twilio-Idempotency-Token": "idem-1"})
    again = gateway.post("twilio", body, {**signed, "I-Twilio-Idempotency-Token": "idem-2"})

    assert (first.status_code, again.json()) == (200, {"status": "duplicate"})
    (row,) = gateway.rows("twilio", f"{sid}:received")
    assert (row.event_type, row.headers["i-twilio-idempotency-token"]) == (
        "message.received",
        "idem-1",
    )


def test_rotated_out_auth_token_is_still_accepted(gateway: Gateway) -> None:
    body, sid = _fresh()

    response = gateway.post(
        "twilio", body, sign_twilio(_url(gateway), body, token=rotated_out(SECRET))
    )

    assert response.status_code == 200
    assert len(gateway.rows("twilio", f"{sid}:delivered")) == 1


def test_sha256_signature_named_in_signature_settings_is_accepted(gateway: Gateway) -> None:
    body, sid = _fresh()
    headers = sign_twilio(_url(gateway), body, token=current(SECRET), algorithm="HMAC_SHA256")

    assert gateway.post("twilio", body, headers).status_code == 200
    assert len(gateway.rows("twilio", f"{sid}:delivered")) == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("tampered", "mismatch"), ("wrong-token", "mismatch"), ("missing-header", "missing_header")],
)
def test_unverifiable_delivery_is_rejected_and_nothing_stored(
    gateway: Gateway, fault: str, reason: str
) -> None:
    body, sid = _fresh()
    token = secrets.token_hex(16) if fault == "wrong-token" else current(SECRET)
    headers = sign_twilio(_url(gateway), body, token=token)
    if fault == "tampered":
        body = body.replace(b"From=%2B14155550100", b"From=%2B14155550199")
    if fault == "missing-header":
        headers.pop("X-Twilio-Signature")

    response = gateway.post("twilio", body, headers)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": reason}
    assert gateway.rows("twilio", f"{sid}:delivered") == []


def test_url_with_a_query_string_is_signed_with_its_query(gateway: Gateway) -> None:
    body, sid = _fresh()
    headers = sign_twilio(_url(gateway, "tenant=acme&region=eu"), body, token=current(SECRET))

    response = gateway.post("twilio", body, headers, params={"tenant": "acme", "region": "eu"})

    assert response.status_code == 200
    assert len(gateway.rows("twilio", f"{sid}:delivered")) == 1


@pytest.mark.parametrize("signed_for", ["https", "other-host", "without-query"])
def test_delivery_signed_for_another_url_is_rejected(gateway: Gateway, signed_for: str) -> None:
    body, sid = _fresh()
    url = {
        "https": _url(gateway).replace("http://", "https://"),
        "other-host": _url(gateway).replace("127.0.0.1", "hooks.example.org"),
        "without-query": _url(gateway),
    }[signed_for]
    headers = sign_twilio(url, body, token=current(SECRET))

    response = gateway.post("twilio", body, headers, params={"tenant": "acme"})

    assert response.json() == {"error": "invalid_signature", "reason": "mismatch"}
    assert gateway.rows("twilio", f"{sid}:delivered") == []


def test_wrong_method_is_405(gateway: Gateway) -> None:
    response = gateway.post("twilio", b"", method="GET")

    assert response.status_code == 405
    assert response.json()["allowed"] == ["POST"]


# --- behind a proxy: no PUBLIC_BASE_URL, the URL rebuilt from X-Forwarded-Proto/Host ---------------

PUBLIC_URL = "https://hooks.example.org/webhooks/twilio"
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hooks.example.org"}


class _Enqueued:
    def __init__(self) -> None:
        self.inbox_ids: list[int] = []

    async def __call__(self, inbox_id: int) -> bool:
        self.inbox_ids.append(inbox_id)
        return True


def _proxied_client(tmp_path: Path, *, trust: bool) -> Iterator[tuple[TestClient, str]]:
    database_url = f"sqlite:///{tmp_path / 'inbox.db'}"
    settings = make_settings(
        database_url=database_url,
        twilio_auth_token=(SecretStr(current(SECRET)),),
        trust_forwarded_headers=trust,
    )
    assert "public_base_url" not in settings.model_fields_set
    upgrade(settings)
    with TestClient(create_app(settings, enqueue=_Enqueued())) as client:
        yield client, database_url


@pytest.fixture
def behind_proxy(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    yield from _proxied_client(tmp_path, trust=True)


@pytest.fixture
def untrusting(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    yield from _proxied_client(tmp_path, trust=False)


def _stored_ids(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    with Session(engine) as session:
        ids = list(session.scalars(select(WebhookEvent.event_id)))
    engine.dispose()
    return ids


def test_url_rebuilt_from_trusted_forwarded_headers_verifies(
    behind_proxy: tuple[TestClient, str],
) -> None:
    client, database_url = behind_proxy
    body, sid = _fresh()
    headers = {**sign_twilio(PUBLIC_URL, body, token=current(SECRET)), **FORWARDED}

    response = client.post("/webhooks/twilio", content=body, headers=headers)

    assert response.status_code == 200
    assert _stored_ids(database_url) == [f"{sid}:delivered"]


def test_public_url_signature_fails_without_the_forwarded_headers(
    behind_proxy: tuple[TestClient, str],
) -> None:
    client, database_url = behind_proxy
    body, _ = _fresh()

    response = client.post(
        "/webhooks/twilio",
        content=body,
        headers=sign_twilio(PUBLIC_URL, body, token=current(SECRET)),
    )

    assert response.json() == {"error": "invalid_signature", "reason": "mismatch"}
    assert _stored_ids(database_url) == []


def test_forwarded_headers_are_ignored_unless_trusted(untrusting: tuple[TestClient, str]) -> None:
    client, database_url = untrusting
    body, _ = _fresh()
    headers = {**sign_twilio(PUBLIC_URL, body, token=current(SECRET)), **FORWARDED}

    response = client.post("/webhooks/twilio", content=body, headers=headers)

    assert response.json() == {"error": "invalid_signature", "reason": "mismatch"}
    assert _stored_ids(database_url) == []
