"""The fleet-wide outbound limiter and the bounded retries around one provider call, on fakeredis
(the same Lua scripts Redis would run); two limiters on one Redis play two worker processes."""

from __future__ import annotations

import time

import fakeredis
import pytest
from prometheus_client import REGISTRY

from workers.errors import PermanentError, TransientError
from workers.outbound_limits import (
    Limit,
    OutboundLimiter,
    RetryPolicy,
    call_with_limits,
)

LUMA = Limit("requests", 200.0)  # one call every 0.3 s
FAST = Limit("fast", 600_000.0)  # for tests of retries, not of spacing


class FakeTime:
    """A clock the limiter's sleeps move forward (the bucket runs on it instead of Redis TIME)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def limiter_on(
    server: fakeredis.FakeServer, fake: FakeTime | None = None, provider: str = "luma"
) -> OutboundLimiter:
    return OutboundLimiter(
        fakeredis.FakeRedis(server=server),
        provider,
        sleep=fake.sleep if fake else time.sleep,
        clock=fake.clock if fake else None,
    )


def waits(provider: str) -> float:
    return (
        REGISTRY.get_sample_value("hookfleet_rate_limit_waits_total", {"provider": provider}) or 0
    )


def test_calls_are_spaced_at_the_provider_rate(server: fakeredis.FakeServer) -> None:
    fake = FakeTime()
    limiter = limiter_on(server, fake)

    waited = [limiter.acquire(LUMA) for _ in range(4)]

    assert waited[0] == 0.0
    assert waited[1:] == [pytest.approx(0.3)] * 3


def test_two_processes_share_one_bucket(server: fakeredis.FakeServer) -> None:
    fake = FakeTime()
    first, second = limiter_on(server, fake), limiter_on(server, fake)

    assert first.acquire(LUMA) == 0.0
    assert second.acquire(LUMA) == pytest.approx(0.3)


def test_each_limit_has_its_own_bucket(server: fakeredis.FakeServer) -> None:
    fake = FakeTime()
    limiter = limiter_on(server, fake, provider="slack")

    limiter.acquire(Limit("tier2", 20.0))

    assert limiter.acquire(Limit("tier3", 50.0)) == 0.0
    assert limiter.acquire(Limit("tier2", 20.0)) == pytest.approx(3.0)


def test_a_block_set_by_one_process_pauses_the_others(server: fakeredis.FakeServer) -> None:
    told, other = limiter_on(server), limiter_on(server)

    told.block(0.4)
    blocked = other.blocked_for()
    waited = other.acquire(LUMA)

    assert 0.0 < blocked <= 0.4
    assert waited >= 0.3  # it slept the block out (the bucket itself was full)
    assert other.blocked_for() == 0.0


def test_a_shorter_block_never_shortens_a_longer_one(server: fakeredis.FakeServer) -> None:
    limiter = limiter_on(server)

    limiter.block(30.0)
    limiter.block(1.0)

    assert limiter.blocked_for() > 29.0


def test_blocks_are_per_provider(server: fakeredis.FakeServer) -> None:
    limiter_on(server, provider="luma").block(30.0)

    assert limiter_on(server, provider="slack").blocked_for() == 0.0


def test_every_wait_is_counted_for_its_provider(server: fakeredis.FakeServer) -> None:
    fake = FakeTime()
    limiter = limiter_on(server, fake, provider="counted")
    before = waits("counted")

    limiter.acquire(LUMA)
    limiter.acquire(LUMA)
    limiter.acquire(LUMA)

    assert waits("counted") == before + 2
    seconds = REGISTRY.get_sample_value(
        "hookfleet_rate_limit_wait_seconds_total", {"provider": "counted"}
    )
    assert seconds is not None
    assert seconds >= 0.6 - 1e-9


class Script:
    """A provider call that fails as told, then answers."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "answer"


POLICY = RetryPolicy(attempts=3, rate_limited_attempts=4, backoff_seconds=0.01)


def test_a_429_blocks_the_provider_for_everyone_and_the_call_is_tried_again(
    server: fakeredis.FakeServer,
) -> None:
    limiter, other = limiter_on(server), limiter_on(server)
    call = Script(TransientError("luma answered 429", retry_after=0.3))
    slept: list[float] = []

    result = call_with_limits(limiter, LUMA, call, policy=POLICY, what="GET x", sleep=slept.append)

    assert result == "answer"
    assert call.calls == 2
    # The retry itself did not sleep: it waited out the shared block in the limiter, as would any
    # other process calling Luma meanwhile.
    assert slept == [0.0]
    assert limiter_on(server).blocked_for() == 0.0
    assert other.acquire(Limit("other", 600.0)) == 0.0


def test_server_errors_are_retried_with_backoff_then_raised(server: fakeredis.FakeServer) -> None:
    call = Script(*(TransientError(f"luma answered 503 ({n})") for n in range(5)))
    slept: list[float] = []

    with pytest.raises(TransientError, match=r"503 \(2\)"):
        call_with_limits(
            limiter_on(server, FakeTime()), FAST, call, policy=POLICY, what="x", sleep=slept.append
        )

    assert call.calls == POLICY.attempts
    assert len(slept) == POLICY.attempts - 1
    assert all(delay > 0 for delay in slept)


def test_rate_limits_and_failures_have_bounds_of_their_own(server: fakeredis.FakeServer) -> None:
    storm = [TransientError("429", retry_after=0.001) for _ in range(3)]
    call = Script(TransientError("503"), *storm, TransientError("503"))

    result = call_with_limits(
        limiter_on(server), FAST, call, policy=POLICY, what="x", sleep=lambda _: None
    )

    # 5 failed tries in all, more than either bound, but 2 failures (< 3) and 3 refusals (< 4).
    assert result == "answer"
    assert call.calls == 6


def test_a_rate_limit_storm_longer_than_its_bound_is_raised(server: fakeredis.FakeServer) -> None:
    call = Script(*(TransientError("429", retry_after=0.001) for _ in range(10)))

    with pytest.raises(TransientError, match="429"):
        call_with_limits(
            limiter_on(server), FAST, call, policy=POLICY, what="x", sleep=lambda _: None
        )

    assert call.calls == POLICY.rate_limited_attempts


def test_permanent_errors_are_not_retried(server: fakeredis.FakeServer) -> None:
    call = Script(PermanentError("luma answered 404"))

    with pytest.raises(PermanentError):
        call_with_limits(
            limiter_on(server), FAST, call, policy=POLICY, what="x", sleep=lambda _: None
        )

    assert call.calls == 1
