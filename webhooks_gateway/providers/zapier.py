"""Inbound "Webhooks by Zapier" requests: shared-secret check and event identity.

Scheme: none. Zap actions (POST, or Custom Request) are not signed
(https://help.zapier.com/hc/en-us/articles/8496326446989-Send-webhooks-in-Zaps); the receiver checks a
secret it configured itself. Put `X-Hookfleet-Secret: <ZAPIER_WEBHOOK_SECRET>` in the action's
Headers (or `Authorization: Bearer <secret>`, or `?token=` on the URL); it is compared in constant
time with every configured secret. Set the action's Payload Type to `json`: the body must be one
JSON object.

Zapier adds no event id or type, so the Zap supplies them: the event type is the body's `event` (or
`type`), else `zap.payload`; the event id is the body's `id` (or `idempotency_key`) when the Zap maps
one, else the hash of the body, so a Zap step that is replayed with the same data is a duplicate.

The REST-hook side (Zapier subscribing to our triggers) lives in webhooks_gateway/zapier_hooks.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from schemas.settings import Settings
from webhooks_gateway.providers.base import (
    Delivery,
    InboundEvent,
    PayloadError,
    Reply,
    body_hash,
    check_token,
    parse_json_object,
    single_event,
)

NAME = "zapier"
SECRET_ENV = "ZAPIER_WEBHOOK_SECRET"
SECRET_HEADER = "x-hookfleet-secret"
STORED_HEADERS: tuple[str, ...] = ()
METHODS: tuple[str, ...] = ("POST",)
DEFAULT_EVENT_TYPE = "zap.payload"
HANDLED_EVENT_TYPES = frozenset({DEFAULT_EVENT_TYPE, "member.upsert", "lead.captured"})
MAX_EVENT_ID_LENGTH = 255
MAX_EVENT_TYPE_LENGTH = 128


def secrets(settings: Settings) -> tuple[SecretStr, ...]:
    return settings.zapier_webhook_secret


def verify(
    delivery: Delivery,
    *,
    secrets: Sequence[SecretStr],
    now: datetime,
    tolerance_seconds: int,
) -> None:
    """Raise SignatureError unless the request carries a configured secret (no timestamp to check)."""
    check_token(delivery, secrets, header=SECRET_HEADER)


def parse(delivery: Delivery) -> dict[str, Any]:
    try:
        return parse_json_object(delivery.raw)
    except PayloadError as exc:
        raise PayloadError(f"{exc} (set the Zap action's Payload Type to json)") from exc


def handshake(delivery: Delivery, payload: Any) -> Reply | None:
    return None


def events(delivery: Delivery, payload: dict[str, Any]) -> list[InboundEvent]:
    return single_event(_event_id(payload, delivery.raw), _event_type(payload), delivery.raw)


def _event_type(payload: dict[str, Any]) -> str:
    for key in ("event", "type"):
        value = payload.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise PayloadError(f"Zapier body's {key!r} must be a non-empty string")
        if len(value.strip()) > MAX_EVENT_TYPE_LENGTH:
            raise PayloadError(f"Zapier body's {key!r} is longer than {MAX_EVENT_TYPE_LENGTH}")
        return value.strip()
    return DEFAULT_EVENT_TYPE


def _event_id(payload: dict[str, Any], raw: bytes) -> str:
    for key in ("id", "idempotency_key"):
        value = payload.get(key)
        if value is None:
            continue
        # A key the Zap maps on purpose must be usable; silently hashing instead would hide a bug.
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise PayloadError(f"Zapier body's {key!r} must be a string or an integer")
        text = str(value).strip()
        if not text or len(text) > MAX_EVENT_ID_LENGTH:
            raise PayloadError(f"Zapier body's {key!r} must have 1 to {MAX_EVENT_ID_LENGTH} chars")
        return text
    return body_hash(raw)
