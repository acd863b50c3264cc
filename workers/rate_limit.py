"""A token bucket in Redis: per-caller rate limits shared by every gateway process.

The whole take (read the bucket, refill it for the time elapsed, spend a token, write it back, set
its expiry) is one Lua script. Redis runs a script atomically, so two gateway processes taking from
the same bucket at once cannot both read the old count and both spend the same token, which a
client-side read-modify-write would allow without WATCH/MULTI retries; and it costs one round-trip
per request instead of several.

Time comes from the Redis server's clock (`TIME`) unless the caller passes `now`, so gateway hosts
whose clocks disagree still share one timeline. A bucket left idle expires once it would have refilled
completely, since an absent bucket is read as a full one.
"""

from __future__ import annotations

import math
from typing import Any

import redis

DEFAULT_PREFIX = "hookfleet:ratelimit:"

# KEYS[1]: the bucket (a hash of `tokens` and `ts`).
# ARGV: capacity, refill per second, now in seconds ("" = the server's clock).
# Returns the seconds to wait as a string (a Lua number would come back truncated to an integer);
# "0" means a token was taken.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if now == nil then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
  ts = now
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return tostring(wait)
"""


class TokenBucket:
    """`take` spends one token from a named bucket, or says how long until one is available."""

    def __init__(self, redis_client: redis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis_client
        self.prefix = prefix
        self._take: Any = redis_client.register_script(_TAKE)

    def take(
        self, key: str, *, capacity: int, refill_per_second: float, now: float | None = None
    ) -> float:
        """0.0 when a token was taken; otherwise the seconds until the next token (nothing spent)."""
        if capacity < 1:
            raise ValueError("a bucket holds at least one token")
        if refill_per_second <= 0:
            raise ValueError("a bucket must refill")
        wait = self._take(
            keys=[self.prefix + key],
            args=[capacity, repr(float(refill_per_second)), "" if now is None else repr(now)],
        )
        return max(0.0, float(wait))


def retry_after_seconds(wait: float) -> int:
    """The `Retry-After` value for a wait: whole seconds, rounded up, never 0."""
    return max(1, math.ceil(wait))
