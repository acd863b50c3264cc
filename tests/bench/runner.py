"""The bench runner: own database and Redis, three servers run alike, wrk (or Python) load, checks.

`python -m tests.bench` (full) or `python -m tests.bench --smoke` (seconds; proves the harness).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis as redis_client

from schemas.settings import Settings
from tests.bench import fleet_bench, loadgen
from tests.bench.box_cpu import cpu_seconds, cpu_split, database_backends, proc_tree
from tests.bench.naive_app import QUEUE as NAIVE_QUEUE
from tests.bench.naive_app import TABLE_DDL as NAIVE_DDL
from tests.signing import stripe_v1_signature
from tests.support.databases import migrated_database
from tests.support.processes import (
    ROOT,
    Service,
    free_port,
    gateway_service,
    redis_service,
    redis_url_of,
    wait_for_http,
    wait_until,
)
from tests.support.stripe_fixtures import fixture_files
from workers.celery_app import make_celery
from workers.enqueue import PROCESS_EVENTS

STRIPE_SECRET = "whsec_bench_8f2e1c0b9a7d6e5f4c3b2a1908f7e6d5"
SERVERS = ("bare", "naive", "hookfleet")
HOOKFLEET_QUEUE = "dispatch"  # tasks.dispatch.process_event is routed there
ENQUEUED_STATUSES = ("enqueued", "dispatched", "processed", "ignored")
LUA_SCRIPT = Path(__file__).with_name("post.lua")
ID_PLACEHOLDER = "evt_BENCHPLACEHOLDER"
RELAY_CATCH_UP_SECONDS = 30.0
CORES = os.cpu_count() or 1
CPU_PARTS = ("server", "postgresql", "redis", "load generator", "other", "box")


@dataclass(frozen=True)
class Config:
    smoke: bool
    runs: int
    duration: float
    connections: int
    loadgen: str  # "wrk" or "python"
    output: Path
    open_loop_seconds: float
    pool_floor: int
    e2e_rate: float
    e2e_seconds: float
    e2e_drain_seconds: float
    throughput_events: int

    @property
    def threads(self) -> int:
        return max(1, min(2, self.connections, os.cpu_count() or 1))


@dataclass
class Server:
    name: str
    service: Service
    url: str
    health: str
    runs: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------- requests


def _templates() -> list[str]:
    """The recorded Stripe events, compact (about 2.3-2.7 KB), with a placeholder for the id."""
    out = []
    for path in fixture_files():
        event = json.loads(path.read_text())
        event["id"] = ID_PLACEHOLDER
        out.append(json.dumps(event, separators=(",", ":")))
    return out


TEMPLATES = _templates()


def signed_deliveries(count: int) -> list[loadgen.Delivery]:
    """`count` signed deliveries, each with a fresh event id, signed now (well inside ±300 s)."""
    stamp = int(time.time())
    tag = secrets.token_hex(4)
    deliveries: list[loadgen.Delivery] = []
    for index in range(count):
        text = TEMPLATES[index % len(TEMPLATES)].replace(ID_PLACEHOLDER, f"evt_B{tag}{index:08d}")
        body = text.encode()
        signature = stripe_v1_signature(body, secret=STRIPE_SECRET, timestamp=stamp)
        deliveries.append((f"t={stamp},v1={signature}", body))
    return deliveries


def write_pool(path: Path, deliveries: Sequence[loadgen.Delivery]) -> None:
    with path.open("wb") as out:
        for signature, body in deliveries:
            out.write(signature.encode() + b"\t" + body + b"\n")


# ---------------------------------------------------------------- processes


def peak_rss_mib(pid: int) -> float:
    """Sum of VmHWM (peak resident set) over the process tree."""
    total_kib = 0
    for member in proc_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024


def uvicorn_service(
    name: str, target: str, port: int, env: dict[str, str], workdir: Path
) -> Service:
    argv = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--no-access-log"]
    return Service(name, argv, env, workdir / f"{name}-{port}.log")


# ---------------------------------------------------------------- infrastructure


@contextmanager
def own_database() -> Iterator[str]:
    with migrated_database("hookfleet_bench") as url:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(NAIVE_DDL)
        yield url


def reset(database_url: str, redis: redis_client.Redis) -> None:
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("TRUNCATE webhook_events, naive_events RESTART IDENTITY CASCADE")
    redis.flushdb()


def queued_events(redis: redis_client.Redis, queue: str) -> int:
    """Events waiting in `queue`: a process_events message carries several inbox ids."""
    count = 0
    for raw in redis.lrange(queue, 0, -1):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        count += len(args[0]) if message["headers"]["task"] == PROCESS_EVENTS else 1
    return count


def check(
    server: str, result: dict[str, Any], database_url: str, redis: redis_client.Redis, slack: int
) -> list[str]:
    """Every accepted event stored exactly once and enqueued; returns the failures found."""
    if server == "bare":
        return []
    time.sleep(1.0)  # requests in flight when the load stopped finish
    if server == "hookfleet":
        accepted = int(result["accepted"])
        queue = HOOKFLEET_QUEUE
        query = (
            "SELECT count(*), count(DISTINCT event_id),"
            " count(*) FILTER (WHERE status = ANY(%s)) FROM webhook_events"
        )
        params: tuple[Any, ...] = (list(ENQUEUED_STATUSES),)
    else:
        accepted = int(result["accepted"]) + int(result["other_2xx"])
        queue = NAIVE_QUEUE
        query, params = "SELECT count(*), count(DISTINCT event_id), count(*) FROM naive_events", ()
    # hookfleet publishes after acknowledging (the relay): give it time to catch up, bounded.
    deadline = time.monotonic() + RELAY_CATCH_UP_SECONDS
    while True:
        with psycopg.connect(database_url, autocommit=True) as connection:
            row = connection.execute(query, params).fetchone()
        assert row is not None
        rows, distinct, enqueued = (int(v) for v in row)
        queued = queued_events(redis, queue) if server == "hookfleet" else int(redis.llen(queue))
        if (enqueued == rows == queued) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    result["check"] = {
        "accepted": accepted,
        "rows": rows,
        "distinct_event_ids": distinct,
        "rows_enqueued": enqueued,
        "queue_length": queued,
        "in_flight_at_cutoff": rows - accepted,
    }
    failures = []
    if rows < accepted:
        failures.append(f"{accepted - rows} accepted events missing from the inbox")
    if rows - accepted > slack:
        failures.append(f"{rows - accepted} rows more than accepted (over {slack} in flight)")
    if distinct != rows:
        failures.append(f"{rows - distinct} events stored more than once")
    if enqueued != rows:
        failures.append(f"{rows - enqueued} stored events not marked enqueued")
    if queued != rows:
        failures.append(f"queue {queue!r} holds {queued} events for {rows} stored events")
    if result.get("wrapped"):
        failures.append("request pool exhausted: ids repeated (raise the pool)")
    return failures


# ---------------------------------------------------------------- load


def run_wrk(url: str, pool: Path, config: Config, duration: float) -> dict[str, Any]:
    argv = ["wrk", "-t", str(config.threads), "-c", str(config.connections)]
    argv += ["-d", f"{max(1, round(duration))}s", "--timeout", "10s", "-s", str(LUA_SCRIPT), url]
    argv += ["--", str(pool), str(config.threads)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            return result
    raise RuntimeError(f"wrk gave no result:\n{done.stdout}\n{done.stderr}")


def measured_parts(
    server: Server, database_url: str, redis: redis_client.Redis
) -> dict[str, Callable[[], list[int]]]:
    """The processes a run's CPU is split across: the server's, the PostgreSQL backends of the
    bench's database and the bench's own Redis (the load generator and the box come with it)."""
    pid = server.service.process.pid if server.service.process else 0
    redis_pid = int(redis.info("server")["process_id"])
    return {
        "server": lambda: proc_tree(pid),
        "postgresql": lambda: database_backends(database_url),
        "redis": lambda: [redis_pid],
    }


def per_request(split: dict[str, float], requests: int) -> dict[str, float] | None:
    return {part: 1e6 * used / requests for part, used in split.items()} if requests else None


def one_run(
    server: Server,
    config: Config,
    pool_size: int,
    workdir: Path,
    database_url: str,
    redis: redis_client.Redis,
    duration: float | None = None,
) -> dict[str, Any]:
    duration = duration or config.duration
    reset(database_url, redis)
    deliveries = signed_deliveries(pool_size)
    url = f"{server.url}/webhooks/stripe"
    pool = workdir / f"pool-{server.name}.txt"
    if config.loadgen == "wrk":
        write_pool(pool, deliveries)
    with cpu_split(measured_parts(server, database_url, redis)) as split:
        if config.loadgen == "wrk":
            result = run_wrk(url, pool, config, duration)
        else:
            result = loadgen.run(loadgen.closed_loop(url, deliveries, config.connections, duration))
    pool.unlink(missing_ok=True)
    seconds = result["duration_us"] / 1e6
    requests = result["requests"]
    result["rps"] = requests / seconds if seconds else 0.0
    result["server_cpu_seconds"] = split["server"]
    result["cpu_seconds_per_1000"] = 1000 * split["server"] / requests if requests else None
    result["cpu_us_per_request"] = per_request(split, requests)
    result["pool_size"] = pool_size
    failures = check(server.name, result, database_url, redis, slack=config.connections)
    result["failures"] = failures
    result["valid"] = not failures
    for failure in failures:
        print(f"FAILURE [{server.name}]: {failure}", flush=True)
    return result


# ---------------------------------------------------------------- report


def spread(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(server: Server) -> dict[str, Any]:
    valid = [r for r in server.runs if r["valid"]]
    measured = [r for r in valid if r["cpu_us_per_request"] is not None]
    return {
        "runs": len(server.runs),
        "valid_runs": len(valid),
        "lost_events": len(valid) != len(server.runs),
        "rps": spread([r["rps"] for r in valid]),
        "p50_ms": spread([r["p50_us"] / 1000 for r in valid]),
        "p99_ms": spread([r["p99_us"] / 1000 for r in valid]),
        "cpu_seconds_per_1000": spread(
            [r["cpu_seconds_per_1000"] for r in valid if r["cpu_seconds_per_1000"] is not None]
        ),
        "cpu_us_per_request": {
            part: spread([r["cpu_us_per_request"][part] for r in measured]) for part in CPU_PARTS
        },
    }


def ratio(summaries: dict[str, Any], servers: dict[str, Server], a: str, b: str) -> dict[str, Any]:
    top, bottom = summaries[a]["rps"]["median"], summaries[b]["rps"]["median"]
    per_round = [
        x["rps"] / y["rps"]
        for x, y in zip(servers[a].runs, servers[b].runs, strict=False)
        if x["valid"] and y["valid"] and y["rps"]
    ]
    return {
        "of_medians": top / bottom if top and bottom else None,
        "per_round": spread(per_round),
    }


def box_budget(summaries: dict[str, Any], share: float = 0.4) -> dict[str, Any]:
    """The box's CPU per request that hookfleet may spend at `share` of the bare app's rate (every
    core busy, the load generator included), against what it spent."""
    bare = summaries["bare"]["rps"]["median"]
    spent = summaries["hookfleet"]["cpu_us_per_request"]["box"]["median"]
    return {
        "cores": CORES,
        "share_of_bare": share,
        "rate": share * bare if bare else None,
        "budget_us_per_request": CORES * 1e6 / (share * bare) if bare else None,
        "hookfleet_box_us_per_request": spent,
    }


def _fmt(s: dict[str, Any], digits: int = 1) -> str:
    if s["median"] is None:
        return "n/a"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def print_table(results: dict[str, Any]) -> None:
    summaries = results["acceptance"]["servers"]
    print("\nAcceptance, closed loop: median (min-max) over runs", flush=True)
    print(f"{'server':<10} {'req/s':>24} {'p50 ms':>22} {'p99 ms':>22} {'cpu s/1000':>20}")
    for name in SERVERS:
        s = summaries[name]
        flag = "  LOST EVENTS" if s["lost_events"] else ""
        print(
            f"{name:<10} {_fmt(s['rps'], 0):>24} {_fmt(s['p50_ms'], 2):>22} "
            f"{_fmt(s['p99_ms'], 2):>22} {_fmt(s['cpu_seconds_per_1000'], 2):>20}{flag}"
        )
    for key, label in (
        ("hookfleet/naive", "hookfleet/naive"),
        ("hookfleet/bare", "hookfleet/bare"),
    ):
        r = results["acceptance"]["ratios"][key]
        value = "n/a" if r["of_medians"] is None else f"{r['of_medians']:.3f}x"
        print(f"{label:<16} {value:>8}   per round {_fmt(r['per_round'], 3)}")
    print("\nCPU per request on the whole box, us: median (min-max) over runs")
    print(f"{'server':<10}" + "".join(f"{part:>20}" for part in CPU_PARTS))
    for name in SERVERS:
        parts = summaries[name]["cpu_us_per_request"]
        print(f"{name:<10}" + "".join(f"{_fmt(parts[part], 0):>20}" for part in CPU_PARTS))
    budget = results["acceptance"]["box_budget"]
    if budget["budget_us_per_request"] and budget["hookfleet_box_us_per_request"]:
        print(
            f"At {budget['share_of_bare']:g}x of bare ({budget['rate']:.0f} req/s) the box's "
            f"{budget['cores']} cores leave {budget['budget_us_per_request']:.0f} us per request"
            f" for everything; hookfleet's runs spent {budget['hookfleet_box_us_per_request']:.0f}."
        )
    ack = results.get("ack_latency")
    if ack:
        print(f"\nAck latency, open loop at {ack['rate']:.0f}/s for {ack['seconds']:.0f} s:")
        for name, run in ack["servers"].items():
            print(
                f"{name:<10} p50 {_fmt(run['p50_ms'], 2)} ms  p99 {_fmt(run['p99_ms'], 2)} ms"
                f"  p999 {_fmt(run['p999_ms'], 2)} ms  sent at {_fmt(run['achieved_send_rate'], 0)}/s"
                f"  non-2xx {run['non_2xx']}  errors {run['client_errors']}"
            )
            parts = run["cpu_us_per_request"]
            print(
                f"{'':<10} box busy {_fmt(run['box_busy_percent'], 0)} % of {CORES} cores; CPU us per"
                " request: " + ", ".join(f"{part} {_fmt(parts[part], 0)}" for part in CPU_PARTS)
            )
    e2e = results.get("end_to_end")
    if e2e:
        print(
            f"\nEnd to end ({e2e['event']} -> membership committed), {e2e['rate']:.0f}/s for "
            f"{e2e['seconds']:.0f} s, {e2e['workers']}: p50 {_fmt(e2e['p50_ms'], 0)} ms"
            f"  p99 {_fmt(e2e['p99_ms'], 0)} ms  unfinished after drain "
            f"{e2e['unfinished_after_drain']}; over finished events only: p50 "
            f"{_fmt(e2e['finished_only_p50_ms'], 0)} ms  p99 {_fmt(e2e['finished_only_p99_ms'], 0)} ms"
        )
    worker = results.get("worker_throughput")
    if worker:
        print(
            f"Worker throughput: lifecycle {_fmt(worker['lifecycle_events_per_s'], 0)} events/s"
            f"  no-op {_fmt(worker['noop_tasks_per_s'], 0)} tasks/s"
            f"  ratio {_fmt(worker['ratio'], 3)}"
            f"  worker CPU s/1000 events {_fmt(worker['worker_cpu_seconds_per_1000_events'], 2)}"
        )
    print("\nPeak RSS (MiB):", json.dumps(results["peak_rss_mib"]))
    for name, reason in results["skipped"].items():
        print(f"skipped: {name}: {reason}")
    print("\nThe bar (issue 7), as measured in this run:")
    for label, line in results.get("bar", {}).items():
        verdict = {True: "met", False: "NOT met", None: "not measured"}[line["met"]]
        measured = "n/a" if line["measured"] is None else f"{line['measured']:.3f}"
        note = (
            "  (lower bound: some events never finished)" if line.get("unfinished_events") else ""
        )
        print(f"  {label:<36} {measured:>10}  {verdict}{note}")


def machine_info(database_url: str, redis: redis_client.Redis) -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (
            (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""
        )
    with psycopg.connect(database_url) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    info = redis.info("server")
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "loadavg_at_start": os.getloadavg(),
        "wrk": wrk_version,
        "postgresql": row[0] if row else "",
        "redis": info.get("redis_version", ""),
    }


# ---------------------------------------------------------------- open loop, fleet, bar


def ack_latency(
    servers: dict[str, Server],
    config: Config,
    database_url: str,
    redis: redis_client.Redis,
    peak: float,
) -> dict[str, Any]:
    """Ack latency at half of hookfleet's peak, open loop, over `config.runs` runs; the bare app at
    the same rate shows what the Python generator itself adds."""
    rate = max(10.0, peak / 2)
    if config.smoke:
        rate = min(rate, 50.0)
    out: dict[str, Any] = {"rate": rate, "seconds": config.open_loop_seconds, "servers": {}}
    for name in ("bare", "hookfleet"):
        runs = []
        for _ in range(config.runs):
            reset(database_url, redis)
            deliveries = signed_deliveries(int(rate * config.open_loop_seconds) + 1)
            url = f"{servers[name].url}/webhooks/stripe"
            with cpu_split(measured_parts(servers[name], database_url, redis)) as split:
                run = loadgen.run(
                    loadgen.open_loop(url, deliveries, rate, config.open_loop_seconds)
                )
            run["cpu_us_per_request"] = per_request(split, run["requests"])
            # How busy the box was: at half of the closed-loop peak, the Python generator's own
            # CPU and the server's leave it less idle than "half" suggests.
            run["box_busy_percent"] = 100 * split["box"] / (CORES * run["duration_us"] / 1e6)
            run["failures"] = check(name, run, database_url, redis, slack=0)
            run["valid"] = not run["failures"]
            for failure in run["failures"]:
                print(f"FAILURE [{name} open loop]: {failure}", flush=True)
            runs.append(run)
        valid = [r for r in runs if r["valid"]]
        out["servers"][name] = {
            "runs": len(runs),
            "valid_runs": len(valid),
            "lost_events": len(valid) != len(runs),
            "p50_ms": spread([r["p50_us"] / 1000 for r in valid]),
            "p99_ms": spread([r["p99_us"] / 1000 for r in valid]),
            "p999_ms": spread([r["p999_us"] / 1000 for r in valid]),
            "achieved_send_rate": spread([r["achieved_send_rate"] for r in valid]),
            "box_busy_percent": spread([r["box_busy_percent"] for r in valid]),
            "cpu_us_per_request": {
                part: spread([r["cpu_us_per_request"][part] for r in valid]) for part in CPU_PARTS
            },
            "non_2xx": sum(r["non_2xx"] for r in runs),
            "client_errors": sum(r["errors"]["client"] for r in runs),
            "raw_runs": runs,
        }
    return out


def fleet_parts(
    stack: ExitStack,
    workdir: Path,
    gateway: Server,
    config: Config,
    database_url: str,
    redis_url: str,
    results: dict[str, Any],
) -> None:
    """End to end and worker throughput, with real worker processes on the same database/Redis."""
    redis = redis_client.Redis.from_url(redis_url)
    stack.callback(redis.close)
    reset(database_url, redis)  # the acceptance runs' messages are not the workers' to process
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
        "STRIPE_PRICE_TIERS": '{"price_FixturePriceMember1": "member"}',
        "LOG_JSON": "true",
    }
    worker = fleet_bench.worker_service(env, workdir)
    worker.start()
    stack.callback(worker.stop)
    app = make_celery(Settings(_env_file=None, database_url=database_url, redis_url=redis_url))
    stack.callback(app.close)
    wait_until(lambda: bool(app.control.ping(timeout=0.5)), timeout=60, what="bench workers")
    worker_pid = worker.process.pid if worker.process else 0

    def worker_cpu() -> float:
        return cpu_seconds(worker_pid)

    lifecycle, noop = [], []
    timeout = 60.0 if config.smoke else 600.0
    for number in range(config.runs):  # interleaved, like the acceptance rounds
        lifecycle.append(
            fleet_bench.lifecycle_throughput(
                app, database_url, config.throughput_events, worker_cpu, timeout
            )
        )
        noop.append(
            fleet_bench.noop_throughput(app, redis, config.throughput_events, worker_cpu, timeout)
        )
        print(
            f"worker throughput {number + 1}: lifecycle {lifecycle[-1]['events_per_s']:.0f} "
            f"events/s, no-op {noop[-1]['tasks_per_s']:.0f} tasks/s",
            flush=True,
        )
    good_lifecycle = [r for r in lifecycle if r["valid"]]
    good_noop = [r for r in noop if r["valid"]]
    per_round = [
        x["events_per_s"] / y["tasks_per_s"]
        for x, y in zip(lifecycle, noop, strict=True)
        if x["valid"] and y["valid"] and y["tasks_per_s"]
    ]
    results["worker_throughput"] = {
        "events_per_run": config.throughput_events,
        "event": fleet_bench.E2E_EVENT,
        "lifecycle_events_per_s": spread([r["events_per_s"] for r in good_lifecycle]),
        "noop_tasks_per_s": spread([r["tasks_per_s"] for r in good_noop]),
        "ratio": spread(per_round),
        "worker_cpu_seconds_per_1000_events": spread(
            [r["worker_cpu_seconds_per_1000"] for r in good_lifecycle]
        ),
        "lost_events": len(good_lifecycle) != len(lifecycle),
        "raw_runs": {"lifecycle": lifecycle, "noop": noop},
    }
    e2e_runs = []
    for number in range(config.runs):
        fleet_bench.purge(database_url, redis)  # a backlog left by the run before is not this one's
        fleet_bench.vacuum(database_url)
        run = fleet_bench.end_to_end(
            gateway.url,
            database_url,
            STRIPE_SECRET,
            rate=config.e2e_rate,
            seconds=config.e2e_seconds,
            drain_seconds=config.e2e_drain_seconds,
        )
        e2e_runs.append(run)
        print(
            f"end to end {number + 1}: {run['memberships']}/{run['sent']} memberships, "
            f"p50 {run['p50_us'] / 1000:.0f} ms p99 {run['p99_us'] / 1000:.0f} ms, "
            f"unfinished {run['unfinished_after_drain']}",
            flush=True,
        )
    valid_e2e = [r for r in e2e_runs if r["valid"]]
    results["end_to_end"] = {
        "rate": config.e2e_rate,
        "seconds": config.e2e_seconds,
        "event": fleet_bench.E2E_EVENT,
        "workers": f"1 prefork worker, concurrency {fleet_bench.WORKER_CONCURRENCY}",
        "runs": len(e2e_runs),
        "valid_runs": len(valid_e2e),
        "p50_ms": spread([r["p50_us"] / 1000 for r in valid_e2e]),
        "p99_ms": spread([r["p99_us"] / 1000 for r in valid_e2e]),
        # Over the events that did finish within the drain time: a lower bound when some did not.
        "finished_only_p50_ms": spread([r["p50_us"] / 1000 for r in e2e_runs]),
        "finished_only_p99_ms": spread([r["p99_us"] / 1000 for r in e2e_runs]),
        "unfinished_after_drain": [r["unfinished_after_drain"] for r in e2e_runs],
        "raw_runs": e2e_runs,
    }

    results["peak_rss_mib"]["worker"] = peak_rss_mib(worker_pid)
    results["peak_rss_mib"]["gateway_after_fleet_parts"] = peak_rss_mib(
        gateway.service.process.pid if gateway.service.process else 0
    )


def bar(results: dict[str, Any]) -> dict[str, Any]:
    """Issue 7's bar, each figure as measured in this run (None when it could not be measured)."""
    ratios = results["acceptance"]["ratios"]
    ack = results["ack_latency"]["servers"]["hookfleet"]["p99_ms"]["median"]
    e2e_results = results.get("end_to_end", {})
    e2e = e2e_results.get("p99_ms", {}).get("median")
    unfinished = any(e2e_results.get("unfinished_after_drain", []))
    if e2e is None and unfinished:
        # Events never finished within the drain: the finished ones' p99 is a lower bound, and fails.
        e2e = e2e_results.get("finished_only_p99_ms", {}).get("median")
    worker = results.get("worker_throughput", {}).get("ratio", {}).get("median")

    def line(measured: float | None, target: float, higher_is_better: bool) -> dict[str, Any]:
        met = None
        if measured is not None:
            met = measured >= target if higher_is_better else measured < target
        return {"measured": measured, "target": target, "met": met}

    return {
        "hookfleet/naive >= 8": line(ratios["hookfleet/naive"]["of_medians"], 8.0, True),
        "hookfleet/bare >= 0.4": line(ratios["hookfleet/bare"]["of_medians"], 0.4, True),
        "ack p99 at half peak < 20 ms": line(ack, 20.0, False),
        "end-to-end p99 at 300/s < 500 ms": {
            **line(e2e, 500.0, False),
            **({"met": False, "unfinished_events": True} if unfinished else {}),
        },
        "worker events/s >= 0.5 x no-op": line(worker, 0.5, True),
    }


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="1 short run per server, tiny load")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--duration", type=float, help="seconds per run")
    parser.add_argument("--connections", type=int)
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--output", type=Path, default=ROOT / "bench-results.json")
    parser.add_argument("--e2e-rate", type=float, help="end-to-end events/s (default 300)")
    parser.add_argument("--e2e-seconds", type=float, help="end-to-end run length (default 60)")
    parser.add_argument("--throughput-events", type=int, help="events per worker-throughput run")
    args = parser.parse_args(argv)
    loadgen_name = args.loadgen
    if loadgen_name == "auto":
        loadgen_name = "wrk" if shutil.which("wrk") else "python"
    smoke = bool(args.smoke)
    return Config(
        smoke=smoke,
        runs=args.runs or (1 if smoke else 3),
        duration=args.duration or (1.0 if smoke else 10.0),
        connections=args.connections or (4 if smoke else 32),
        loadgen=loadgen_name,
        output=args.output,
        open_loop_seconds=1.0 if smoke else 10.0,
        # A smoke run has no warm-up to size its pool from (one warm-up ran at under half the speed
        # of the run after it, 2,481 req/s, and ran out of the pool): the floor covers it alone.
        pool_floor=10_000 if smoke else 20_000,
        e2e_rate=args.e2e_rate or (20.0 if smoke else 300.0),
        e2e_seconds=args.e2e_seconds or (1.0 if smoke else 60.0),
        e2e_drain_seconds=20.0 if smoke else 120.0,
        throughput_events=args.throughput_events or (20 if smoke else 500),
    )


