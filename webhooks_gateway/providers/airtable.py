"""Airtable webhooks: the `X-Airtable-Content-MAC` check and the notification ping as one event.

Scheme: https://airtable.com/developers/web/api/webhooks-overview#webhook-notification-delivery —
`X-Airtable-Content-MAC: hmac-sha256=<hex>`, HMAC-SHA256 over the raw body keyed with the webhook's
`macSecretBase64` after base64-decoding it (AIRTABLE_WEBHOOK_MAC_SECRET holds the base64 text, as
create-webhook returns it; one value per webhook, comma-separated). pyairtable's
`WebhookNotification.from_request` does the same check but compares with `!=` and encodes the body as
ASCII, so the comparison here is ours (constant time, every configured secret tried).

The ping has no timestamp in any header, so there is no replay window; it carries no change either,
only `{"base": {"id"}, "webhook": {"id"}, "timestamp"}`. It is stored as one `airtable.ping` event with
id `<webhookId>:<timestamp>` (a redelivered ping de-duplicates), and the worker task it dispatches to
(tasks.sync.fetch_airtable_payloads) lists the webhook's payloads from the stored cursor. Airtable asks
for a 200/204 within a short time; its retry schedule and timeout are not published (unconfirmed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
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
    SignatureError,
    hmac_matches,
    parse_json_object,
    require_header,
    single_event,
)

NAME = "airtable"
SECRET_ENV = "AIRTABLE_WEBHOOK_MAC_SECRET"
SIGNATURE_HEADER = "x-airtable-content-mac"
SIGNATURE_PREFIX = "hmac-sha256="
STORED_HEADERS: tuple[str, ...] = (SIGNATURE_HEADER,)
METHODS: tuple[str, ...] = ("POST",)
PING = "airtable.ping"
HANDLED_EVENT_TYPES = frozenset({PING})


def secrets(settings: Settings) -> tuple[SecretStr, ...]:
    return settings.airtable_webhook_mac_secret


def _key(secret: SecretStr) -> bytes | None:
    """The MAC key behind a `macSecretBase64`; None for a value that is not base64 (it matches nothing)."""
    try:
        return base64.b64decode(secret.get_secret_value(), validate=True)
    except (binascii.Error, ValueError):
        return None


def verify(
    delivery: Delivery,
    *,
    secrets: Sequence[SecretStr],
    now: datetime,
    tolerance_seconds: int,
) -> None:
    """Raise SignatureError unless one of the MAC secrets signed the body (no timestamp to check)."""
    header = require_header(delivery.headers, SIGNATURE_HEADER).strip()
    if not header.startswith(SIGNATURE_PREFIX):
        raise SignatureError("malformed", "X-Airtable-Content-MAC is not hmac-sha256=<hex>")
    presented = header.removeprefix(SIGNATURE_PREFIX).lower()
    keys = [key for key in map(_key, secrets) if key is not None]
    expected = (hmac.new(key, delivery.raw, hashlib.sha256).hexdigest() for key in keys)
    if not any(hmac_matches(mac, presented) for mac in expected):
        raise SignatureError("mismatch", "X-Airtable-Content-MAC matches no configured secret")


def parse(delivery: Delivery) -> dict[str, Any]:
    return parse_json_object(delivery.raw)


def handshake(delivery: Delivery, payload: Any) -> Reply | None:
    return None  # the ping is stored (it starts the payload fetch), not answered inline


def _nested_id(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    nested = value.get("id") if isinstance(value, dict) else None
    if not isinstance(nested, str) or not nested:
        raise PayloadError(f"Airtable notification has no {key}.id")
    return nested


def events(delivery: Delivery, payload: dict[str, Any]) -> list[InboundEvent]:
    _nested_id(payload, "base")
    webhook_id = _nested_id(payload, "webhook")
    timestamp = payload.get("timestamp")
    if not isinstance(timestamp, str) or not timestamp:
        raise PayloadError("Airtable notification has no timestamp")
    return single_event(f"{webhook_id}:{timestamp}", PING, delivery.raw)
