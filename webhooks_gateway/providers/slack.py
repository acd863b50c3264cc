"""Slack Events API: signature check, the url_verification handshake and event identity.

Scheme: https://api.slack.com/authentication/verifying-requests-from-slack — `X-Slack-Signature:
v0=<hex>` is HMAC-SHA256 over `"v0:{X-Slack-Request-Timestamp}:{raw body}"` keyed with the app's
signing secret. The comparison is slack_sdk's `SignatureVerifier.is_valid` (constant time), given a
clock that reads the injected `now`; each configured secret is tried in turn. The timestamp is
checked here first so an old or future one reads `stale`: the SDK's own window is a fixed 5 minutes
either way, so the window in force is the narrower of WEBHOOK_TOLERANCE_SECONDS and 5 minutes.

Envelopes (https://api.slack.com/apis/events-api):
- `url_verification` (https://api.slack.com/events/url_verification): answered inline, after the
  signature check, with JSON `{"challenge": ...}`; nothing is stored.
- `event_callback`: event id = the envelope's `event_id`, event type = `event.type`. Slack retries a
  delivery it had no 2xx for within 3 s (`X-Slack-Retry-Num`, `X-Slack-Retry-Reason`: http_timeout,
  ...) with the same `event_id`, so a retry is a duplicate.
- `app_rate_limited` (https://api.slack.com/events/app_rate_limited): no inner event and no
  `event_id`; the type is the outer `type` and the id is `app_rate_limited:{team_id}:{api_app_id}:
  {minute_rate_limited}` — Slack sends one per workspace and app for each rate-limited minute.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import SecretStr
from slack_sdk.signature import Clock, SignatureVerifier

from schemas.settings import Settings
from webhooks_gateway.providers.base import (
    Delivery,
    InboundEvent,
    PayloadError,
    Reply,
    SignatureError,
    check_timestamp,
    parse_json_object,
    require_header,
    single_event,
)

NAME = "slack"
SECRET_ENV = "SLACK_SIGNING_SECRET"
SIGNATURE_HEADER = "x-slack-signature"
TIMESTAMP_HEADER = "x-slack-request-timestamp"
STORED_HEADERS: tuple[str, ...] = (SIGNATURE_HEADER, TIMESTAMP_HEADER)
METHODS: tuple[str, ...] = ("POST",)
HANDLED_EVENT_TYPES = frozenset(
    {"team_join", "user_change", "app_mention", "member_joined_channel", "app_rate_limited"}
)
# slack_sdk's SignatureVerifier refuses timestamps more than 5 minutes away, either way.
SDK_TOLERANCE_SECONDS = 300

_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


class _FixedClock(Clock):
    """The SDK's clock, pinned to the gateway's `now`."""

    def __init__(self, now: datetime) -> None:
        self._now = now.timestamp()

    def now(self) -> float:
        return self._now


def secrets(settings: Settings) -> tuple[SecretStr, ...]:
    return settings.slack_signing_secret


def verify(
    delivery: Delivery,
    *,
    secrets: Sequence[SecretStr],
    now: datetime,
    tolerance_seconds: int,
) -> None:
    """Raise SignatureError unless one of `secrets` signed the body within the tolerance."""
    signature = require_header(delivery.headers, SIGNATURE_HEADER)
    timestamp = require_header(delivery.headers, TIMESTAMP_HEADER)
    if not timestamp.isdigit():
        raise SignatureError("malformed", "X-Slack-Request-Timestamp is not unix seconds")
    if not _SIGNATURE.fullmatch(signature):
        raise SignatureError("malformed", "X-Slack-Signature is not v0=<64 hex>")
    try:
        delivery.raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SignatureError("malformed", "body is not UTF-8") from exc
    check_timestamp(int(timestamp), now, min(tolerance_seconds, SDK_TOLERANCE_SECONDS))
    clock = _FixedClock(now)
    if not any(_signed_by(delivery.raw, timestamp, signature, s, clock) for s in secrets):
        raise SignatureError("mismatch", "X-Slack-Signature matches no configured secret")


def _signed_by(raw: bytes, timestamp: str, signature: str, secret: SecretStr, clock: Clock) -> bool:
    try:
        verifier = SignatureVerifier(secret.get_secret_value(), clock=clock)
    except ValueError:  # a blank configured secret can match nothing
        return False
    return verifier.is_valid(body=raw, timestamp=timestamp, signature=signature)


def parse(delivery: Delivery) -> dict[str, Any]:
    return parse_json_object(delivery.raw)


def handshake(delivery: Delivery, payload: dict[str, Any]) -> Reply | None:
    if payload.get("type") != "url_verification":
        return None
    challenge = payload.get("challenge")
    if not isinstance(challenge, str) or not challenge:
        raise PayloadError("url_verification carries no challenge")
    return Reply(status=200, body={"challenge": challenge})


def events(delivery: Delivery, payload: dict[str, Any]) -> list[InboundEvent]:
    envelope = payload.get("type")
    if envelope == "event_callback":
        return single_event(_event_id(payload), _inner_type(payload), delivery.raw)
    if envelope == "app_rate_limited":
        return single_event(_rate_limited_id(payload), "app_rate_limited", delivery.raw)
    raise PayloadError(f"not an Events API envelope Slack sends here: type={envelope!r}")


def _event_id(payload: dict[str, Any]) -> str:
    event_id = payload.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise PayloadError("Slack event_callback has no event_id")
    return event_id


def _inner_type(payload: dict[str, Any]) -> str:
    event = payload.get("event")
    event_type = event.get("type") if isinstance(event, dict) else None
    if not isinstance(event_type, str) or not event_type:
        raise PayloadError("Slack event_callback has no event.type")
    return event_type


def _rate_limited_id(payload: dict[str, Any]) -> str:
    team, app, minute = (payload.get(k) for k in ("team_id", "api_app_id", "minute_rate_limited"))
    if not (isinstance(team, str) and team and isinstance(app, str) and app):
        raise PayloadError("app_rate_limited has no team_id or api_app_id")
    if not isinstance(minute, int) or isinstance(minute, bool):
        raise PayloadError("app_rate_limited has no minute_rate_limited")
    return f"app_rate_limited:{team}:{app}:{minute}"
