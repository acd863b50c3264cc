"""kombu's Redis transport, with channels that a closed transport cannot crash.

On losing the broker, Celery 5.7.0's consumer collects its connection and then closes it again.
Collecting closes each channel and detaches the transport; when Redis is gone, one channel's close
fails partway (its pending BRPOP, the control channel's queue delete), the loop over channels stops
there, and a channel holding an unacknowledged task stays open. The second close then restores that
task through a new pool built from the detached transport's `client`, which is None, and the
AttributeError ends the worker. Here that restore fails as what it is, a connection error, which
kombu's close ignores: the task stays in Redis's unacked index, where the next consumer's
restore_visible finds it. Celery 5.6.3 only collected; this can go when the second close does.
"""

from __future__ import annotations

from typing import Any

from kombu import transport as kombu_transports
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

# The URL schemes kombu maps to its plain Redis transport (Sentinel keeps its own).
SCHEMES = ("redis", "rediss")


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection is closed")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
        return params


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


def register() -> None:
    """Make `redis://` and `rediss://` broker URLs use this transport, everywhere in the process:
    kombu resolves a URL's scheme through its alias table, so the URL itself stays as it is. A
    scheme already resolved is dropped from kombu's cache, or it would keep the stock class."""
    for scheme in SCHEMES:
        kombu_transports.TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
        kombu_transports._transport_cache.pop(scheme, None)
