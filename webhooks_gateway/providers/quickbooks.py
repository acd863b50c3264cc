"""QuickBooks Online webhooks: the `intuit-signature` check and one event per entity change.

Scheme: https://developer.intuit.com/app/developer/qbo/docs/develop/webhooks — `intuit-signature` is the
base64 HMAC-SHA256 of the raw body keyed with the app's Verifier Token (UTF-8). Intuit ships no Python
verifier, so the comparison is ours (constant time, every configured token tried). The scheme has no
timestamp, so there is no replay window: a captured delivery can be replayed, and the inbox's unique
(provider, event id) is what keeps a replay from doing anything twice.

Two body shapes arrive, depending on the app's setting on the webhooks page:

- legacy: `{"eventNotifications": [{"realmId", "dataChangeEvent": {"entities": [{"name", "id",
  "operation", "lastUpdated", "deletedId"?}]}}]}`. It carries no event id, so each entity change becomes
  one event with id `realmId:name:id:operation:lastUpdated` and type `<name>.<operation>` lower-cased
  (`customer.create`, `invoice.update`); its body is the entity's JSON plus `realmId`.
- CloudEvents (mandatory from 2026; https://blogs.a.intuit.com/2025/11/12/upcoming-change-to-webhooks-payload-structure):
  a JSON array of `{"specversion": "1.0", "id", "source", "type": "qbo.<entity>.<verb>.v1", "time",
  "intuitentityid", "intuitaccountid" (the realm), "data"?}`. Each element is one event with its own
  `id` and its `type` as is (`qbo.customer.created.v1`); its body is that element's JSON, where the
  realm is `intuitaccountid`. Intuit's data-objects page
  (https://developer.intuit.com/app/developer/qbo/docs/develop/webhooks/data-objects) shows `data` and
  `datacontenttype` may be absent, so only `id` and `type` are required here.

Notifications are batched per realm and may arrive out of order; the change's `lastUpdated`/`time` is the
source of truth, and the worker fetches the entity itself (the notification names it only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
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
    require_header,
)

NAME = "quickbooks"
SECRET_ENV = "QUICKBOOKS_WEBHOOK_VERIFIER_TOKEN"
SIGNATURE_HEADER = "intuit-signature"
STORED_HEADERS: tuple[str, ...] = (SIGNATURE_HEADER,)
METHODS: tuple[str, ...] = ("POST",)
HANDLED_EVENT_TYPES = frozenset(
    {
        "customer.create",
        "invoice.update",
        "payment.create",
        "qbo.customer.created.v1",
    }
)
# A base64 SHA-256 digest is 44 characters; anything else cannot be Intuit's signature.
_SIGNATURE_LENGTH = 44


def secrets(settings: Settings) -> tuple[SecretStr, ...]:
    return settings.quickbooks_webhook_verifier_token


def _signature(raw: bytes, token: SecretStr) -> str:
    digest = hmac.new(token.get_secret_value().encode("utf-8"), raw, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(
    delivery: Delivery,
    *,
    secrets: Sequence[SecretStr],
    now: datetime,
    tolerance_seconds: int,
) -> None:
    """Raise SignatureError unless one of the verifier tokens signed the body (no timestamp to check)."""
    presented = require_header(delivery.headers, SIGNATURE_HEADER).strip()
    if len(presented) != _SIGNATURE_LENGTH:
        raise SignatureError("malformed", "intuit-signature is not a base64 SHA-256 digest")
    if not any(hmac_matches(_signature(delivery.raw, token), presented) for token in secrets):
        raise SignatureError("mismatch", "intuit-signature matches no configured verifier token")


def parse(delivery: Delivery) -> Any:
    """A legacy notification object, or a CloudEvents array (a lone CloudEvent object is accepted)."""
    try:
        payload = json.loads(delivery.raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"body is not JSON: {exc}") from exc
    if isinstance(payload, dict) and "specversion" in payload:
        return [payload]
    if isinstance(payload, dict) and "eventNotifications" in payload:
        return payload
    if isinstance(payload, list):
        return payload
    raise PayloadError("body is neither eventNotifications nor a CloudEvents array")


def handshake(delivery: Delivery, payload: Any) -> Reply | None:
    return None  # Intuit has none; "Send test events" in the portal posts ordinary notifications


def events(delivery: Delivery, payload: Any) -> list[InboundEvent]:
    found = _cloud_events(payload) if isinstance(payload, list) else _legacy_events(payload)
    if not found:
        raise PayloadError("QuickBooks notification carries no entity change")
    return found


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _compact(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _legacy_events(payload: dict[str, Any]) -> list[InboundEvent]:
    notifications = payload.get("eventNotifications")
    if not isinstance(notifications, list):
        raise PayloadError("eventNotifications is not a list")
    found: list[InboundEvent] = []
    for notification in notifications:
        if not isinstance(notification, dict) or _text(notification.get("realmId")) is None:
            raise PayloadError("an eventNotification has no realmId")
        realm_id = notification["realmId"]
        change = notification.get("dataChangeEvent")
        entities = change.get("entities") if isinstance(change, dict) else None
        if not isinstance(entities, list):
            raise PayloadError("dataChangeEvent.entities is not a list")
        for entity in entities:
            found.append(_legacy_event(realm_id, entity))
    return found


def _legacy_event(realm_id: str, entity: Any) -> InboundEvent:
    if not isinstance(entity, dict):
        raise PayloadError("an entity change is not an object")
    name, entity_id = _text(entity.get("name")), _text(entity.get("id"))
    operation, last_updated = _text(entity.get("operation")), _text(entity.get("lastUpdated"))
    if name is None or entity_id is None or operation is None or last_updated is None:
        raise PayloadError("an entity change lacks name, id, operation or lastUpdated")
    return InboundEvent(
        event_id=f"{realm_id}:{name}:{entity_id}:{operation}:{last_updated}",
        event_type=f"{name}.{operation}".lower(),
        body=_compact({"realmId": realm_id, **entity}),
    )


def _cloud_events(payload: list[Any]) -> list[InboundEvent]:
    found: list[InboundEvent] = []
    for event in payload:
        if not isinstance(event, dict):
            raise PayloadError("a CloudEvent is not an object")
        event_id, event_type = _text(event.get("id")), _text(event.get("type"))
        if event_id is None or event_type is None:
            raise PayloadError("a CloudEvent has no id or type")
        found.append(InboundEvent(event_id=event_id, event_type=event_type, body=_compact(event)))
    return found