def start_servers(
    stack: ExitStack, workdir: Path, database_url: str, redis_url: str
) -> dict[str, Server]:
    pythonpath = {"PYTHONPATH": str(ROOT)}
    hookfleet_env = {
        **pythonpath,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
        "LOG_JSON": "true",
    }
    naive_env = {
        **pythonpath,
        "NAIVE_DATABASE_URL": database_url,
        "NAIVE_REDIS_URL": redis_url,
        "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
    }
    specs: dict[str, Callable[[int], tuple[Service, str]]] = {
        "bare": lambda port: (
            uvicorn_service("bare", "tests.bench.bare_app:app", port, pythonpath, workdir),
            "/",
        ),
        "naive": lambda port: (
            uvicorn_service("naive", "tests.bench.naive_app:app", port, naive_env, workdir),
            "/openapi.json",
        ),
        "hookfleet": lambda port: (gateway_service(port, hookfleet_env, workdir), "/healthz"),
    }
    servers = {}
    for name, spec in specs.items():
        port = free_port()
        service, health = spec(port)
        service.start()
        stack.callback(service.stop)
        servers[name] = Server(name, service, f"http://127.0.0.1:{port}", health)
    for server in servers.values():
        wait_for_http(server.url + server.health, server.service)
    return servers


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    print(
        f"bench: {'smoke' if config.smoke else 'full'}, load generator {config.loadgen}, "
        f"{config.runs} runs x {config.duration:g} s at {config.connections} connections",
        flush=True,
    )
    results: dict[str, Any] = {"config": {}, "skipped": {}}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hookfleet-bench-")))
        database_url = stack.enter_context(own_database())
        redis_svc = redis_service(free_port(), workdir)
        redis_svc.start()
        stack.callback(redis_svc.stop)
        redis_url = redis_url_of(redis_svc)
        redis = redis_client.Redis.from_url(redis_url)
        stack.callback(redis.close)
        wait_until(lambda: _pings(redis), what="private redis-server")
        results["machine"] = machine_info(database_url, redis)
        results["config"] = {
            "mode": "smoke" if config.smoke else "full",
            "runs": config.runs,
            "duration_seconds": config.duration,
            "connections": config.connections,
            "threads": config.threads,
            "load_generator": config.loadgen,
            "body_bytes": sorted({len(t) for t in TEMPLATES}),
        }
        servers = start_servers(stack, workdir, database_url, redis_url)

        pools = {"bare": min(config.pool_floor, 2000), "naive": config.pool_floor}
        pools["hookfleet"] = config.pool_floor
        # Warm-up (imports, pools, JIT-free caches), not counted; a smoke run proves the harness,
        # and its pool floor covers its one short run.
        for server in [] if config.smoke else servers.values():
            warm = one_run(server, config, 5000, workdir, database_url, redis, duration=1.0)
            if server.name != "bare":  # room for twice the warm-up's rate: no id sent twice
                pools[server.name] = max(pools[server.name], int(2 * warm["rps"] * config.duration))
        for round_number in range(config.runs):
            for name in SERVERS:  # interleaved, so a noisy minute hits every server alike
                server = servers[name]
                result = one_run(server, config, pools[name], workdir, database_url, redis)
                server.runs.append(result)
                if name != "bare":  # room for twice the best rate seen so far
                    pools[name] = max(pools[name], int(2 * result["rps"] * config.duration))
                print(
                    f"round {round_number + 1} {name:<10} {result['rps']:8.0f} req/s  "
                    f"p50 {result['p50_us'] / 1000:6.2f} ms  p99 {result['p99_us'] / 1000:6.2f} ms"
                    f"  non-2xx {result['non_2xx']}  {'ok' if result['valid'] else 'INVALID'}",
                    flush=True,
                )
        summaries = {name: summarize(server) for name, server in servers.items()}
        results["acceptance"] = {
            "servers": summaries,
            "ratios": {
                "hookfleet/naive": ratio(summaries, servers, "hookfleet", "naive"),
                "hookfleet/bare": ratio(summaries, servers, "hookfleet", "bare"),
            },
            "box_budget": box_budget(summaries),
            "raw_runs": {name: server.runs for name, server in servers.items()},
        }

        peak = summaries["hookfleet"]["rps"]["median"] or 0.0
        results["ack_latency"] = ack_latency(servers, config, database_url, redis, peak)
        results["peak_rss_mib"] = {
            name: peak_rss_mib(server.service.process.pid)
            for name, server in servers.items()
            if server.service.process is not None
        }
        fleet_parts(stack, workdir, servers["hookfleet"], config, database_url, redis_url, results)

    results["bar"] = bar(results)
    invalid = [
        name for name, summary in results["acceptance"]["servers"].items() if summary["lost_events"]
    ] + [
        f"{name} open loop"
        for name, summary in results["ack_latency"]["servers"].items()
        if summary["lost_events"]
    ]
    results["ok"] = not invalid
    config.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_table(results)
    print(f"\nwrote {config.output}")
    if invalid:
        print(f"FAILURE: events lost or unaccounted for in: {', '.join(invalid)}; see above")
        return 1
    return 0


def _pings(redis: redis_client.Redis) -> bool:
    try:
        return bool(redis.ping())
    except redis_client.RedisError:
        return False
