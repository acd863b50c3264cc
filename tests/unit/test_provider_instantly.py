"""Instantly's custom-header token and composite ids as pure functions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

from webhooks_gateway.providers import instantly
from webhooks_gateway.providers.base import Delivery, SignatureError

TOKEN = "unit-instantly-token-4Kp8Wz"
BASE = {
    "timestamp": "2025-11-18T10:47:55.902Z",
    "event_type": "email_opened",
    "workspace": "w",
    "campaign_id": "c",
    "campaign_name": "n",
}


def _event_id(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload).encode()
    (event,) = instantly.events(Delivery(raw=raw, headers=Headers({})), payload)
    return event.event_id


def test_token_is_read_from_the_documented_custom_header() -> None:
    def verify(headers: dict[str, str]) -> None:
        instantly.verify(
            Delivery(raw=b"{}", headers=Headers(headers)),
            secrets=[SecretStr("other"), SecretStr(TOKEN)],
            now=datetime.now(UTC),
            tolerance_seconds=300,
        )

    verify({"X-Instantly-Token": TOKEN})
    with pytest.raises(SignatureError, match="mismatch"):
        verify({"X-Instantly-Token": "nope"})


def test_lead_falls_back_to_the_sending_account_and_message_to_the_step() -> None:
    payload = {**BASE, "event_type": "account_error", "email_account": "Box@Example.org", "step": 3}
    assert _event_id(payload) == "account_error:c:box@example.org:3:2025-11-18T10:47:55.902Z"


def test_too_long_composite_is_hashed_deterministically() -> None:
    payload = {**BASE, "lead_email": "x" * 300 + "@example.com"}
    first = _event_id(payload)
    assert first.startswith("email_opened:sha256:")
    assert len(first) <= 255
    assert _event_id(dict(reversed(list(payload.items())))) == first


def test_no_timestamp_falls_back_to_the_body_hash() -> None:
    payload = {key: value for key, value in BASE.items() if key != "timestamp"}
    assert _event_id(payload).startswith("sha256:")
