"""The Luma client's handling of answers it cannot get: connection errors retried (bounded) and
counted as provider calls without an answer. Served by an httpx MockTransport, so the network can
fail on cue; the sandbox tests (test_luma_approval) cover the real answers."""

from __future__ import annotations

from datetime import UTC, datetime

import fakeredis
import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from tasks.clients.luma import LumaClient
from tests.conftest import make_settings
from workers import runtime
from workers.errors import ConfigurationError, TransientError
from workers.outbound_limits import OutboundLimiter, RetryPolicy

POLICY = RetryPolicy(attempts=3, rate_limited_attempts=3, backoff_seconds=0.01)
EVENT = {"id": "evt-1", "name": "Meetup", "start_at": "2030-01-01T18:00:00Z"}


class Flaky:
    """Fails the first `failures` requests with a connection error, then lists one event."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) <= self.failures:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(
            200, json={"entries": [EVENT], "has_more": False, "next_cursor": None}
        )


@pytest.fixture(autouse=True)
def trail_on_fakeredis(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:
    """record_provider_call keeps its trail in runtime.redis()."""
    redis = fakeredis.FakeRedis()
    monkeypatch.setattr(runtime, "redis", lambda: redis)
    return redis


def client(flaky: Flaky, redis: fakeredis.FakeRedis) -> LumaClient:
    settings = make_settings(
        luma_api_key=SecretStr("secret-test"), luma_api_base="https://luma.test"
    )
    return LumaClient(
        settings,
        OutboundLimiter(redis, "luma"),
        policy=POLICY,
        transport=httpx.MockTransport(flaky),
    )


def unanswered() -> float:
    labels = {"provider": "luma", "status": "error"}
    return REGISTRY.get_sample_value("hookfleet_provider_api_calls_total", labels) or 0.0


def test_connection_errors_are_retried_and_counted_as_unanswered_calls(
    trail_on_fakeredis: fakeredis.FakeRedis,
) -> None:
    flaky = Flaky(failures=2)
    before = unanswered()

    with client(flaky, trail_on_fakeredis) as luma:
        events = list(luma.upcoming_events(datetime(2029, 1, 1, tzinfo=UTC)))

    assert [event.id for event in events] == ["evt-1"]
    assert len(flaky.requests) == 3
    assert unanswered() == before + 2
    sent = flaky.requests[-1]
    assert sent.headers["x-luma-api-key"] == "secret-test"
    assert sent.url.params["after"] == "2029-01-01T00:00:00+00:00"
    assert sent.url.params["pagination_limit"] == "100"


def test_a_connection_that_never_comes_back_raises_a_transient_error(
    trail_on_fakeredis: fakeredis.FakeRedis,
) -> None:
    flaky = Flaky(failures=10)

    with (
        client(flaky, trail_on_fakeredis) as luma,
        pytest.raises(TransientError, match="luma unreachable"),
    ):
        list(luma.upcoming_events(datetime(2029, 1, 1, tzinfo=UTC)))

    assert len(flaky.requests) == POLICY.attempts


def test_without_a_key_the_client_refuses_to_start() -> None:
    with pytest.raises(ConfigurationError, match="LUMA_API_KEY"):
        LumaClient(make_settings(), OutboundLimiter(fakeredis.FakeRedis(), "luma"))
