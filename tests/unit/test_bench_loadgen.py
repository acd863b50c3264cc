"""The load generator: its own pauses are not measured as the server's latency, every request it
sends is answered or counted as an error, and open-loop latency counts from the scheduled send."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from tests.bench import loadgen
from tests.bench.loadgen import no_collector_pauses
from tests.support.processes import free_port


def test_the_generator_does_not_collect_garbage_while_it_times() -> None:
    assert gc.isenabled()

    with no_collector_pauses():
        assert not gc.isenabled()

    assert gc.isenabled()


def test_the_collector_comes_back_when_the_run_fails() -> None:
    try:
        with no_collector_pauses():
            raise ConnectionError("server went away")
    except ConnectionError:
        pass

    assert gc.isenabled()


# ---------------------------------------------------------------- the HTTP client, against uvicorn


class _Answers:
    """An ASGI app that answers each request as its body asks: `accepted`, `duplicate`, `reject`
    (a 503), `close` (accepted, then the connection closed), `slow` (accepted after 50 ms) or
    `never` (no answer)."""

    def __init__(self) -> None:
        self.received = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.received += 1
        kind = body.decode()
        if kind == "never":
            await asyncio.sleep(3600)
        if kind == "slow":
            await asyncio.sleep(0.05)
        status = 503 if kind == "reject" else 200
        answer = b'{"status":"duplicate"}' if kind == "duplicate" else b'{"status":"accepted"}'
        headers = [(b"content-type", b"application/json")]
        if kind == "close":
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


@pytest.fixture
def server() -> Iterator[tuple[str, _Answers]]:
    app = _Answers()
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", timeout_keep_alive=1
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}/webhooks/stripe", app
    running.should_exit = running.force_exit = True
    thread.join(timeout=10)


def _deliveries(*kinds: str) -> list[loadgen.Delivery]:
    return [("t=1,v1=00", kind.encode()) for kind in kinds]


def _open_loop(url: str, kinds: list[str], rate: float, duration: float) -> dict[str, Any]:
    """Requests asking for these answers, sent open loop at `rate`/s."""
    return loadgen.run(loadgen.open_loop(url, _deliveries(*kinds), rate, duration))


def test_the_open_loop_sends_every_request_and_tells_answers_apart(
    server: tuple[str, _Answers],
) -> None:
    url, app = server
    kinds = ["accepted"] * 40 + ["duplicate"] * 5 + ["reject"] * 3 + ["close"] * 2

    result = _open_loop(url, kinds, rate=500, duration=0.1)

    assert result["sent"] == 50 == app.received
    assert (result["accepted"], result["duplicate"], result["non_2xx"]) == (42, 5, 3)
    assert result["requests"] == 50
    assert result["errors"] == {"client": 0}


def test_a_closed_connection_is_not_reused_and_loses_no_request(
    server: tuple[str, _Answers],
) -> None:
    url, app = server

    result = _open_loop(url, ["close"] * 20, 400, 0.05)

    assert result["accepted"] == 20 == app.received
    assert result["connections"] == 20  # each answer ended its connection
    assert result["errors"] == {"client": 0}


def test_a_connection_the_server_ended_while_idle_is_not_used_again(
    server: tuple[str, _Answers],
) -> None:
    url, app = server  # uvicorn here ends a connection idle for 1 s

    result = _open_loop(url, ["accepted", "accepted"], 0.7, 3)

    assert result["accepted"] == 2 == app.received
    assert result["connections"] == 2
    assert result["errors"] == {"client": 0}


def test_a_slow_answer_is_its_latency_and_a_waiting_connection_is_not_shared(
    server: tuple[str, _Answers],
) -> None:
    url, _ = server

    result = _open_loop(url, ["slow"] * 10, 200, 0.05)

    assert result["accepted"] == 10
    assert result["p50_us"] >= 50_000
    assert result["connections"] == 10  # every connection was waiting: a new one each time


def test_an_unanswered_request_is_an_error_not_a_latency(
    server: tuple[str, _Answers], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = server
    monkeypatch.setattr(loadgen, "ANSWER_TIMEOUT_SECONDS", 0.5)

    result = _open_loop(url, ["accepted", "never", "accepted"], 100, 0.03)

    assert result["accepted"] == 2
    assert result["requests"] == 2
    assert result["errors"] == {"client": 1}


def test_the_closed_loop_keeps_its_connections_busy_and_counts_every_answer(
    server: tuple[str, _Answers],
) -> None:
    url, app = server

    result = loadgen.run(loadgen.closed_loop(url, _deliveries("accepted", "duplicate"), 4, 0.3))

    assert result["requests"] == app.received > 0
    assert result["accepted"] + result["duplicate"] == result["requests"]
    assert result["wrapped"] > 0  # two deliveries, sent over and over
    assert result["errors"] == {"client": 0}
