"""Airtable over real HTTP: the MAC-signed notification ping is stored once per webhook + timestamp."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.provider_secrets import current, rotated_out
from tests.support.sign_airtable import sign_airtable
from tests.webhooks_gateway.providers.conftest import Gateway

SECRET = "AIRTABLE_WEBHOOK_MAC_SECRET"
FIXTURE_DIR = Path(__file__).parents[2] / "fixtures" / "airtable"
FIXTURES = sorted(FIXTURE_DIR.glob("*.json"))


def _airtable_id(prefix: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(14))


def _ping(fixture: Path = FIXTURE_DIR / "airtable.ping.json") -> dict[str, Any]:
    """The recorded ping with a webhook id of this test's own and a fresh timestamp."""
    ping: dict[str, Any] = json.loads(fixture.read_bytes())
    ping["webhook"]["id"] = _airtable_id("ach")
    ping["timestamp"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return ping


def _event_id(ping: dict[str, Any]) -> str:
    return f"{ping['webhook']['id']}:{ping['timestamp']}"


def _signed(ping: dict[str, Any], secret: str = "") -> tuple[bytes, dict[str, str]]:
    body = json.dumps(ping).encode()
    return body, sign_airtable(body, mac_secret_base64=secret or current(SECRET))


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda path: path.stem)
def test_valid_ping_is_stored_once_and_enqueued(gateway: Gateway, fixture: Path) -> None:
    ping = _ping(fixture)
    body, headers = _signed(ping)

    response = gateway.post("airtable", body, headers)

    assert response.status_code == 200, response.text
    (row,) = gateway.rows("airtable", _event_id(ping))
    assert response.json()["inbox_ids"] == [row.id]
    assert (row.event_type, row.status, row.body) == ("airtable.ping", "enqueued", body)
    assert row.headers == {"x-airtable-content-mac": headers["X-Airtable-Content-MAC"]}


def test_redelivered_ping_is_a_duplicate(gateway: Gateway) -> None:
    ping = _ping()
    body, headers = _signed(ping)
    gateway.post("airtable", body, headers)

    again = gateway.post("airtable", body, headers)

    assert again.json() == {"status": "duplicate"}
    assert len(gateway.rows("airtable", _event_id(ping))) == 1


def test_a_later_ping_of_the_same_webhook_is_a_new_event(gateway: Gateway) -> None:
    ping = _ping()
    later = {**ping, "timestamp": "2099-01-01T00:00:00.000Z"}

    assert gateway.post("airtable", *_signed(ping)).status_code == 200
    assert gateway.post("airtable", *_signed(later)).status_code == 200
    assert len(gateway.rows("airtable", _event_id(ping))) == 1
    assert len(gateway.rows("airtable", _event_id(later))) == 1


def test_rotated_out_secret_is_still_accepted(gateway: Gateway) -> None:
    ping = _ping()

    assert gateway.post("airtable", *_signed(ping, secret=rotated_out(SECRET))).status_code == 200
    assert len(gateway.rows("airtable", _event_id(ping))) == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("tampered", "mismatch"),
        ("wrong-secret", "mismatch"),
        ("missing-header", "missing_header"),
        ("no-hmac-prefix", "malformed"),
    ],
)
def test_unverifiable_ping_is_rejected_and_nothing_stored(
    gateway: Gateway, fault: str, reason: str
) -> None:
    ping = _ping()
    wrong = base64.b64encode(secrets.token_bytes(32)).decode()
    body, headers = _signed(ping, secret=wrong if fault == "wrong-secret" else "")
    if fault == "tampered":
        body = body.replace(ping["base"]["id"].encode(), _airtable_id("app").encode())
    if fault == "missing-header":
        headers.pop("X-Airtable-Content-MAC")
    if fault == "no-hmac-prefix":
        headers["X-Airtable-Content-MAC"] = headers["X-Airtable-Content-MAC"].split("=", 1)[1]

    response = gateway.post("airtable", body, headers)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": reason}
    assert gateway.rows("airtable", _event_id(ping)) == []


def test_ping_has_no_timestamp_to_be_stale(gateway: Gateway) -> None:
    """Airtable signs no time; an old ping timestamp is still a valid (and distinct) notification."""
    ping = {**_ping(), "timestamp": "2020-01-01T00:00:00.000Z"}

    assert gateway.post("airtable", *_signed(ping)).status_code == 200
    assert len(gateway.rows("airtable", _event_id(ping))) == 1


@pytest.mark.parametrize("missing", ["base", "webhook", "timestamp"])
def test_signed_ping_without_its_ids_is_refused_as_malformed(
    gateway: Gateway, missing: str
) -> None:
    ping = _ping()
    del ping[missing]
    before = gateway.count("airtable")

    response = gateway.post("airtable", *_signed(ping))

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_body"
    assert gateway.count("airtable") == before


def test_wrong_method_is_refused(gateway: Gateway) -> None:
    response = gateway.post("airtable", b"", method="GET")

    assert response.status_code == 405
    assert response.json()["allowed"] == ["POST"]
