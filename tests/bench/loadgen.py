"""Python load generators: closed loop (the fallback when wrk is missing) and open loop (a fixed
arrival rate, latency measured from each request's scheduled send time so queueing shows)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import httptools
import uvloop

Delivery = tuple[str, bytes]  # (Stripe-Signature, body)
T = TypeVar("T")
Answer = tuple[int, bytes, float]  # status, body, when the answer ended (perf_counter)
ANSWER_TIMEOUT_SECONDS = 60.0  # the open loop's last answers; later ones count as errors


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

    def record(self, status: int, body: bytes, seconds: float) -> None:
        self.latencies.append(seconds)
        if 200 <= status < 300:
            if b'"accepted"' in body:
                self.accepted += 1
            elif b'"duplicate"' in body:
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


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time, its answers parsed by
    httptools. aiohttp cost the open-loop generator 212-260 us of CPU per request, a third of the
    box's busy time at hookfleet's half peak: every request it sent took CPU from the server it
    measured."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._body = bytearray()
        self._answer: asyncio.Future[Answer] | None = None
        self.closed = False

    @property
    def usable(self) -> bool:
        """Open, and not being closed: a server ends keep-alive connections left idle (uvicorn after
        5 s), and a request written to one would be lost."""
        return not self.closed and self._transport is not None and not self._transport.is_closing()

    def request(self, raw: bytes) -> asyncio.Future[Answer]:
        """Send one request; the future holds its status, body and the time its answer ended, or
        the error that ended the connection first."""
        assert self._answer is None, "one request at a time on a connection"
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        if not self.usable or self._transport is None:
            answer.set_exception(ConnectionResetError("the connection is closed"))
            return answer
        self._answer = answer
        self._body.clear()
        self._transport.write(raw)
        return answer

    def close(self) -> None:
        self._end(None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._end(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._end(exc or ConnectionResetError("the server closed the connection"))

    # httptools' callbacks
    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_result(
                (self._parser.get_status_code(), bytes(self._body), time.perf_counter())
            )
        if not self._parser.should_keep_alive():
            self._end(None)

    def _end(self, exc: BaseException | None) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done() and exc is not None:
            answer.set_exception(exc)
        if self._transport is not None and not self.closed:
            self.closed = True
            self._transport.close()


class _Target:
    """Where the requests go, and each delivery as the bytes of its request."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._head = (
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()

    def request(self, delivery: Delivery) -> bytes:
        signature, body = delivery
        return b"%sStripe-Signature: %s\r\nContent-Length: %d\r\n\r\n%s" % (
            self._head,
            signature.encode(),
            len(body),
            body,
        )

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        return connection


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a generator on uvloop: the event loop's own cost per request is the generator's too."""
    return uvloop.run(main)


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
    target = _Target(url)
    position = 0
    wrapped = 0
    with no_collector_pauses():
        began = time.perf_counter()
        deadline = began + duration

        async def user() -> None:
            nonlocal position, wrapped
            connection: _Connection | None = None
            while time.perf_counter() < deadline:
                if position >= len(deliveries):
                    position, wrapped = 0, wrapped + 1
                delivery = deliveries[position]
                position += 1
                start = time.perf_counter()
                try:
                    if connection is None or not connection.usable:
                        connection = await target.connect()
                    status, body, ended = await connection.request(target.request(delivery))
                except (OSError, httptools.HttpParserError):
                    tally.errors += 1
                    continue
                tally.record(status, body, ended - start)
            if connection is not None:
                connection.close()

        await asyncio.gather(*(user() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return tally.summary(elapsed, wrapped=wrapped)


async def open_loop(
    url: str, deliveries: Sequence[Delivery], rate: float, duration: float
) -> dict[str, Any]:
    """Send at `rate`/s whatever the answers do; each latency counts from the scheduled send time.
    A request goes on an idle connection, or on a new one when every connection is waiting."""
    tally = _Tally()
    target = _Target(url)
    count = min(len(deliveries), int(rate * duration))
    requests = [target.request(delivery) for delivery in deliveries[:count]]
    interval = 1.0 / rate
    lag: list[float] = []
    idle: list[_Connection] = []
    opened: list[_Connection] = []
    in_flight = 0
    all_answered = asyncio.Event()

    def settled() -> None:
        nonlocal in_flight
        in_flight -= 1
        if not in_flight:
            all_answered.set()

    def answered(scheduled: float, connection: _Connection, answer: asyncio.Future[Answer]) -> None:
        if answer.cancelled() or answer.exception() is not None:
            tally.errors += 1
        else:
            status, body, ended = answer.result()
            tally.record(status, body, ended - scheduled)
            if connection.usable:
                idle.append(connection)
        settled()

    def send(connection: _Connection, raw: bytes, scheduled: float) -> None:
        connection.request(raw).add_done_callback(partial(answered, scheduled, connection))

    async def send_on_new_connection(raw: bytes, scheduled: float) -> None:
        try:
            connection = await target.connect()
        except OSError:
            tally.errors += 1
            settled()
            return
        opened.append(connection)
        send(connection, raw, scheduled)

    connecting: set[asyncio.Task[None]] = set()
    with no_collector_pauses():
        began, began_epoch = time.perf_counter(), time.time()
        for index, raw in enumerate(requests):
            scheduled = began + index * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lag.append(max(0.0, time.perf_counter() - scheduled))
            in_flight += 1
            all_answered.clear()
            while idle and not idle[-1].usable:
                idle.pop()
            if idle:
                send(idle.pop(), raw, scheduled)
            else:
                task = asyncio.create_task(send_on_new_connection(raw, scheduled))
                connecting.add(task)
                task.add_done_callback(connecting.discard)
        sent_in = time.perf_counter() - began
        if in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_answered.wait(), ANSWER_TIMEOUT_SECONDS)
        tally.errors += in_flight  # never answered
        elapsed = time.perf_counter() - began
        for connection in opened:
            connection.close()
    return tally.summary(
        elapsed,
        target_rate=rate,
        sent=count,
        connections=len(opened),
        achieved_send_rate=count / sent_in if sent_in else 0.0,
        generator_lag_p99_us=percentile([s * 1e6 for s in lag], 99),
        began_epoch=began_epoch,
    )
