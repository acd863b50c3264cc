"""The ASGI app: webhook routes for the enabled providers, health, readiness.

Starlette rather than FastAPI: the webhook path must read the exact raw bytes before any parsing, and
has no request model to validate, so FastAPI's layer would only cost time on the hot path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.routing import Route

from schemas.db import make_async_engine
from schemas.settings import Settings
from webhooks_gateway.enqueue import celery_enqueue
from webhooks_gateway.health import healthz, readyz
from webhooks_gateway.ingest import Enqueue, Ingest
from webhooks_gateway.providers import PROVIDERS
from workers.celery_app import make_celery
from workers.logging import configure_logging, get_logger

log = get_logger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings,
    *,
    enqueue: Enqueue | None = None,
    clock: Callable[[], datetime] = _utcnow,
) -> Starlette:
    """`enqueue` defaults to publishing on the configured broker; tests may pass a recorder."""
    engine = make_async_engine(settings)
    celery = make_celery(settings)
    ingest = Ingest(
        settings=settings,
        engine=engine,
        enqueue=enqueue or celery_enqueue(celery, settings.enqueue_timeout_seconds),
        clock=clock,
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        _announce_providers(settings)
        yield
        await engine.dispose()

    routes = [
        Route("/webhooks/{provider}", ingest.handle, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz(engine, celery), methods=["GET"]),  # type: ignore[arg-type]
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _announce_providers(settings: Settings) -> None:
    enabled = settings.enabled_providers()
    for name in sorted(PROVIDERS):
        if name in enabled:
            log.info("gateway.provider_enabled", provider=name, route=f"/webhooks/{name}")
        else:
            log.warning(
                "gateway.provider_disabled",
                provider=name,
                why=f"no {name.upper()} webhook secret set; its route answers 404",
            )


def app_from_env() -> Starlette:
    """The uvicorn factory: `uvicorn --factory webhooks_gateway.app:app_from_env`."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings)
