"""Outbound rate limits shared by the whole fleet: a Redis token bucket per provider limit, and a
shared "blocked until" that a provider's 429 sets, so every worker process pauses, not only the one
that was told.

Each provider call first waits for the provider's block (if any) to pass, then takes a token from
the bucket of its limit (`workers.rate_limit.TokenBucket`, an atomic Lua take on the Redis clock).
Buckets hold one token: calls are spaced evenly at the documented rate instead of bursting, so any
minute-long window sees at most the limit, whichever way the provider counts its minutes.

`call_with_limits` wraps one call: limiter first, then the call; a 429 (`TransientError` with
`retry_after`) blocks the provider for everyone and is tried again (bounded by
`rate_limited_attempts`); 5xx and connection errors back off exponentially with jitter (bounded by
`attempts`); anything else goes straight up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from tenacity import RetryCallState, Retrying, retry_if_exception_type
from tenacity.wait import wait_exponential_jitter

from workers.errors import TransientError
from workers.logging import get_logger
from workers.metrics import RATE_LIMIT_WAIT_SECONDS, RATE_LIMIT_WAITS
from workers.rate_limit import TokenBucket

log = get_logger(__name__)
T = TypeVar("T")

KEY_PREFIX = "hookfleet:outbound:"
# A 429 without Retry-After blocks the provider this long.
DEFAULT_RETRY_AFTER_SECONDS = 1.0
# Waits are slept in slices, so a block set by another process while we sleep is noticed.
MAX_SLEEP_SLICE_SECONDS = 5.0
# ... and never in slices so thin that float rounding of the bucket's clock could keep it waiting.
MIN_SLEEP_SECONDS = 0.001

# KEYS[1]: the block key. ARGV[1]: milliseconds. Only ever lengthens the block.
_BLOCK = """
local ms = tonumber(ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
end
return left
"""


@dataclass(frozen=True)
class Limit:
    """One of a provider's limits: a bucket name (a Slack tier, Luma's per-key limit) and its rate."""

    bucket: str
    per_minute: float


class OutboundLimiter:
    """The fleet-wide limiter of one provider (`luma`, `slack`)."""

    def __init__(
        self,
        redis_client: redis.Redis,
        provider: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] | None = None,
        prefix: str = KEY_PREFIX,
    ) -> None:
        """`clock` None: the bucket runs on the Redis server's clock (what the fleet shares)."""
        self.redis = redis_client
        self.provider = provider
        self._sleep = sleep
        self._clock = clock
        self._prefix = f"{prefix}{provider}:"
        self._bucket = TokenBucket(redis_client, prefix=self._prefix)
        self._block: Any = redis_client.register_script(_BLOCK)

    @property
    def block_key(self) -> str:
        return f"{self._prefix}blocked"

    def blocked_for(self) -> float:
        """Seconds until the provider's shared block ends (0.0 when it is not blocked)."""
        left = int(self.redis.pttl(self.block_key))
        return max(0.0, left / 1000) if left > 0 else 0.0

    def block(self, seconds: float) -> None:
        """Pause every process's calls to the provider for `seconds` (a 429's Retry-After);
        a longer block already in place is kept."""
        ms = max(1, int(seconds * 1000))
        self._block(keys=[self.block_key], args=[ms])
        log.warning("outbound.blocked", provider=self.provider, seconds=round(seconds, 3))

    def acquire(self, limit: Limit) -> float:
        """Wait for the block to end and a token of `limit`; return the seconds waited."""
        waited = 0.0
        while True:
            wait = self.blocked_for()
            if wait <= 0:
                wait = self._bucket.take(
                    limit.bucket,
                    capacity=1,
                    refill_per_second=limit.per_minute / 60.0,
                    now=self._clock() if self._clock else None,
                )
                if wait <= 0:
                    break
            wait = min(max(wait, MIN_SLEEP_SECONDS), MAX_SLEEP_SLICE_SECONDS)
            self._sleep(wait)
            waited += wait
        if waited > 0:
            RATE_LIMIT_WAITS.labels(provider=self.provider).inc()
            RATE_LIMIT_WAIT_SECONDS.labels(provider=self.provider).inc(waited)
        return waited


@dataclass(frozen=True)
class RetryPolicy:
    """How often one call is tried: `attempts` for 5xx / connection errors, `rate_limited_attempts`
    for 429s; backoff starts at `backoff_seconds`, doubles, with jitter, up to `backoff_max_seconds`."""

    attempts: int = 5
    rate_limited_attempts: int = 10
    backoff_seconds: float = 1.0
    backoff_max_seconds: float = 30.0


def _is_rate_limited(exc: BaseException | None) -> bool:
    return isinstance(exc, TransientError) and exc.retry_after is not None


class _Stop:
    """Stop when either kind of failure has used up its own attempts."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.limited = 0
        self.failed = 0

    def __call__(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome is not None else None
        if _is_rate_limited(exc):
            self.limited += 1
            return self.limited >= self.policy.rate_limited_attempts
        self.failed += 1
        return self.failed >= self.policy.attempts


def call_with_limits(
    limiter: OutboundLimiter,
    limit: Limit,
    call: Callable[[], T],
    *,
    policy: RetryPolicy,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `call` under the fleet's limit, retrying 429s (after the shared block) and transient
    failures (after backoff) within `policy`; the last error is raised when they run out."""
    backoff = wait_exponential_jitter(
        multiplier=policy.backoff_seconds,
        max=policy.backoff_max_seconds,
        jitter=policy.backoff_seconds,
    )

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            # Every process waits this out in `acquire`; nothing more to sleep here.
            limiter.block(exc.retry_after or DEFAULT_RETRY_AFTER_SECONDS)
            return 0.0
        return float(backoff(state))

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "outbound.retrying",
            provider=limiter.provider,
            call=what,
            attempt=state.attempt_number,
            error=str(exc)[:200],
        )

    def limited_call() -> T:
        limiter.acquire(limit)
        return call()

    retrying = Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=_Stop(policy),
        wait=wait,
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    return retrying(limited_call)
