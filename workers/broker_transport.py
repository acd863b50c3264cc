"""kombu's Redis transport, made to lose no worker, and no task it can keep, when Redis goes away
mid-delivery.

Two gaps of kombu 5.7 with Celery 5.7.0, both seen as a Redis restart under a backlog (a third
stays: a task Redis pops for a BRPOP as it stops, whose answer never leaves Redis, is gone):

- **A task taken but not recorded.** BRPOP takes a message off its queue before the worker records
  it as unacknowledged; if Redis stops between the two, the record fails and kombu drops the only
  copy, the one in this process. Here that message is held and put back at the head of its queue
  by the next channel that reaches Redis (if Redis had recorded it after all, it runs twice: at
  least once, like every delivery here; a worker that dies holding it still loses it).
- **A worker ended by a second close.** On losing the broker, Celery's consumer collects its
  connection (which closes each channel and detaches the transport) and then closes it again. When
  one channel's close fails partway (its pending BRPOP, the control queue's delete), the channels
  after it stay open, and the second close restores their unacknowledged tasks through a pool
  built from the detached transport's `client`, None: an AttributeError that ends the worker.
  Here that is the connection error it is, which kombu's close ignores; the tasks stay in Redis's
  unacked index for the next consumer's restore_visible. Celery 5.6.3 only collected; this part
  can go when the second close does.
"""

from __future__ import annotations

import threading
from typing import Any

from kombu import transport as kombu_transports
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

from workers.logging import get_logger

log = get_logger(__name__)

# The URL schemes kombu maps to its plain Redis transport (Sentinel keeps its own).
SCHEMES = ("redis", "rediss")

# Messages taken off their queue that Redis never recorded as unacknowledged: this process holds
# the only copy (payload, exchange, routing key) until a channel puts them back.
_held: list[tuple[dict[str, Any], str, str]] = []
_held_lock = threading.Lock()


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            super().append(message, delivery_tag)
        except self.channel.connection_errors:
            delivery = message.delivery_info
            with _held_lock:
                _held.append((message._raw, delivery["exchange"], delivery["routing_key"]))
            log.warning("broker.message_held", routing_key=delivery["routing_key"])
            raise


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # it has pinged Redis: Redis answers
        self._put_back_held()

    def _put_back_held(self) -> None:
        """Held messages go back to the head of their queues, as kombu restores unacked ones; if
        Redis goes away again first, they stay held for the next channel."""
        with _held_lock:
            held = list(_held)
            _held.clear()
        if not held:
            return
        try:
            with self.conn_or_acquire() as client, client.pipeline() as pipe:
                for payload, exchange, routing_key in held:
                    self._do_restore_message(payload, exchange, routing_key, pipe, leftmost=True)
                pipe.execute()
        except self.connection_errors as exc:
            with _held_lock:
                _held.extend(held)
            log.warning("broker.messages_still_held", count=len(held), error=str(exc)[:200])
            return
        log.warning("broker.held_messages_put_back", count=len(held))

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
