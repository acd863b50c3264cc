"""Gateway-side Prometheus metrics: webhook outcomes, acknowledgement latency, inbox rows.

`webhooks_received_total{provider, outcome}` is counted by the ingest path itself. The ack latency is
measured around the webhook route from outside it (the time until the route has its answer), so the
ingest code stays free of timing. `/metrics` serves prometheus-client's multiprocess sum when
PROMETHEUS_MULTIPROC_DIR is set (uvicorn may run several workers; the launcher wipes the directory
before it starts them), else this process's registry; inbox rows are counted at scrape time.
"""

from __future__ import annotations

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


def timed_webhook(endpoint: Endpoint) -> Endpoint:
    """The webhook route, its answer timed per provider (names outside PROVIDERS count as one)."""

    async def timed(request: Request) -> Response:
        started = time.perf_counter()
        try:
            return await endpoint(request)
        finally:
            name = request.path_params.get("provider", "")
            ACK_LATENCY.labels(provider=name if name in PROVIDERS else UNKNOWN_PROVIDER).observe(
                time.perf_counter() - started
            )

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
