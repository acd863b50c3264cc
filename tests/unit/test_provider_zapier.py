"""Zapier's event type and id extraction, and the REST-hook URL rule, as pure functions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.datastructures import Headers

from webhooks_gateway.providers import zapier
from webhooks_gateway.providers.base import Delivery, InboundEvent, PayloadError, body_hash
from webhooks_gateway.zapier_hooks import ZAPIER_TRIGGERS, valid_hook_url


def _event(payload: dict[str, Any]) -> InboundEvent:
    raw = json.dumps(payload).encode()
    (event,) = zapier.events(Delivery(raw=raw, headers=Headers({})), payload)
    return event


def test_event_falls_back_from_event_to_type_to_zap_payload() -> None:
    assert _event({"event": "a.b", "type": "c.d"}).event_type == "a.b"
    assert _event({"type": "c.d"}).event_type == "c.d"
    assert _event({"x": 1}).event_type == "zap.payload"


def test_id_falls_back_from_id_to_idempotency_key_to_body_hash() -> None:
    assert _event({"id": 42, "idempotency_key": "k"}).event_id == "42"
    assert _event({"idempotency_key": " k-1 "}).event_id == "k-1"
    payload = {"x": 1}
    assert _event(payload).event_id == body_hash(json.dumps(payload).encode())


@pytest.mark.parametrize(
    "payload",
    [{"id": True}, {"id": ""}, {"idempotency_key": "k" * 256}, {"event": 5}, {"type": " "}],
)
def test_unusable_id_or_type_is_a_payload_error(payload: dict[str, Any]) -> None:
    with pytest.raises(PayloadError):
        _event(payload)


@pytest.mark.parametrize(
    ("url", "valid"),
    [
        ("https://hooks.zapier.com/hooks/standard/1/abc/", True),
        ("http://127.0.0.1:8123/hook", True),
        ("http://localhost/hook", False),
        ("http://hooks.zapier.com/hooks/standard/1/abc/", False),
        ("https:///no-host", False),
        ("https://u:p@hooks.zapier.com/", False),
        ("https://hooks.zapier.com/a b", False),
        ("https://[::1", False),
        ("https://hooks.zapier.com/" + "a" * 2048, False),
    ],
)
def test_hook_urls_must_be_https_or_loopback_http(url: str, valid: bool) -> None:
    assert valid_hook_url(url) is valid


def test_every_trigger_is_documented() -> None:
    assert all(name.count(".") == 1 and text for name, text in ZAPIER_TRIGGERS.items())
