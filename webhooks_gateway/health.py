"""Liveness and readiness: alive is the process answering; ready is the inbox and the broker reachable."""

from __future__ import annotations

import anyio
from celery import Celery
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse

READY_CHECK_TIMEOUT_SECONDS = 3.0


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _database_ok(engine: AsyncEngine) -> bool:
    try:
        with anyio.fail_after(READY_CHECK_TIMEOUT_SECONDS):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


def _broker_ping(app: Celery) -> None:
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=2)


async def _broker_ok(app: Celery) -> bool:
    try:
        with anyio.fail_after(READY_CHECK_TIMEOUT_SECONDS):
            await anyio.to_thread.run_sync(_broker_ping, app, abandon_on_cancel=True)
    except Exception:
        return False
    return True


def readyz(engine: AsyncEngine, app: Celery) -> object:
    async def endpoint(_: Request) -> JSONResponse:
        checks = {"database": await _database_ok(engine), "broker": await _broker_ok(app)}
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )

    return endpoint
