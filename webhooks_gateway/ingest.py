"""The ingest path for every provider: resolve, size-check, verify, parse, store, commit, enqueue."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import structlog
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from schemas.db import insert_ignoring_conflicts
from schemas.settings import Settings
from schemas.tables import InboxStatus, WebhookEvent, utcnow
from webhooks_gateway.providers import PROVIDERS
from webhooks_gateway.providers.base import PayloadError, Provider, SignatureError
from workers.logging import get_logger

log = get_logger(__name__)

# Publishes process_event(inbox_id); returns whether the broker took it.
Enqueue = Callable[[int], Awaitable[bool]]


class BodyTooLargeError(Exception):
    pass


@dataclass(frozen=True)
class Ingest:
    settings: Settings
    engine: AsyncEngine
    enqueue: Enqueue
    clock: Callable[[], datetime]

    async def handle(self, request: Request) -> JSONResponse:
        structlog.contextvars.clear_contextvars()
        name = request.path_params["provider"]
        structlog.contextvars.bind_contextvars(provider=name)
        provider = PROVIDERS.get(name)
        secrets = self.settings.webhook_secrets(name)
        if provider is None or not secrets:
            return _reply(404, "provider_not_enabled", detail=f"no webhook route for {name!r}")
        try:
            raw = await _read_body(request, self.settings.max_body_bytes)
        except BodyTooLargeError:
            return _reply(413, "body_too_large", limit=self.settings.max_body_bytes)
        except ClientDisconnect:
            return _reply(400, "client_disconnected")
        try:
            provider.verify(
                raw,
                request.headers,
                secrets=secrets,
                now=self.clock(),
                tolerance_seconds=self.settings.stripe_webhook_tolerance_seconds,
            )
        except SignatureError as exc:
            return _reply(400, "invalid_signature", reason=exc.reason)
        try:
            payload = orjson.loads(raw)
            if not isinstance(payload, dict):
                raise PayloadError("body is not a JSON object")
            event_id = provider.event_id(payload, request.headers)
            event_type = provider.event_type(payload, request.headers)
        except (orjson.JSONDecodeError, PayloadError) as exc:
            return _reply(400, "malformed_body", detail=str(exc))
        structlog.contextvars.bind_contextvars(event_id=event_id, event_type=event_type)
        return await self._store_and_enqueue(provider, request, raw, event_id, event_type)

    async def _store_and_enqueue(
        self, provider: Provider, request: Request, raw: bytes, event_id: str, event_type: str
    ) -> JSONResponse:
        kept = {h: request.headers[h] for h in provider.STORED_HEADERS if h in request.headers}
        insert = (
            insert_ignoring_conflicts(self.engine.dialect.name, WebhookEvent)
            .values(
                provider=provider.NAME,
                event_id=event_id,
                event_type=event_type,
                body=raw,
                headers=kept,
                status=InboxStatus.RECEIVED,
                attempts=0,
                received_at=utcnow(),
            )
            .returning(WebhookEvent.id)
        )
        try:
            async with self.engine.begin() as connection:
                inbox_id = (await connection.execute(insert)).scalar_one_or_none()
        except (SQLAlchemyError, OSError) as exc:
            # Not stored, so not acknowledged: the provider's retry is our second chance.
            log.error("webhook.inbox_unavailable", exc_type=type(exc).__name__)
            return _reply(503, "inbox_unavailable")
        if inbox_id is None:
            return _reply(200, status="duplicate")
        structlog.contextvars.bind_contextvars(inbox_id=inbox_id)
        # After the commit above, never before: a worker must find the row it is sent.
        enqueued = await self.enqueue(inbox_id)
        if enqueued:
            await self._mark_enqueued(inbox_id)
        return _reply(200, status="accepted", inbox_id=inbox_id, enqueued=enqueued)

    async def _mark_enqueued(self, inbox_id: int) -> None:
        try:
            async with self.engine.begin() as connection:
                await connection.execute(
                    update(WebhookEvent)
                    .where(WebhookEvent.id == inbox_id, WebhookEvent.status == InboxStatus.RECEIVED)
                    .values(status=InboxStatus.ENQUEUED, enqueued_at=utcnow())
                )
        except (SQLAlchemyError, OSError) as exc:
            # The event is stored and published; only the bookkeeping time is missing.
            log.warning("webhook.mark_enqueued_failed", exc_type=type(exc).__name__)


async def _read_body(request: Request, limit: int) -> bytes:
    """Refuse by Content-Length when it is declared, and by counting when it is not."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _reply(status_code: int, error: str | None = None, **fields: Any) -> JSONResponse:
    body = {"error": error, **fields} if error else fields
    log_fields = {k: v for k, v in body.items() if k != "detail"}
    if status_code >= 400:
        log.warning("webhook.rejected", http_status=status_code, **log_fields)
    else:
        log.info("webhook.received", http_status=status_code, **log_fields)
    return JSONResponse(body, status_code=status_code)
