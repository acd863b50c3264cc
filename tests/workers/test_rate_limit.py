"""The token bucket's arithmetic, on fakeredis running the same Lua script Redis would."""

from __future__ import annotations

import fakeredis
import pytest

from workers.rate_limit import TokenBucket, retry_after_seconds

T0 = 1_000_000.0


@pytest.fixture
def bucket() -> TokenBucket:
    return TokenBucket(fakeredis.FakeRedis(), prefix="test:ratelimit:")


def test_allows_capacity_takes_then_says_how_long_to_wait(bucket: TokenBucket) -> None:
    takes = [bucket.take("k", capacity=3, refill_per_second=0.5, now=T0) for _ in range(3)]

    refused = bucket.take("k", capacity=3, refill_per_second=0.5, now=T0)

    assert takes == [0.0, 0.0, 0.0]
    assert refused == pytest.approx(2.0)  # one token at 0.5 per second
    assert retry_after_seconds(refused) == 2


def test_a_refused_take_spends_nothing(bucket: TokenBucket) -> None:
    bucket.take("k", capacity=1, refill_per_second=1.0, now=T0)

    first = bucket.take("k", capacity=1, refill_per_second=1.0, now=T0 + 0.25)
    second = bucket.take("k", capacity=1, refill_per_second=1.0, now=T0 + 0.5)

    assert first == pytest.approx(0.75)
    assert second == pytest.approx(0.5)


def test_refills_with_time_up_to_capacity(bucket: TokenBucket) -> None:
    for _ in range(2):
        bucket.take("k", capacity=2, refill_per_second=1.0, now=T0)

    assert bucket.take("k", capacity=2, refill_per_second=1.0, now=T0 + 0.5) == pytest.approx(0.5)
    assert bucket.take("k", capacity=2, refill_per_second=1.0, now=T0 + 1.0) == 0.0
    # A long idle spell refills to capacity, not beyond.
    later = T0 + 3600
    takes = [bucket.take("k", capacity=2, refill_per_second=1.0, now=later) for _ in range(3)]
    assert takes[:2] == [0.0, 0.0]
    assert takes[2] == pytest.approx(1.0)


def test_separate_keys_are_independent(bucket: TokenBucket) -> None:
    bucket.take("a", capacity=1, refill_per_second=0.1, now=T0)

    assert bucket.take("a", capacity=1, refill_per_second=0.1, now=T0) > 0
    assert bucket.take("b", capacity=1, refill_per_second=0.1, now=T0) == 0.0


def test_an_idle_bucket_expires_once_it_would_be_full_again() -> None:
    client = fakeredis.FakeRedis()
    bucket = TokenBucket(client, prefix="test:ratelimit:")

    bucket.take("k", capacity=10, refill_per_second=1.0, now=T0)

    assert 0 < client.ttl("test:ratelimit:k") <= 11


def test_the_server_clock_is_used_when_no_time_is_given(bucket: TokenBucket) -> None:
    assert bucket.take("k", capacity=1, refill_per_second=1 / 60) == 0.0
    assert bucket.take("k", capacity=1, refill_per_second=1 / 60) == pytest.approx(60, abs=1)


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one() -> None:
    assert [retry_after_seconds(w) for w in (0.01, 1.0, 1.2, 29.9)] == [1, 1, 2, 30]


@pytest.mark.parametrize(("capacity", "rate"), [(0, 1.0), (1, 0.0)])
def test_a_bucket_must_hold_and_refill_tokens(
    bucket: TokenBucket, capacity: int, rate: float
) -> None:
    with pytest.raises(ValueError, match="bucket"):
        bucket.take("k", capacity=capacity, refill_per_second=rate)
