"""Mailchimp audience webhooks: token check, the GET URL validation, and event identity.

Scheme: none. Mailchimp signs nothing (https://mailchimp.com/developer/marketing/guides/sync-audience-data-webhooks/):
the callback URL is all it lets you configure, so the URL carries our secret as `?token=...`
(`Authorization: Bearer <token>` is accepted too), compared in constant time with every configured
MAILCHIMP_WEBHOOK_SECRET. Mailchimp validates the URL with a GET when the webhook is saved: that GET
must carry the token as well and is answered 200 with nothing stored.

POST bodies are `application/x-www-form-urlencoded` with bracketed keys (`type`, `fired_at`,
`data[id]`, `data[email]`, `data[merges][FNAME]`, ...). Mailchimp sends no event id, so the id is the
composite `type:fired_at:list_id:member`, where member is `data[id]` (subscribe, unsubscribe,
profile, campaign), `data[new_id]` (upemail) or the lower-cased `data[email]` (cleaned); a body
without `fired_at` or any member field falls back to the hash of its bytes. `fired_at` has one-second
resolution: two changes of one member of the same type within a second share an id.
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
    parse_form,
    single_event,
)

NAME = "mailchimp"
SECRET_ENV = "MAILCHIMP_WEBHOOK_SECRET"
# The token rides in the URL or in Authorization; neither is kept, and nothing else is needed.
STORED_HEADERS: tuple[str, ...] = ()
METHODS: tuple[str, ...] = ("GET", "POST")
HANDLED_EVENT_TYPES = frozenset(
    {"subscribe", "unsubscribe", "profile", "upemail", "cleaned", "campaign"}
)
# An inbox event id is at most 255 characters.
MAX_EVENT_ID_LENGTH = 255


def secrets(settings: Settings) -> tuple[SecretStr, ...]:
    return settings.mailchimp_webhook_secret


def verify(
    delivery: Delivery,
    *,
    secrets: Sequence[SecretStr],
    now: datetime,
    tolerance_seconds: int,
) -> None:
    """Raise SignatureError unless the request carries a configured token (no timestamp to check)."""
    check_token(delivery, secrets)


def parse(delivery: Delivery) -> dict[str, str]:
    return parse_form(delivery.raw)


def handshake(delivery: Delivery, payload: Any) -> Reply | None:
    """Mailchimp's URL validation: a GET, answered 200 and stored nowhere."""
    if delivery.method == "GET":
        return Reply(status=200)
    return None


def events(delivery: Delivery, payload: dict[str, str]) -> list[InboundEvent]:
    event_type = payload.get("type", "")
    if not event_type:
        raise PayloadError("Mailchimp webhook has no type")
    return single_event(_event_id(event_type, payload, delivery.raw), event_type, delivery.raw)


def _event_id(event_type: str, payload: dict[str, str], raw: bytes) -> str:
    fired_at = payload.get("fired_at", "")
    member = (
        payload.get("data[id]")
        or payload.get("data[new_id]")
        or payload.get("data[email]", "").strip().lower()
        or payload.get("data[new_email]", "").strip().lower()
    )
    if not fired_at or not member:
        return body_hash(raw)
    event_id = ":".join((event_type, fired_at, payload.get("data[list_id]", ""), member))
    return event_id if len(event_id) <= MAX_EVENT_ID_LENGTH else body_hash(raw)
