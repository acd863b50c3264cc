"""Python load generators: closed loop (the fallback when wrk is missing) and open loop (a fixed
arrival rate, latency measured from each request's scheduled send time so queueing shows)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import aiohttp

Delivery = tuple[str, bytes]  # (Stripe-Signature, body)


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.accepted = self.duplicate = self.other_2xx = self.non_2xx = self.errors = 0

    def record(self, status: int, text: str, seconds: float) -> None:
        self.latencies.append(seconds)
        if 200 <= status < 300:
            if '"accepted"' in text:
                self.accepted += 1
            elif '"duplicate"' in text:
                self.duplicate += 1
            else:
                self.other_2xx += 1
        else:
            self.non_2xx += 1

    def summary(self, elapsed: float, **extra: Any) -> dict[str, Any]:
        us = [s * 1e6 for s in self.latencies]
        return {
            "requests": len(self.latencies),
            "duration_us": int(elapsed * 1e6),
            "accepted": self.accepted,
            "duplicate": self.duplicate,
            "other_2xx": self.other_2xx,
            "non_2xx": self.non_2xx,
            "errors": {"client": self.errors},
            "p50_us": percentile(us, 50),
            "p90_us": percentile(us, 90),
            "p99_us": percentile(us, 99),
            "p999_us": percentile(us, 99.9),
            "max_us": max(us, default=0.0),
            **extra,
        }


async def _post(
    session: aiohttp.ClientSession, url: str, delivery: Delivery, tally: _Tally, start: float
) -> None:
    signature, body = delivery
    headers = {"Content-Type": "application/json", "Stripe-Signature": signature}
    try:
        async with session.post(url, data=body, headers=headers) as response:
            text = await response.text()
            tally.record(response.status, text, time.perf_counter() - start)
    except (aiohttp.ClientError, TimeoutError):
        tally.errors += 1


@contextmanager
def no_collector_pauses() -> Iterator[None]:
    """No garbage collection in the generator while it times. Its full collections, with the signed
    pool and the harness's modules in memory, took 64-84 ms, and every request in flight then counted
    the pause as the server's latency (each of a hookfleet open-loop run's 100 ms spikes coincided
    with one)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def closed_loop(
    url: str, deliveries: Sequence[Delivery], concurrency: int, duration: float
) -> dict[str, Any]:
    tally = _Tally()
    position = 0
    wrapped = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    with no_collector_pauses():
        async with aiohttp.ClientSession(connector=connector) as session:
            began = time.perf_counter()
            deadline = began + duration

            async def user() -> None:
                nonlocal position, wrapped
                while time.perf_counter() < deadline:
                    if position >= len(deliveries):
                        position, wrapped = 0, wrapped + 1
                    delivery = deliveries[position]
                    position += 1
                    await _post(session, url, delivery, tally, time.perf_counter())

            await asyncio.gather(*(user() for _ in range(concurrency)))
            elapsed = time.perf_counter() - began
    return tally.summary(elapsed, wrapped=wrapped)


async def open_loop(
    url: str, deliveries: Sequence[Delivery], rate: float, duration: float
) -> dict[str, Any]:
    """Send at `rate`/s whatever the answers do; each latency counts from the scheduled send time."""
    tally = _Tally()
    count = min(len(deliveries), int(rate * duration))
    interval = 1.0 / rate
    connector = aiohttp.TCPConnector(limit=0)
    lag: list[float] = []
    with no_collector_pauses():
        async with aiohttp.ClientSession(connector=connector) as session:
            began, began_epoch = time.perf_counter(), time.time()
            pending: set[asyncio.Task[None]] = set()
            for index in range(count):
                scheduled = began + index * interval
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                lag.append(max(0.0, time.perf_counter() - scheduled))
                task = asyncio.create_task(_post(session, url, deliveries[index], tally, scheduled))
                pending.add(task)
                task.add_done_callback(pending.discard)
            sent_in = time.perf_counter() - began
            await asyncio.gather(*pending)
            elapsed = time.perf_counter() - began
    return tally.summary(
        elapsed,
        target_rate=rate,
        sent=count,
        achieved_send_rate=count / sent_in if sent_in else 0.0,
        generator_lag_p99_us=percentile([s * 1e6 for s in lag], 99),
        began_epoch=began_epoch,
    )
