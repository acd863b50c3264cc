"""Parts of `make bench` that need workers: end to end at a fixed rate, and worker throughput.

End to end: signed checkout events sent open loop at a fixed rate through the real gateway to real
Celery worker processes; each event's latency runs from its scheduled send time to the creation
time of the membership it makes (`memberships.created_at`, written by the lifecycle task in the
transaction it commits). Worker throughput: inbox rows published straight to the queue as the relay
publishes them (process_events messages of up to 16 rows), timed until every one is `processed`
(process_event and its lifecycle step, then the steps after it), against a no-op task (one per
message) drained by the same workers from the same queue.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import redis as redis_client
from celery import Celery

from tests.bench import loadgen
from tests.bench.noop_task import NOOP
from tests.signing import stripe_v1_signature
from tests.support.processes import ROOT, Service
from tests.support.stripe_fixtures import StripeCustomer, body_of
from workers.enqueue import PIPELINE_COMMANDS, publish_process_events
from workers.queues import QUEUES

WORKER_CONCURRENCY = 2  # what `make run` starts
E2E_EVENT = "checkout.session.completed"
DISPATCH_QUEUE = "dispatch"
UNACKED = "unacked"  # kombu's Redis hash of delivered, not yet acknowledged messages
# Autovacuum's analyze, played by the bench during end-to-end runs (see statistics_kept_current).
ANALYZE_EVERY_SECONDS = 5.0


def worker_service(env: Mapping[str, str], workdir: Path) -> Service:
    """Prefork workers on every queue, as `make run` starts them, with the no-op task loaded."""
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker"]
    argv += ["-Q", ",".join(QUEUES), "-c", str(WORKER_CONCURRENCY), "-P", "prefork"]
    argv += ["-I", "tests.bench.noop_task", "--without-mingle", "--without-gossip"]
    argv += ["-n", "bench@%h", "--loglevel", "WARNING"]
    return Service("worker", argv, {**env, "PYTHONPATH": str(ROOT)}, workdir / "worker.log")


def purge(database_url: str, redis: redis_client.Redis) -> None:
    """Empty the inbox and the queues while workers run; kombu's bindings in Redis stay."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("TRUNCATE webhook_events RESTART IDENTITY CASCADE")
    redis.delete(*QUEUES, UNACKED, f"{UNACKED}_index")


def vacuum(database_url: str) -> None:
    """VACUUM ANALYZE before a measured run. This machine's PostgreSQL runs without autovacuum,
    so every run would otherwise start on the dead rows and stale statistics of the runs before
    it (each round measured about a fifth slower than the one before); a production server's
    autovacuum keeps them in check."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")


# The tables autovacuum would analyze now, by its own rule: more rows changed since the last
# analyze than autovacuum_analyze_threshold + autovacuum_analyze_scale_factor x the table's rows.
DUE_FOR_ANALYZE = """
    SELECT format('%I.%I', s.schemaname, s.relname)
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE s.n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::float8
        + current_setting('autovacuum_analyze_scale_factor')::float8 * greatest(c.reltuples, 0)
"""


@contextmanager
def statistics_kept_current(
    database_url: str, every: float = ANALYZE_EVERY_SECONDS
) -> Iterator[None]:
    """Play autovacuum's analyze while a run fills emptied tables: every few seconds, the tables
    its rule says are due. Without it the workers' prepared statements kept the plans made for
    empty tables (the member lookup, an OR of two unique columns, read the whole members table for
    every signup), and PostgreSQL's CPU per event grew through the run (measured at 300/s: 0.9 ->
    2.8 ms over 60 s; flat at 1.1-1.2 ms with this). An ANALYZE of every table every 5 s, as this
    did before, cost 0.14-0.17 CPU s each with one run's inbox, and the seconds it ran lined up
    with the end-to-end latency's spikes; PostgreSQL's CPU at 300/s, three interleaved pairs of
    runs: 0.34-0.42 s/s for everything, 0.34-0.37 by the rule."""
    stop = threading.Event()

    def analyze() -> None:
        with psycopg.connect(database_url, autocommit=True) as connection:
            while not stop.wait(every):
                for (table,) in connection.execute(DUE_FOR_ANALYZE).fetchall():
                    connection.execute(f"ANALYZE {table}")

    thread = threading.Thread(target=analyze, name="bench-analyze", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def checkout_deliveries(count: int, secret: str) -> tuple[list[loadgen.Delivery], list[str]]:
    """`count` signed signups, each for a new customer; returns the deliveries and the customers."""
    stamp = int(time.time())
    deliveries, customers = [], []
    for _ in range(count):
        who = StripeCustomer.new()
        body = body_of(who.event(E2E_EVENT))
        signature = stripe_v1_signature(body, secret=secret, timestamp=stamp)
        deliveries.append((f"t={stamp},v1={signature}", body))
        customers.append(who.customer)
    return deliveries, customers


def _membership_times(database_url: str, customers: list[str]) -> dict[str, datetime]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT m.stripe_customer_id, ms.created_at FROM memberships ms"
            " JOIN members m ON m.id = ms.member_id WHERE m.stripe_customer_id = ANY(%s)",
            (customers,),
        ).fetchall()
    return {customer: created for customer, created in rows}


def _number(database_url: str, query: str, *params: Any) -> int:
    """One number from the database, on a connection of its own."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        row = connection.execute(query, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _memberships_since(database_url: str, last_id: int) -> int:
    """A cheap poll (a primary-key range): the bench's own queries must not load the database
    the fleet is measured on; the times are read once, at the end."""
    return _number(database_url, "SELECT count(*) FROM memberships WHERE id > %s", last_id)


