"""Zapier REST hooks: the subscribe, unsubscribe and list endpoints Zapier calls for our triggers.

How REST hooks work (https://docs.zapier.com/platform/build/hook-trigger): when a user turns a Zap on,
Zapier POSTs the Zap's unique target URL and the trigger's event to our subscribe endpoint and keeps
the `id` we answer; when the Zap is turned off it calls unsubscribe with that id. Our workers then
POST each event of that kind to the stored URL (a 410 from Zapier means the Zap is gone). Zapier
offers no challenge for subscriptions, so these routes are authenticated like the inbound Zapier
route: the ZAPIER_WEBHOOK_SECRET as `X-Hookfleet-Secret`, `Authorization: Bearer` or `?token=`
(401 without it; 404 while no secret is set).

    POST   /webhooks/zapier/subscribe  {"hookUrl": "https://hooks.zapier.com/...", "event": "..."}
           -> 201 {"id": N}    (the legacy v2 key `target_url` is read too)
    GET    /webhooks/zapier/subscribe[?event=...]
           -> 200 [{"id", "event", "hookUrl", "created_at"}, ...]
    DELETE /webhooks/zapier/subscribe/{id}
           -> 200 {"id", "deleted_at"}; unknown id -> 404

Subscriptions are rows of `zapier_subscriptions`; unsubscribing sets `deleted_at` (the row stays),
and each subscribe and unsubscribe writes an audit row with the actor "zapier". Hook URLs are
capability URLs: they are never logged, and the audit keeps only their host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from schemas.settings import Settings
from schemas.tables import AuditEntry, ZapierSubscription, utcnow
from webhooks_gateway.providers import zapier
from webhooks_gateway.providers.base import (
    Delivery,
    PayloadError,
    SignatureError,
    check_token,
    parse_json_object,
)
from workers.logging import get_logger

log = get_logger(__name__)

# The triggers a Zap can subscribe to, and when each fires. Our workers deliver these; a subscribe
# call naming any other event is refused, so a typo in the Zapier app fails when the Zap is turned on.
ZAPIER_TRIGGERS: dict[str, str] = {
    "member.activated": "A membership became active (checkout completed, subscription resumed).",
    "member.deactivated": "A membership ended (canceled, or its period ran out after cancellation).",
    "member.payment_failed": "A membership invoice failed to be paid.",
    "rsvp.approved": "The Luma approval run approved a member's registration.",
    "rsvp.declined": "The Luma approval run declined a registration.",
}
ACTOR = "zapier"
ENTITY_TYPE = "zapier_subscription"
MAX_HOOK_URL_LENGTH = 2048
SUBSCRIBE_PATH = "/webhooks/zapier/subscribe"


def zapier_routes(settings: Settings, engine: AsyncEngine) -> list[BaseRoute]:
    """The REST-hook routes; mount them before `/webhooks/{provider}`."""
    hooks = ZapierHooks(settings, engine)
    return [
        Route(SUBSCRIBE_PATH, hooks.subscribe, methods=["POST"]),
        Route(SUBSCRIBE_PATH, hooks.list_active, methods=["GET"]),
        Route(f"{SUBSCRIBE_PATH}/{{subscription_id:int}}", hooks.unsubscribe, methods=["DELETE"]),
    ]


def valid_hook_url(url: str) -> bool:
    """https to a named host; plain http only to 127.0.0.1 (tests and local tools)."""
    if len(url) > MAX_HOOK_URL_LENGTH or any(char.isspace() for char in url):
        return False
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:
        return False
    if parts.username is not None or parts.password is not None:
        return False
    if parts.scheme == "https":
        return bool(hostname)
    return parts.scheme == "http" and hostname == "127.0.0.1"


@dataclass(frozen=True)
class ZapierHooks:
    settings: Settings
    engine: AsyncEngine

    async def subscribe(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        raw = await request.body()
        if len(raw) > self.settings.max_body_bytes:
            return _error(413, "body_too_large", limit=self.settings.max_body_bytes)
        try:
            body = parse_json_object(raw)
        except PayloadError as exc:
            return _error(400, "malformed_body", detail=str(exc))
        hook_url = body.get("hookUrl", body.get("target_url"))
        event = body.get("event")
        if not isinstance(hook_url, str) or not valid_hook_url(hook_url):
            return _error(
                400, "invalid_hook_url", detail="hookUrl must be an https URL (or http://127.0.0.1)"
            )
        if not isinstance(event, str) or event not in ZAPIER_TRIGGERS:
            return _error(400, "unknown_event", allowed=sorted(ZAPIER_TRIGGERS))
        try:
            async with self.engine.begin() as connection:
                subscription_id = (
                    await connection.execute(
                        insert(ZapierSubscription)
                        .values(event=event, hook_url=hook_url, created_at=utcnow())
                        .returning(ZapierSubscription.id)
                    )
                ).scalar_one()
                await _audit(
                    connection,
                    "zapier.subscribed",
                    subscription_id,
                    event=event,
                    hook_host=urlsplit(hook_url).hostname,
                )
        except (SQLAlchemyError, OSError) as exc:
            return _unavailable(exc)
        log.info("zapier.subscribed", subscription_id=subscription_id, trigger=event)
        return JSONResponse({"id": subscription_id}, status_code=201)

    async def list_active(self, request: Request) -> Response:
        """Zapier's sample / "perform list": the active subscriptions, oldest first."""
        denied = self._authorize(request)
        if denied is not None:
            return denied
        query = select(ZapierSubscription).where(ZapierSubscription.deleted_at.is_(None))
        event = request.query_params.get("event")
        if event:
            query = query.where(ZapierSubscription.event == event)
        try:
            async with self.engine.connect() as connection:
                rows = (await connection.execute(query.order_by(ZapierSubscription.id))).all()
        except (SQLAlchemyError, OSError) as exc:
            return _unavailable(exc)
        return JSONResponse(
            [
                {
                    "id": row.id,
                    "event": row.event,
                    "hookUrl": row.hook_url,
                    "created_at": row.created_at.isoformat(),
                }
                for row in rows
            ]
        )

    async def unsubscribe(self, request: Request) -> Response:
        """Idempotent: a second call for the same id answers 200 with the first deletion time."""
        denied = self._authorize(request)
        if denied is not None:
            return denied
        subscription_id: int = request.path_params["subscription_id"]
        try:
            async with self.engine.begin() as connection:
                deleted_at = (
                    await connection.execute(
                        update(ZapierSubscription)
                        .where(
                            ZapierSubscription.id == subscription_id,
                            ZapierSubscription.deleted_at.is_(None),
                        )
                        .values(deleted_at=utcnow())
                        .returning(ZapierSubscription.deleted_at)
                    )
                ).scalar_one_or_none()
                if deleted_at is not None:
                    await _audit(connection, "zapier.unsubscribed", subscription_id)
                else:
                    deleted_at = (
                        await connection.execute(
                            select(ZapierSubscription.deleted_at).where(
                                ZapierSubscription.id == subscription_id
                            )
                        )
                    ).scalar_one_or_none()
        except (SQLAlchemyError, OSError) as exc:
            return _unavailable(exc)
        if deleted_at is None:
            return _error(404, "not_found", detail=f"no Zapier subscription {subscription_id}")
        log.info("zapier.unsubscribed", subscription_id=subscription_id)
        return JSONResponse({"id": subscription_id, "deleted_at": deleted_at.isoformat()})

    def _authorize(self, request: Request) -> Response | None:
        secrets = zapier.secrets(self.settings)
        if not secrets:
            return _error(404, "not_enabled", detail=f"set {zapier.SECRET_ENV}")
        delivery = Delivery(
            raw=b"",
            headers=request.headers,
            method=request.method,
            query=dict(request.query_params),
        )
        try:
            check_token(delivery, secrets, header=zapier.SECRET_HEADER)
        except SignatureError as exc:
            log.warning("zapier.unauthorized", reason=exc.reason, path=request.url.path)
            return JSONResponse(
                {"error": "unauthorized", "reason": exc.reason},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="zapier"'},
            )
        return None


async def _audit(
    connection: AsyncConnection, action: str, subscription_id: int, **detail: Any
) -> None:
    await connection.execute(
        insert(AuditEntry).values(
            at=utcnow(),
            actor=ACTOR,
            action=action,
            entity_type=ENTITY_TYPE,
            entity_id=str(subscription_id),
            detail=detail,
        )
    )


def _unavailable(exc: BaseException) -> Response:
    log.error("zapier.store_unavailable", exc_type=type(exc).__name__)
    return _error(503, "store_unavailable")


def _error(status_code: int, error: str, **fields: Any) -> Response:
    return JSONResponse({"error": error, **fields}, status_code=status_code)
