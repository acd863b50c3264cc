"""The ingest path for every provider: resolve, size-check, verify, parse, handshake, store.

Nothing is stored for a rejected request; a verified delivery is committed (by the inbox writer,
together with concurrent ones) before it is acknowledged, and published by the relay after the
commit, off the request path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from schemas.settings import Settings
from webhooks_gateway.inbox_writer import InboxRow, InboxUnavailableError, InboxWriter
from webhooks_gateway.metrics import SIGNATURE_FAILURES, received
from webhooks_gateway.providers import PROVIDERS
from webhooks_gateway.providers.base import (
    Delivery,
    InboundEvent,
    PayloadError,
    Provider,
    Reply,
    SignatureError,
)
from workers.logging import get_logger

log = get_logger(__name__)


class BodyTooLargeError(Exception):
    pass


class FastJSONResponse(JSONResponse):
    """Every webhook answer is JSON: orjson renders it in a fraction of the stdlib's time."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def public_url(request: Request, settings: Settings) -> str:
    """The URL the provider called, as it signed it: PUBLIC_BASE_URL, else trusted proxy headers."""
    path_and_query = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if "public_base_url" in settings.model_fields_set:
        return settings.public_base_url.rstrip("/") + path_and_query
    if settings.trust_forwarded_headers:
        proto = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
        host = request.headers.get("x-forwarded-host", request.headers.get("host", ""))
        return f"{proto}://{host.split(',')[0].strip()}{path_and_query}"
    return str(request.url)


class RequestDelivery(Delivery):
    """A live request's delivery. Its public URL and query are worked out only if a provider reads
    them (Twilio signs the URL, the token providers read `?token=`): for every other request that
    work was about 4% of the gateway's profile samples under wrk."""

    _request: Request
    _settings: Settings

    def __init__(self, raw: bytes, request: Request, settings: Settings) -> None:
        # The dataclass's own __init__ would store url and query now, hiding the properties below.
        for name, value in (("raw", raw), ("headers", request.headers), ("method", request.method)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_request", request)
        object.__setattr__(self, "_settings", settings)

    @cached_property
    def url(self) -> str:
        return public_url(self._request, self._settings)

    @cached_property
    def query(self) -> Mapping[str, str]:
        return dict(self._request.query_params)


@dataclass(frozen=True)
class Ingest:
    settings: Settings
    writer: InboxWriter
    clock: Callable[[], datetime]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app of `/webhooks/{provider}`, taken ahead of Starlette's (`WebhooksFirst`)."""
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        name = request.path_params["provider"]
        provider = PROVIDERS.get(name)
        secrets = provider.secrets(self.settings) if provider else ()
        if provider is None or not secrets:
            return _reply(name, 404, "not_enabled", detail=f"no webhook route for {name!r}")
        if request.method not in provider.METHODS:
            return _reply(name, 405, "method_not_allowed", allowed=list(provider.METHODS))
        try:
            raw = await _read_body(request, self.settings.max_body_bytes)
        except BodyTooLargeError:
            return _reply(name, 413, "body_too_large", limit=self.settings.max_body_bytes)
        except ClientDisconnect:
            return _reply(name, 400, "client_disconnected")
        delivery = RequestDelivery(raw, request, self.settings)
        try:
            provider.verify(
                delivery,
                secrets=secrets,
                now=self.clock(),
                tolerance_seconds=self.settings.webhook_tolerance_seconds,
            )
        except SignatureError as exc:
            SIGNATURE_FAILURES.labels(provider=name, reason=exc.reason).inc()
            return _reply(name, 400, "invalid_signature", reason=exc.reason)
        try:
            payload = provider.parse(delivery)
            reply = provider.handshake(delivery, payload)
            if reply is not None:
                return _handshake(name, reply)
            events = provider.events(delivery, payload)
        except PayloadError as exc:
            return _reply(name, 400, "malformed_body", detail=str(exc))
        return await self._store_and_enqueue(provider, request, events)

    async def _store_and_enqueue(
        self, provider: Provider, request: Request, events: list[InboundEvent]
    ) -> Response:
        kept = {h: request.headers[h] for h in provider.STORED_HEADERS if h in request.headers}
        logged = {"event_id": ",".join(e.event_id for e in events)[:300]}
        rows = [
            InboxRow(provider.NAME, event.event_id, event.event_type, event.body, kept)
            for event in events
        ]
        try:
            inserted = await self.writer.write(rows)
        except InboxUnavailableError:
            # Not stored, so not acknowledged: the provider's retry is our second chance.
            return _reply(provider.NAME, 503, "inbox_unavailable", logged=logged)
        new_ids = [inbox_id for inbox_id in inserted if inbox_id is not None]
        duplicates = len(inserted) - len(new_ids)
        if not new_ids:
            return _reply(
                provider.NAME, 200, status="duplicate", outcome="duplicate", logged=logged
            )
        # Committed; the relay publishes process_event for these rows after this answer.
        return _reply(
            provider.NAME,
            200,
            status="accepted",
            outcome="accepted",
            inbox_id=new_ids[0],
            inbox_ids=new_ids,
            duplicates=duplicates,
            logged={**logged, "inbox_id": new_ids[0] if len(new_ids) == 1 else new_ids},
        )


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


def _handshake(provider: str, reply: Reply) -> Response:
    received(provider, "handshake").inc()
    log.info("webhook.handshake", provider=provider, http_status=reply.status)
    if isinstance(reply.body, str):
        return PlainTextResponse(reply.body, reply.status, headers=dict(reply.headers))
    if reply.body is None:
        return Response(status_code=reply.status, headers=dict(reply.headers))
    return JSONResponse(reply.body, reply.status, headers=dict(reply.headers))


def _reply(
    provider: str,
    status_code: int,
    error: str | None = None,
    *,
    outcome: str = "",
    logged: dict[str, Any] | None = None,
    **fields: Any,
) -> FastJSONResponse:
    """The answer, counted and logged with `logged` (the delivery's event and inbox ids) besides it."""
    body = {"error": error, **fields} if error else fields
    received(provider, error or outcome).inc()
    log_fields = {k: v for k, v in body.items() if k not in {"detail", "inbox_ids"}}
    log_fields.update(logged or {})
    if status_code >= 400:
        log.warning("webhook.rejected", provider=provider, http_status=status_code, **log_fields)
    else:
        log.info("webhook.received", provider=provider, http_status=status_code, **log_fields)
    return FastJSONResponse(body, status_code=status_code)
