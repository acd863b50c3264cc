"""Daily.co webhooks: signature check, event identity and the endpoint-verification request.

Docs: https://docs.daily.co/reference/rest-api/webhooks and .../webhooks/create — the `hmac` secret a
webhook is created with (returned by Daily, or supplied by you) is BASE-64 encoded; events carry
`version`, `type`, `id` (unique per event), `payload` and `event_ts` (.../webhooks/events/*).

Signature: the part of Daily's page that spells out the signed string could not be retrieved (only
truncated copies are stored), so the scheme is taken from the brief and checked against community code:
`X-Webhook-Signature` = base64(HMAC-SHA256(key = base64-decoded secret, "{X-Webhook-Timestamp}.{raw
body}")), as in a Next.js receiver that verifies real Daily deliveries (`createHmac("sha256",
Buffer.from(secret, "base64")).update(`${timestamp}.${rawBody}`).digest("base64")`). Other community
receivers disagree (no "." separator and a UTF-8 key; or the body alone) — still UNCONFIRMED: check it
against one real delivery. The timestamp is read as unix seconds (also unconfirmed); a 13-digit value
is taken as milliseconds so that a millisecond clock would not make every delivery "stale".

Handshake: before creating a webhook Daily POSTs a test body to the URL and creates it only if the
answer is 200 "relatively quickly". The brief gives the body as `{"test": "test"}` (community code also
handles `{"test": true}`), so any JSON object whose only key is `test` is taken as that probe. Daily
provisions the `hmac` secret in the same call, so the probe may arrive unsigned: an unsigned probe is
answered 200 and nothing is stored; a probe that does carry signature headers must verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
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
    check_timestamp,
    hmac_matches,
    parse_json_object,
    require_header,
    single_event,
)

NAME = "daily"
SECRET_ENV = "DAILY_WEBHOOK_SECRET"
SIGNATURE_HEADER = "x-webhook-signature"
TIMESTAMP_HEADER = "x-webhook-timestamp"
STORED_HEADERS: tuple[str, ...] = (SIGNATURE_HEADER, TIMESTAMP_HEADER)
METHODS: tuple[str, ...] = ("POST",)
HANDLED_EVENT_TYPES = frozenset(
    {
        "meeting.started",
        "meeting.ended",
        "participant.joined",
        "participant.left",
        "recording.ready-to-download",
    }
)
# Unix seconds (up to 12 digits) or milliseconds (13); longer values are refused as malformed.
_TIMESTAMP = re.compile(r"[0-9]{1,13}")
_MILLISECONDS = 10**12


def secrets(settings: Settings) -> tuple[SecretStr, ...]:
    return settings.daily_webhook_secret


def verify(
    delivery: Delivery,
    *,
    secrets: Sequence[SecretStr],
    now: datetime,
    tolerance_seconds: int,
) -> None:
    """Raise SignatureError unless one of `secrets` signed the body within the tolerance.

    The one unsigned request let through is Daily's endpoint-verification probe, which carries no
    data and is answered without storing anything (see `handshake`).
    """
    headers = delivery.headers
    unsigned = not headers.get(SIGNATURE_HEADER) and not headers.get(TIMESTAMP_HEADER)
    if unsigned and _is_probe(delivery.raw):
        return
    signature = require_header(headers, SIGNATURE_HEADER)
    timestamp = require_header(headers, TIMESTAMP_HEADER)
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError("malformed", "X-Webhook-Timestamp is not a unix time")
    signed = timestamp.encode() + b"." + delivery.raw
    if not any(hmac_matches(_signature(key, signed), signature) for key in _keys(secrets)):
        raise SignatureError("mismatch", "X-Webhook-Signature matches no configured secret")
    signed_at = int(timestamp)
    check_timestamp(
        signed_at // 1000 if signed_at >= _MILLISECONDS else signed_at, now, tolerance_seconds
    )


def _keys(secrets: Sequence[SecretStr]) -> list[bytes]:
    """The HMAC keys: each secret base64-decoded, as Daily issues it (undecodable ones skipped)."""
    keys: list[bytes] = []
    for secret in secrets:
        try:
            keys.append(base64.b64decode(secret.get_secret_value(), validate=True))
        except (binascii.Error, ValueError):
            continue
    return keys


def _signature(key: bytes, signed: bytes) -> str:
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _is_probe(raw: bytes) -> bool:
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return False
    return _is_probe_payload(payload)


def _is_probe_payload(payload: Any) -> bool:
    return isinstance(payload, dict) and set(payload) == {"test"}


def parse(delivery: Delivery) -> dict[str, Any]:
    return parse_json_object(delivery.raw)


def handshake(delivery: Delivery, payload: dict[str, Any]) -> Reply | None:
    """Daily's endpoint-verification probe: 200 so the webhook gets created; nothing stored."""
    if _is_probe_payload(payload):
        return Reply(status=200, body={"status": "ok"})
    return None


def events(delivery: Delivery, payload: dict[str, Any]) -> list[InboundEvent]:
    event_id, event_type = payload.get("id"), payload.get("type")
    if not isinstance(event_id, str) or not event_id:
        raise PayloadError("Daily event has no id")
    if not isinstance(event_type, str) or not event_type:
        raise PayloadError("Daily event has no type")
    return single_event(event_id, event_type, delivery.raw)
