"""Gateway-side Prometheus metrics: webhook outcomes, acknowledgement latency, inbox rows.

`webhooks_received_total{provider, outcome}` is counted by the ingest path itself. The ack latency is
measured around the webhook app from outside it (the time until its answer starts), so the ingest
code stays free of timing. `/metrics` serves prometheus-client's multiprocess sum when
PROMETHEUS_MULTIPROC_DIR is set (uvicorn may run several workers; the launcher wipes the directory
before it starts them), else this process's registry; inbox rows are counted at scrape time.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import anyio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import Metric
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webhooks_gateway.providers import PROVIDERS
from workers.scrape_collectors import InboxCollector
from workers.worker_metrics import MULTIPROC_ENV

WEBHOOKS_RECEIVED = Counter(
    "webhooks_received",
    "Webhook requests by provider and outcome (accepted, duplicate, handshake, rejected kinds)",
    ["provider", "outcome"],
)
SIGNATURE_FAILURES = Counter(
    "webhooks_signature_failures",
    "Rejected signatures by provider and reason",
    ["provider", "reason"],
)
ACK_LATENCY = Histogram(
    "webhooks_ack_latency_seconds",
    "Seconds from the webhook request reaching the route to its answer being ready, by provider",
    ["provider"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf")),
)
UNKNOWN_PROVIDER = "unknown"

Endpoint = Callable[[Request], Awaitable[Response]]


def received(provider: str, outcome: str) -> Counter:
    """The `webhooks_received_total` series of a provider and outcome."""
    return _received(_label(provider), outcome)


def _label(provider: str) -> str:
    """Any name can be in the URL: outside PROVIDERS it is one label value, not a series per name."""
    return provider if provider in PROVIDERS else UNKNOWN_PROVIDER


# Each series looked up once (`labels()` checks and locks on every call); the keys are bounded by
# PROVIDERS and the outcomes the ingest path names.
@functools.cache
def _received(label: str, outcome: str) -> Counter:
    return WEBHOOKS_RECEIVED.labels(provider=label, outcome=outcome)


@functools.cache
def _ack_latency(label: str) -> Histogram:
    return ACK_LATENCY.labels(provider=label)


def timed_webhook(app: ASGIApp) -> ASGIApp:
    """The webhook app (behind `WebhooksFirst`), timed per provider until its answer starts (status
    and headers handed to the server), or until it raised: a client slow to read the body does not
    count."""

    async def timed(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        observed = False

        def observe() -> None:
            nonlocal observed
            observed = True
            name = scope["path_params"]["provider"]
            _ack_latency(_label(name)).observe(time.perf_counter() - started)

        async def send_timed(message: Message) -> None:
            if not observed and message["type"] == "http.response.start":
                observe()
            await send(message)

        try:
            await app(scope, receive, send_timed)
        finally:
            if not observed:
                observe()

    return timed


class _ThisProcess:
    """The default registry's families, for a gateway running as a single process."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def gateway_registry(engine: Engine) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        # Created if missing, never emptied here: sibling uvicorn workers already write to it.
        Path(directory).mkdir(parents=True, exist_ok=True)
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(InboxCollector(engine))
    return registry


def metrics_endpoint(engine: Engine) -> Endpoint:
    """GET /metrics; the inbox count runs in a thread, off the event loop."""
    registry = gateway_registry(engine)

    async def metrics(_: Request) -> Response:
        body = await anyio.to_thread.run_sync(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics
