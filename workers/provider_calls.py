"""What each provider's API has answered lately: a counter for Prometheus and a Redis trail for the
health page.

Every outbound client calls `record_provider_call` once per HTTP answer (or failure to get one). The
Redis side keeps the last successful and failed call times and per-minute call / error counts for two
hours, so `recent_provider_calls` can say "Stripe: 412 calls, 3 errors in the last hour, last success
2 minutes ago" without a time-series database. Recording never raises: a Redis outage must not turn a
successful provider call into a failed task.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis as redis_client
from redis.exceptions import RedisError

from workers import runtime
from workers.logging import get_logger
from workers.metrics import PROVIDER_API_CALLS

log = get_logger(__name__)
KEY_PREFIX = "hookfleet:provider_calls:{provider}"
RETENTION_SECONDS = 2 * 3600
MINUTE = 60


@dataclass(frozen=True)
class ProviderCallStats:
    last_ok_at: datetime | None
    last_error_at: datetime | None
    calls_last_hour: int
    errors_last_hour: int


def is_error(status: int | None) -> bool:
    """No answer, or an answer that refused the call (4xx, 5xx)."""
    return status is None or status >= 400


def _keys(provider: str, minute: int) -> tuple[str, str, str]:
    base = KEY_PREFIX.format(provider=provider)
    return f"{base}:last", f"{base}:calls:{minute}", f"{base}:errors:{minute}"


def record_provider_call(provider: str, status: int | None, *, now: float | None = None) -> None:
    """Count one answer (`status`) or failure to get one (None) from `provider`'s API."""
    PROVIDER_API_CALLS.labels(
        provider=provider, status="error" if status is None else str(status)
    ).inc()
    now = time.time() if now is None else now
    last, calls, errors = _keys(provider, int(now // MINUTE))
    try:
        with runtime.redis().pipeline(transaction=False) as pipe:
            pipe.hset(last, "error_at" if is_error(status) else "ok_at", repr(now))
            pipe.expire(last, 30 * 86_400)
            pipe.incr(calls)
            pipe.expire(calls, RETENTION_SECONDS)
            if is_error(status):
                pipe.incr(errors)
                pipe.expire(errors, RETENTION_SECONDS)
            pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("provider_call_not_recorded", provider=provider, error=str(exc))


def _when(raw: bytes | None) -> datetime | None:
    return None if raw is None else datetime.fromtimestamp(float(raw), UTC)


def recent_provider_calls(
    redis: redis_client.Redis, provider: str, *, now: float | None = None
) -> ProviderCallStats:
    """The provider's trail for the hour before `now` (the current minute included)."""
    current = int((time.time() if now is None else now) // MINUTE)
    minutes = range(current - 59, current + 1)
    last_key = _keys(provider, current)[0]
    call_keys = [_keys(provider, minute)[1] for minute in minutes]
    error_keys = [_keys(provider, minute)[2] for minute in minutes]
    with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(last_key, ["ok_at", "error_at"])
        pipe.mget(call_keys)
        pipe.mget(error_keys)
        (ok_at, error_at), calls, errors = pipe.execute()
    return ProviderCallStats(
        last_ok_at=_when(ok_at),
        last_error_at=_when(error_at),
        calls_last_hour=sum(int(count) for count in calls if count is not None),
        errors_last_hour=sum(int(count) for count in errors if count is not None),
    )