def end_to_end(
    gateway_url: str,
    database_url: str,
    secret: str,
    *,
    rate: float,
    seconds: float,
    drain_seconds: float,
) -> dict[str, Any]:
    """One open-loop run; events still without a membership after `drain_seconds` are counted."""
    deliveries, customers = checkout_deliveries(int(rate * seconds), secret)
    last_id = _number(database_url, "SELECT max(id) FROM memberships")
    with statistics_kept_current(database_url):
        sent = loadgen.run(
            loadgen.open_loop(f"{gateway_url}/webhooks/stripe", deliveries, rate, seconds)
        )
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline:
            if _memberships_since(database_url, last_id) >= len(customers):
                break
            time.sleep(0.5)
    began = sent["began_epoch"]
    made = _membership_times(database_url, customers)
    latencies_us = [
        (made[customer].timestamp() - (began + index / rate)) * 1e6
        for index, customer in enumerate(customers)
        if customer in made
    ]
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": sent["sent"],
        "achieved_send_rate": sent["achieved_send_rate"],
        "accepted": sent["accepted"],
        "non_2xx": sent["non_2xx"],
        "ack_p99_us": sent["p99_us"],
        "memberships": len(made),
        "unfinished_after_drain": len(customers) - len(made),
        "drain_seconds": drain_seconds,
        "p50_us": loadgen.percentile(latencies_us, 50),
        "p99_us": loadgen.percentile(latencies_us, 99),
        "max_us": max(latencies_us, default=0.0),
        # A p99 over unfinished events would flatter the fleet: no p99 when any is missing.
        "valid": len(made) == len(customers) and sent["non_2xx"] == 0,
    }


def _inbox_rows(database_url: str, count: int) -> list[int]:
    """`count` stored signups, as the gateway would have committed them, not yet published."""
    rows = []
    for _ in range(count):
        who = StripeCustomer.new()
        event = who.event(E2E_EVENT)
        rows.append((event["id"], body_of(event)))
    with psycopg.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO webhook_events (provider, event_id, event_type, body, headers, status,"
            " attempts, handler_count, received_at)"
            " VALUES ('stripe', %s, %s, %s, '{}', 'received', 0, 0, now()) RETURNING id",
            [(event_id, E2E_EVENT, body) for event_id, body in rows],
            returning=True,
        )
        ids = []
        while True:
            row = cursor.fetchone()
            if row is not None:
                ids.append(int(row[0]))
            if not cursor.nextset():
                break
    return ids


def _processed(database_url: str, ids: list[int]) -> int:
    return _number(
        database_url,
        "SELECT count(*) FROM webhook_events WHERE id = ANY(%s) AND status = 'processed'",
        ids,
    )


def lifecycle_throughput(
    app: Celery, database_url: str, count: int, worker_cpu: Any, timeout: float
) -> dict[str, Any]:
    ids = _inbox_rows(database_url, count)
    vacuum(database_url)
    cpu_before = worker_cpu()
    began = time.perf_counter()
    published = publish_process_events(app, ids)
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        done = _processed(database_url, ids)
        if done == count:
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - began
    cpu = worker_cpu() - cpu_before
    return {
        "events": count,
        "published": len(published),
        "processed": done,
        "seconds": elapsed,
        "events_per_s": done / elapsed if elapsed else 0.0,
        "worker_cpu_seconds_per_1000": 1000 * cpu / done if done else None,
        "valid": done == count == len(published),
    }


def noop_throughput(
    app: Celery, redis: redis_client.Redis, count: int, worker_cpu: Any, timeout: float
) -> dict[str, Any]:
    cpu_before = worker_cpu()
    began = time.perf_counter()
    with app.producer_or_acquire() as producer, producer.batch(max_size=PIPELINE_COMMANDS):
        for index in range(count):
            app.send_task(NOOP, args=[index], producer=producer, queue=DISPATCH_QUEUE)
    deadline = time.monotonic() + timeout
    drained = False
    while time.monotonic() < deadline:
        # Late acknowledgement: a message leaves `unacked` only when its task has finished.
        if redis.llen(DISPATCH_QUEUE) == 0 and redis.hlen(UNACKED) == 0:
            drained = True
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - began
    cpu = worker_cpu() - cpu_before
    return {
        "tasks": count,
        "seconds": elapsed,
        "tasks_per_s": count / elapsed if drained and elapsed else 0.0,
        "worker_cpu_seconds_per_1000": 1000 * cpu / count if drained else None,
        "valid": drained,
    }
