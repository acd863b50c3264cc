"""The ASGI app: webhook routes for the enabled providers, health, readiness, the admin API and
the operators' pages.

Starlette rather than FastAPI: the webhook path must read the exact raw bytes before any parsing, and
has no request model to validate, so FastAPI's layer would only cost time on the hot path.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.orm import sessionmaker
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from schemas.db import make_async_engine, make_engine
from schemas.settings import Settings
from webhooks_gateway.admin import create_admin_api
from webhooks_gateway.admin.health import enabled_providers
from webhooks_gateway.admin.pages import create_admin_pages
from webhooks_gateway.enqueue import Enqueue, celery_publisher, one_by_one
from webhooks_gateway.health import healthz, readyz
from webhooks_gateway.inbox_writer import InboxWriter
from webhooks_gateway.ingest import Ingest
from webhooks_gateway.jobs import celery_job_sender, job_routes
from webhooks_gateway.metrics import metrics_endpoint, timed_webhook
from webhooks_gateway.providers import PROVIDERS
from webhooks_gateway.relay import Relay
from webhooks_gateway.webhook_route import WebhooksFirst
from webhooks_gateway.zapier_hooks import zapier_routes
from workers.celery_app import make_celery
from workers.dead_letters import SendTask
from workers.enqueue import publish_process_event, task_sender
from workers.jobs import SendJob
from workers.logging import configure_logging, get_logger
from workers.rate_limit import TokenBucket

log = get_logger(__name__)
# A young-generation collection walks the objects of every request in flight. At Python's default of
# one per 700 net allocations it cost about 14 us of CPU per request under load (timed with
# gc.callbacks); one per 10,000 cut the gateway's CPU per request by 4-5% (two A/B runs under wrk).
GC_YOUNG_THRESHOLD = 10_000


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings,
    *,
    enqueue: Enqueue | None = None,
    clock: Callable[[], datetime] = _utcnow,
    send_task: SendTask | None = None,
    publish: Callable[[int], str] | None = None,
    bucket: TokenBucket | None = None,
    send_job: SendJob | None = None,
) -> WebhooksFirst:
    """`enqueue`, `send_task`, `publish` and `send_job` default to the configured broker and `bucket`
    to a token bucket on REDIS_URL; tests may pass recorders and a bucket of their own."""
    engine = make_async_engine(settings)
    celery = make_celery(settings)
    # The admin API's routes are sync (run in the threadpool) and share the workers' store functions.
    admin_engine = make_engine(settings)
    limiter_redis = None
    if bucket is None:
        # One immediate retry (a connection dropped by a Redis restart), no backoff: while Redis is
        # down the limiter lets requests through, and must not slow each of them down first.
        limiter_redis = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=1,
            socket_timeout=1,
            retry=Retry(NoBackoff(), 1),
        )
        bucket = TokenBucket(limiter_redis)
    send_job = send_job or celery_job_sender(celery)
    admin = create_admin_api(
        sessions=sessionmaker(admin_engine, expire_on_commit=False),
        send_task=send_task or task_sender(celery),
        publish=publish or (lambda inbox_id: publish_process_event(celery, inbox_id)),
        send_job=send_job,
        bucket=bucket,
        providers=enabled_providers(settings),
    )
    # The operators' pages share the API's sessions, broker senders and token bucket.
    pages = create_admin_pages(admin.state.admin, settings)
    relay = Relay(
        engine,
        one_by_one(enqueue)
        if enqueue
        else celery_publisher(celery, settings.enqueue_timeout_seconds),
    )
    writer = InboxWriter(engine, on_commit=relay.add)
    ingest = Ingest(settings=settings, writer=writer, clock=clock)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        _announce_providers(settings)
        await relay.start()
        await writer.start()
        # What start-up built lives as long as the process: out of the collector's way, so that
        # full collections stop pausing requests (measured: closed-loop p99 120-136 ms -> 35 ms).
        gc.collect()
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
        yield
        gc.set_threshold(*thresholds)
        await writer.stop()
        await relay.stop()
        await engine.dispose()
        admin_engine.dispose()
        if limiter_redis is not None:
            limiter_redis.close()

    routes = [
        *zapier_routes(settings, engine),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint(admin_engine), methods=["GET"]),
        Route("/readyz", readyz(engine, celery), methods=["GET"]),  # type: ignore[arg-type]
        # POST /jobs/{name}: an external cron starts a scheduled job (CRON_SECRET).
        *job_routes(settings, send_job),
        Mount("/admin/api", app=admin),
        Mount("/admin", app=pages),
    ]
    return WebhooksFirst(timed_webhook(ingest), Starlette(routes=routes, lifespan=lifespan))


def _announce_providers(settings: Settings) -> None:
    """One line at start-up: which routes take webhooks, and which secret would enable the rest."""
    enabled = [name for name, provider in PROVIDERS.items() if provider.secrets(settings)]
    disabled = {
        name: f"set {provider.SECRET_ENV}"
        for name, provider in PROVIDERS.items()
        if name not in enabled
    }
    log.info("gateway.providers", enabled=enabled, disabled=disabled)


def app_from_env() -> WebhooksFirst:
    """The uvicorn factory: `uvicorn --factory webhooks_gateway.app:app_from_env`."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings)
