"""Clerk webhooks (delivered by Svix): signature check and event identity.

Scheme: https://docs.svix.com/receiving/verifying-payloads/how-manual (Clerk sends through Svix:
https://clerk.com/docs/webhooks/overview) — headers `svix-id`, `svix-timestamp` (unix seconds) and
`svix-signature` (space-separated `v1,<base64>` entries, one per live secret while a secret rotates),
HMAC-SHA256 over `"{id}.{timestamp}.{raw body}"` keyed with the base64-decoded part of `whsec_...`.
White-labelled Svix senders use `webhook-id` / `webhook-timestamp` / `webhook-signature`; both sets
are read, `svix-*` first, as the svix SDK does.

The HMAC comparison is the svix SDK's (`Webhook.verify`, constant time, each configured secret in
turn). Before calling it we check the headers and the timestamp ourselves, so that a missing header
reads `missing_header` and an old or future timestamp `stale` against the injected clock. The SDK
also checks the timestamp against the wall clock with a fixed 5 minutes either way, so the window
in force is the narrower of WEBHOOK_TOLERANCE_SECONDS and 5 minutes, and a caller's `now` must be
close to the real time for a delivery to pass (a fixed clock can still push one out as stale).

Event id: the `svix-id` message id, the same on every retry of a message (Svix: "unique per message
and stable across resends"), covered by the signature. Event type: the body's `type`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import SecretStr
from svix.webhooks import Webhook, WebhookVerificationError

from schemas.settings import Settings
from webhooks_gateway.providers.base import (
    Delivery,
    InboundEvent,
    PayloadError,
    Reply,
    SignatureError,
    check_timestamp,
    parse_json_object,
    single_event,
)

NAME = "clerk"
SECRET_ENV = "CLERK_WEBHOOK_SIGNING_SECRET"
# Both header families are kept, so whichever one a delivery came with can be verified again.
STORED_HEADERS: tuple[str, ...] = (
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
)
METHODS: tuple[str, ...] = ("POST",)
HANDLED_EVENT_TYPES = frozenset({"user.created", "user.updated", "user.deleted", "session.created"})
# The svix SDK's own window (standardwebhooks: 5 minutes, past and future); ours can only narrow it.
SVIX_TOLERANCE_SECONDS = 300

_ENTRY = re.compile(r"v[0-9]+,[A-Za-z0-9+/=]+")


def secrets(settings: Settings) -> tuple[SecretStr, ...]:
    return settings.clerk_webhook_signing_secret


def _header(headers: Mapping[str, str], name: str) -> str:
    """`svix-<name>`, else `webhook-<name>`; SignatureError when neither is present."""
    value = headers.get(f"svix-{name}") or headers.get(f"webhook-{name}")
    if not value:
        raise SignatureError("missing_header", f"svix-{name}")
    return value


def message_id(headers: Mapping[str, str]) -> str:
    return _header(headers, "id")


def _check_signature_header(header: str) -> None:
    entries = header.split(" ")
    if not all(_ENTRY.fullmatch(entry) for entry in entries):
        raise SignatureError("malformed", "svix-signature entries must read v<n>,<base64>")
    v1 = [entry[3:] for entry in entries if entry.startswith("v1,")]
    if not v1:
        raise SignatureError("malformed", "svix-signature carries no v1 signature")
    for signature in v1:
        try:
            base64.b64decode(signature, validate=True)
        except binascii.Error as exc:
            raise SignatureError("malformed", "svix-signature v1 is not base64") from exc


def verify(
    delivery: Delivery,
    *,
    secrets: Sequence[SecretStr],
    now: datetime,
    tolerance_seconds: int,
) -> None:
    """Raise SignatureError unless one of `secrets` signed the body within the tolerance."""
    msg_id = message_id(delivery.headers)
    timestamp = _header(delivery.headers, "timestamp")
    signature = _header(delivery.headers, "signature")
    if not timestamp.isdigit():
        raise SignatureError("malformed", "svix-timestamp is not unix seconds")
    _check_signature_header(signature)
    try:
        delivery.raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SignatureError("malformed", "body is not UTF-8") from exc
    check_timestamp(int(timestamp), now, min(tolerance_seconds, SVIX_TOLERANCE_SECONDS))
    headers = {"svix-id": msg_id, "svix-timestamp": timestamp, "svix-signature": signature}
    if not any(_signed_by(delivery.raw, headers, secret) for secret in secrets):
        raise SignatureError("mismatch", "no v1 signature matches a configured secret")


def _signed_by(raw: bytes, headers: dict[str, str], secret: SecretStr) -> bool:
    try:
        webhook = Webhook(secret.get_secret_value())
    except (ValueError, TypeError, RuntimeError):
        # A configured value that is not `whsec_<base64>` can match nothing; the others may.
        return False
    try:
        webhook.verify(raw, headers)
    except WebhookVerificationError as exc:
        if "timestamp" in str(exc):
            # Our clock passed it but the wall clock (the SDK's) did not: still a stale delivery.
            raise SignatureError("stale", str(exc)) from exc
        return False
    except ValueError:  # headers were checked above; anything the SDK still cannot read fails
        return False
    return True


def parse(delivery: Delivery) -> dict[str, Any]:
    return parse_json_object(delivery.raw)


def handshake(delivery: Delivery, payload: Any) -> Reply | None:
    return None


def events(delivery: Delivery, payload: dict[str, Any]) -> list[InboundEvent]:
    try:
        event_id = message_id(delivery.headers)
    except SignatureError as exc:
        raise PayloadError("Clerk delivery has no svix-id") from exc
    event_type = payload.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise PayloadError("Clerk event has no type")
    return single_event(event_id, event_type, delivery.raw)
