"""Gauges computed when Prometheus scrapes: inbox rows, dead letters, queue lengths.

Counting rows or queue messages is only right at the moment of the scrape, so these are custom
collectors instead of gauges some process keeps setting (which multiprocess mode could not sum
anyway). Each one asks its store with a short timeout, and a store that is down or slow costs that
family only: the scrape still answers, with `hookfleet_scrape_collector_up{collector}` at 0.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime

from celery import Celery
from kombu import Connection as BrokerConnection
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import Connection, Engine, func, select, text

from schemas.tables import DeadLetter, InboxStatus, WebhookEvent
from workers.dead_letters import DeadLetterStatus
from workers.logging import get_logger

log = get_logger(__name__)
# Longer than a healthy count, far shorter than Prometheus' default 10 s scrape timeout.
STATEMENT_TIMEOUT_MS = 2000
INBOX_STATUSES = (
    InboxStatus.RECEIVED,
    InboxStatus.ENQUEUED,
    InboxStatus.DISPATCHED,
    InboxStatus.PROCESSED,
    InboxStatus.IGNORED,
    InboxStatus.FAILED,
)


def _collector_up(collector: str, up: bool) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "hookfleet_scrape_collector_up",
        "1 when the collector's store answered during this scrape, 0 when it did not",
        labels=["collector"],
    )
    family.add_metric([collector], 1.0 if up else 0.0)
    return family


def _bounded(connection: Connection) -> None:
    """Cap the statement's time on PostgreSQL (SQLite reads do not block under WAL)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))


class _Guarded(ABC):
    """Runs `families`; on any failure logs it and yields only the collector_up gauge at 0."""

    name = ""

    @abstractmethod
    def families(self) -> list[GaugeMetricFamily]: ...

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            families = self.families()
        except Exception as exc:  # a scrape must answer whatever the store does
            log.warning("metrics.collector_failed", collector=self.name, error=str(exc)[:200])
            yield _collector_up(self.name, False)
            return
        yield from families
        yield _collector_up(self.name, True)


class InboxCollector(_Guarded):
    """`hookfleet_inbox_events{status}`: inbox rows by status (every status, zeros included)."""

    name = "inbox"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def families(self) -> list[GaugeMetricFamily]:
        with self.engine.begin() as connection:
            _bounded(connection)
            rows = connection.execute(
                select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)
            ).all()
        counts = dict.fromkeys(INBOX_STATUSES, 0) | {status: int(n) for status, n in rows}
        family = GaugeMetricFamily(
            "hookfleet_inbox_events", "Inbox rows (stored webhooks) by status", labels=["status"]
        )
        for status, count in sorted(counts.items()):
            family.add_metric([status], float(count))
        return [family]


class DeadLetterCollector(_Guarded):
    """`hookfleet_dead_letters{status}` and the age of the oldest letter still `dead`."""

    name = "dead_letters"

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.engine = engine
        self.clock = clock

    def families(self) -> list[GaugeMetricFamily]:
        with self.engine.begin() as connection:
            _bounded(connection)
            rows = connection.execute(
                select(DeadLetter.status, func.count()).group_by(DeadLetter.status)
            ).all()
            oldest = connection.execute(
                select(func.min(DeadLetter.last_failed_at)).where(
                    DeadLetter.status == DeadLetterStatus.DEAD
                )
            ).scalar()
        counts = dict.fromkeys(DeadLetterStatus.ALL, 0) | {status: int(n) for status, n in rows}
        by_status = GaugeMetricFamily(
            "hookfleet_dead_letters", "Dead letters by status", labels=["status"]
        )
        for status, count in sorted(counts.items()):
            by_status.add_metric([status], float(count))
        age = GaugeMetricFamily(
            "hookfleet_dead_letter_oldest_age_seconds",
            "Seconds since the oldest dead letter still `dead` failed for the last time (0: none)",
        )
        if oldest is not None:
            if isinstance(oldest, str):  # SQLite's min() bypasses the column type
                oldest = datetime.fromisoformat(oldest)
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=UTC)
        age.add_metric([], 0.0 if oldest is None else (self.clock() - oldest).total_seconds())
        return [by_status, age]


class QueueLengthCollector(_Guarded):
    """`celery_queue_length{queue_name}` (celery-exporter's name): messages waiting in the broker."""

    name = "queues"

    def __init__(self, app: Celery, queues: Sequence[str]) -> None:
        self.app = app
        self.queues = queues

    def families(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "celery_queue_length", "The number of message in broker queue.", labels=["queue_name"]
        )
        with self.app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=2)
            for queue in self.queues:
                family.add_metric([queue], float(self._length(connection, queue)))
        return [family]

    @staticmethod
    def _length(connection: BrokerConnection, queue: str) -> int:
        # A channel per queue: a broker's "no such queue" closes the channel it was asked on.
        with connection.channel() as channel:
            try:
                return int(channel.queue_declare(queue=queue, passive=True).message_count)
            except connection.channel_errors:
                return 0  # not declared yet, or (Redis) emptied: its list key is gone


class WorkerUpCollector:
    """`celery_worker_up{hostname}` (celery-exporter's name): 1 while this worker serves metrics;
    a dead worker's scrape fails, so its series goes away and `absent()` notices."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "celery_worker_up",
            "Indicates if a worker has recently sent a heartbeat.",
            labels=["hostname"],
        )
        family.add_metric([self.hostname], 1.0)
        return [family]
