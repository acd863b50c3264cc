"""What a user writes instead of hookfleet: FastAPI, `stripe.Webhook.construct_event`, an INSERT of
the raw event with psycopg, then `task.delay()` on the same Redis.

Configured by NAIVE_DATABASE_URL, NAIVE_REDIS_URL and STRIPE_WEBHOOK_SECRET (the first secret).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import psycopg
import stripe
from celery import Celery
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

TABLE_DDL = """
CREATE TABLE IF NOT EXISTS naive_events (
    id bigserial PRIMARY KEY,
    event_id text NOT NULL,
    event_type text NOT NULL,
    body jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
)
"""
QUEUE = "celery"  # Celery's default queue: what `task.delay()` uses when nothing is routed

DATABASE_URL = os.environ.get("NAIVE_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "").split(",")[0]

celery_app = Celery("naive", broker=os.environ.get("NAIVE_REDIS_URL", "redis://127.0.0.1:6379/0"))


def _handle_event(event_id: str) -> None:
    """The user's handler; the benchmark only enqueues it."""


handle_event: Any = celery_app.task(name="naive.handle_event")(_handle_event)
app = FastAPI()
_local = threading.local()


def _connection() -> psycopg.Connection[Any]:
    connection: psycopg.Connection[Any] | None = getattr(_local, "connection", None)
    if connection is None or connection.closed:
        connection = psycopg.connect(DATABASE_URL, autocommit=True)
        _local.connection = connection
    return connection


@app.post("/webhooks/stripe", response_model=None)
async def receive(request: Request) -> JSONResponse:
    payload = await request.body()
    signature = request.headers.get("stripe-signature", "")
    try:
        event = stripe.Webhook.construct_event(payload, signature, SECRET)
    except (ValueError, stripe.SignatureVerificationError):
        return JSONResponse({"error": "invalid_signature"}, status_code=400)
    # Blocking work in the threadpool, as a user would with a sync driver and a sync `delay()`.
    await run_in_threadpool(_store_and_enqueue, event.id, event.type, payload)
    return JSONResponse({"status": "accepted"})


def _store_and_enqueue(event_id: str, event_type: str, payload: bytes) -> None:
    _connection().execute(
        "INSERT INTO naive_events (event_id, event_type, body) VALUES (%s, %s, %s)",
        (event_id, event_type, payload.decode("utf-8")),
    )
    handle_event.delay(event_id)
