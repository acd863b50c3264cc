"""Cal.com webhooks: signature check, the "Ping test" handshake and event identity.

Scheme: https://cal.com/docs/developing/guides/automation/webhooks ("Verifying the authenticity of
the received payload") — `X-Cal-Signature-256` is the lowercase hex HMAC-SHA256 of the raw body
keyed with the webhook's secret, no prefix and no timestamp, so there is no replay window to check.
No official Python verifier exists; this is hashlib/hmac with a constant-time comparison, each
configured secret in turn.

Findings, from Cal.com's source (github.com/calcom/cal.com):
- `packages/features/webhooks/lib/sendPayload.ts` (`createWebhookSignature`): the header is
  `createHmac("sha256", secret).update(body).digest("hex")`, or the literal `no-secret-provided`
  when the webhook has no secret. We always have one, so that value is refused as `mismatch` (the
  two sides do not share a secret). No `sha256=` prefix exists in the code, so none is accepted.
- Default body: `{"triggerEvent", "createdAt", "payload"}`. A webhook with a custom payload
  template sends the rendered template instead (form-encoded when it is not JSON): not supported
  here, it is refused as a malformed body.
- "Ping test" (`packages/trpc/server/routers/viewer/webhook/testTrigger.handler.ts`, button in
  `WebhookTestDisclosure`): a POST through the same `sendPayload`, `triggerEvent: "PING"`, a
  `payload` of dummy data (`title: "Test trigger event"`, attendee `jdoe@example.com`) and no
  booking uid, signed with the secret typed in the form (older releases sent no secret, so the
  header read `no-secret-provided` and is refused). A signed PING is answered 200 inline and
  stored nowhere; an unsigned one is never accepted.
- MEETING_STARTED / MEETING_ENDED: current releases wrap the booking in `payload` with a
  `createdAt` (`factory/versioned/v2021-10-20/MeetingPayloadBuilder.ts`); the older scheduled-
  trigger path posted `{"triggerEvent", ...booking}` flat, with neither (`lib/scheduleTrigger.ts`).
  The booking uid is read from either place.
- Retries and timeouts remain unconfirmed (the cron for scheduled triggers retries a failed fetch).

Event id: `{triggerEvent}:{booking uid}:{createdAt}` when both uid and createdAt are present (the
task-based sender takes `createdAt` from its task, so a retried task repeats it), else
`body_hash` of the verified body, so a redelivery of the same bytes is still a duplicate.
"""

from __future__ import annotations

import hashlib
import hmac
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
    body_hash,
    hmac_matches,
    parse_json_object,
    require_header,
    single_event,
)

NAME = "calcom"
SECRET_ENV = "CALCOM_WEBHOOK_SECRET"
SIGNATURE_HEADER = "x-cal-signature-256"
# Not needed to verify, but it names the payload shape the body was built with (e.g. 2021-10-20).
VERSION_HEADER = "x-cal-webhook-version"
STORED_HEADERS: tuple[str, ...] = (SIGNATURE_HEADER, VERSION_HEADER)
METHODS: tuple[str, ...] = ("POST",)
HANDLED_EVENT_TYPES = frozenset(
    {"BOOKING_CREATED", "BOOKING_CANCELLED", "BOOKING_RESCHEDULED", "MEETING_ENDED"}
)
PING = "PING"
UNSIGNED = "no-secret-provided"

_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def secrets(settings: Settings) -> tuple[SecretStr, ...]:
    return settings.calcom_webhook_secret


def verify(
    delivery: Delivery,
    *,
    secrets: Sequence[SecretStr],
    now: datetime,
    tolerance_seconds: int,
) -> None:
    """Raise SignatureError unless one of `secrets` signed the body (Cal.com signs no timestamp)."""
    presented = require_header(delivery.headers, SIGNATURE_HEADER).strip()
    if presented == UNSIGNED:
        raise SignatureError("mismatch", "Cal.com sent no-secret-provided: set the webhook secret")
    if not _HEX_SHA256.fullmatch(presented):
        raise SignatureError("malformed", "X-Cal-Signature-256 is not 64 hex characters")
    if not any(hmac_matches(_signature(delivery.raw, s), presented.lower()) for s in secrets):
        raise SignatureError("mismatch", "X-Cal-Signature-256 matches no configured secret")


def _signature(raw: bytes, secret: SecretStr) -> str:
    return hmac.new(secret.get_secret_value().encode("utf-8"), raw, hashlib.sha256).hexdigest()


def parse(delivery: Delivery) -> dict[str, Any]:
    return parse_json_object(delivery.raw)


def handshake(delivery: Delivery, payload: dict[str, Any]) -> Reply | None:
    if payload.get("triggerEvent") != PING:
        return None
    return Reply(status=200, body={"status": "pong"})


def events(delivery: Delivery, payload: dict[str, Any]) -> list[InboundEvent]:
    trigger = payload.get("triggerEvent")
    if not isinstance(trigger, str) or not trigger:
        raise PayloadError("Cal.com delivery has no triggerEvent")
    uid, created_at = _booking_uid(payload), payload.get("createdAt")
    if uid and isinstance(created_at, str) and created_at:
        event_id = f"{trigger}:{uid}:{created_at}"
    else:
        event_id = body_hash(delivery.raw)
    return single_event(event_id, trigger, delivery.raw)


def _booking_uid(payload: dict[str, Any]) -> str | None:
    """`payload.uid` (the documented shape), else a flat body's `uid` (older MEETING_* triggers)."""
    inner = payload.get("payload")
    uid = inner.get("uid") if isinstance(inner, dict) else payload.get("uid")
    return uid if isinstance(uid, str) and uid else None
