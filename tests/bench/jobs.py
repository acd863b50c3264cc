"""`make bench-jobs`: the scheduled jobs at scale, against the provider sandbox.

`python -m tests.bench.jobs` seeds 50,000 members (a PostgreSQL database of its own), their Slack
workspace and 10,000 RSVPs pending approval across 20 Luma events (workers.sandbox.community), then
runs, each in a subprocess of its own so its peak memory is its own:

1. slack-sync with the bulk `users.list` strategy (200 users a page),
2. slack-sync with one `users.lookupByEmail` per member (the approach the bulk one replaces),
3. luma-approval.

It reports the API calls each made (as the sandbox recorded them), wall time, peak resident memory,
and checks the outcome: every visible member's recorded Slack status, and every guest's decision,
against what the community generator meant.

The real limits (Slack Tier 2 20/min, Tier 3 50/min, Luma 200/min) would make the per-member run
take about 17 hours, so the benchmark raises the sandbox's limits and hookfleet's limiter by the same
factor (600 by default) and projects the time at the real limits two ways: the measured time times
the factor, and the floor, calls divided by the limit (hookfleet's limiter spaces calls evenly at the
limit, so at the real limits a run is bound by that floor; the measured time times the factor also
scales our own per-call overhead, and is an upper bound).

`--smoke` runs the same harness on a tiny community in seconds (the test suite does).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis as redis_client
from sqlalchemy.orm import Session

from schemas.db import make_engine
from schemas.settings import Settings
from tests.support.databases import migrated_database
from tests.support.processes import ROOT, answers, free_port, redis_service, wait_until
from tests.support.sandbox import SandboxServer
from workers.sandbox.community import (
    GUEST_ACTIVE_MEMBER,
    Community,
    build_community,
    seed_database,
    seed_sandbox,
)
from workers.sandbox.luma import SANDBOX_API_KEY

SLACK_TOKEN = "xoxb-bench-jobs"
DEFAULT_FACTOR = 600.0
# The providers' documented limits, per minute: (provider, sandbox endpoint) -> (limit, setting).
REAL_LIMITS: dict[tuple[str, str], tuple[float, str]] = {
    ("slack", "users.list"): (20.0, "SLACK_TIER2_PER_MINUTE"),
    ("slack", "users.lookupByEmail"): (50.0, "SLACK_TIER3_PER_MINUTE"),
    ("luma", "*"): (200.0, "LUMA_REQUESTS_PER_MINUTE"),
}


@dataclass(frozen=True)
class Scenario:
    label: str
    job: str
    options: dict[str, Any]
    provider: str  # whose calls are counted and checked


SCENARIOS = (
    Scenario("slack-sync, bulk users.list", "slack-sync", {"strategy": "bulk"}, "slack"),
    Scenario(
        "slack-sync, users.lookupByEmail per member", "slack-sync", {"strategy": "lookup"}, "slack"
    ),
    Scenario("luma-approval", "luma-approval", {}, "luma"),
)


@dataclass(frozen=True)
class Config:
    members: int
    rsvps: int
    events: int
    factor: float
    seed: int
    output: Path
    timeout: float


# ---------------------------------------------------------------- the child: one job run


def child(job: str, options: dict[str, Any]) -> int:
    """Run one job in this process (settings from the environment) and print one JSON line."""
    from workers.jobs import run_job

    started = time.monotonic()
    outcome = run_job(job, triggered_by="bench", options=options)
    seconds = time.monotonic() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {"outcome": outcome.as_dict(), "job_seconds": seconds, "peak_rss_mib": peak_kib / 1024}
        ),
        flush=True,
    )
    return 0


# ---------------------------------------------------------------- infrastructure


def own_database() -> AbstractContextManager[str]:
    """A migrated scratch database on the shared server, dropped at the end."""
    return migrated_database("hookfleet_bench_jobs")


def job_env(
    config: Config, database_url: str, redis_url: str, sandbox: SandboxServer
) -> dict[str, str]:
    """The child's settings: the sandbox's providers, and hookfleet's limits raised by the factor."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SLACK_BOT_TOKEN": SLACK_TOKEN,
        "SLACK_API_BASE": sandbox.slack_api_base,
        "LUMA_API_KEY": SANDBOX_API_KEY,
        "LUMA_API_BASE": sandbox.luma_api_base,
        "SLACK_SYNC_LOOKUP_FALLBACK": "false",
        "LOG_JSON": "true",
        "PYTHONPATH": str(ROOT),
    }
    for limit, setting in REAL_LIMITS.values():
        env[setting] = f"{limit * config.factor:g}"
    return env


def raise_sandbox_limits(sandbox: SandboxServer, factor: float) -> None:
    for (provider, endpoint), (limit, _setting) in REAL_LIMITS.items():
        sandbox.set_rate_limit(provider, endpoint, limit * factor)


def fresh_state(database_url: str, redis: redis_client.Redis, sandbox: SandboxServer) -> None:
    """Each run starts from nothing recorded: no integrations, audit or decisions, no limiter state,
    no recorded calls (the sandbox keeps its users and guests)."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("TRUNCATE integrations, audit_log, luma_decisions")
    redis.flushdb()
    sandbox.forget_calls()


def machine_info(database_url: str, redis: redis_client.Redis) -> dict[str, Any]:
    with psycopg.connect(database_url) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "loadavg_at_start": os.getloadavg(),
        "postgresql": row[0] if row else "",
        "redis": redis.info("server").get("redis_version", ""),
    }


# ---------------------------------------------------------------- checks


def check_slack(database_url: str, community: Community) -> dict[str, Any]:
    """Recorded statuses of the visible members against what the generator meant."""
    expected = Counter(m.expected_slack_status for m in community.members if m.visible)
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT m.email, i.status FROM integrations i JOIN members m ON m.id = i.member_id"
            " WHERE i.provider = 'slack'"
        ).fetchall()
    recorded: dict[str, str] = {str(email): str(status) for email, status in rows}
    wrong = sum(
        1
        for member in community.members
        if member.visible and recorded.get(member.email) != member.expected_slack_status
    )
    return {
        "expected": dict(sorted(expected.items())),
        "recorded": dict(sorted(Counter(recorded.values()).items())),
        "mismatches": wrong,
    }


def check_luma(sandbox: SandboxServer, community: Community) -> dict[str, Any]:
    """Every guest's status at Luma against the decision the generator meant (non-members declined)."""
    now = {(g["event_id"], g["user_email"]): g["approval_status"] for g in sandbox.luma_guests()}
    wrong = 0
    expected: Counter[str] = Counter()
    for event in community.events:
        for guest in event.guests:
            if guest.approval_status != "pending_approval":
                want = guest.approval_status  # already decided: left alone
            else:
                want = "approved" if guest.kind == GUEST_ACTIVE_MEMBER else "declined"
            expected[want] += 1
            wrong += now.get((event.id, guest.email)) != want
    return {
        "expected": dict(sorted(expected.items())),
        "at_luma": dict(sorted(Counter(now.values()).items())),
        "mismatches": wrong,
    }


# ---------------------------------------------------------------- one run


def floor_seconds(by_endpoint: dict[str, int], provider: str) -> float:
    """Calls / documented limit: the least time the calls need at the real limits."""
    if provider == "luma":
        calls = sum(by_endpoint.values())
        return calls / REAL_LIMITS[("luma", "*")][0] * 60
    return sum(
        count / REAL_LIMITS[("slack", name)][0] * 60
        for name, count in by_endpoint.items()
        if ("slack", name) in REAL_LIMITS
    )


def run_scenario(
    scenario: Scenario,
    config: Config,
    env: dict[str, str],
    workdir: Path,
    sandbox: SandboxServer,
) -> dict[str, Any]:
    argv = [sys.executable, "-m", "tests.bench.jobs", "--child", scenario.job]
    argv += ["--options", json.dumps(scenario.options)]
    log_path = workdir / f"{scenario.job}-{scenario.options.get('strategy', 'run')}.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        done = subprocess.run(
            argv,
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            timeout=config.timeout,
            check=False,
        )
    wall = time.monotonic() - started
    if done.returncode != 0 or not done.stdout.strip():
        tail = "\n".join(log_path.read_text().splitlines()[-20:])
        raise RuntimeError(f"{scenario.label}: child exited {done.returncode}\n{tail}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    counts = sandbox.call_counts(scenario.provider)
    slack_posts = sandbox.call_counts("slack", "chat.postMessage")["calls"]
    floor = floor_seconds(counts["by_endpoint"], scenario.provider)
    return {
        "scenario": scenario.label,
        "job": scenario.job,
        "options": scenario.options,
        "outcome": report["outcome"]["outcome"],
        "error": report["outcome"]["error"],
        "job_counts": report["outcome"]["counts"],
        "calls": counts["calls"],
        "calls_by_endpoint": counts["by_endpoint"],
        "calls_by_status": counts["by_status"],
        "rate_limited_429": counts["by_status"].get("429", 0),
        "slack_summary_posts": slack_posts if scenario.provider == "luma" else None,
        "wall_seconds": wall,
        "job_seconds": report["job_seconds"],
        "peak_rss_mib": report["peak_rss_mib"],
        "projected_seconds_measured_x_factor": report["job_seconds"] * config.factor,
        "projected_seconds_floor": floor,
    }


# ---------------------------------------------------------------- output


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def print_table(results: dict[str, Any]) -> None:
    factor = results["config"]["factor"]
    print()
    print(
        f"{'run':<44} {'outcome':<10} {'calls':>7} {'429s':>5} {'wall':>9} {'peak RSS':>9}"
        f" {'at real limits: measured x' + format(factor, 'g'):>30} {'floor':>9} {'check':>7}"
    )
    for run in results["runs"]:
        check = run["check"]
        print(
            f"{run['scenario']:<44} {run['outcome']:<10} {run['calls']:>7} "
            f"{run['rate_limited_429']:>5} {duration(run['job_seconds']):>9} "
            f"{run['peak_rss_mib']:>6.0f} MiB {duration(run['projected_seconds_measured_x_factor']):>30} "
            f"{duration(run['projected_seconds_floor']):>9} "
            f"{'ok' if check['mismatches'] == 0 else str(check['mismatches']) + ' bad':>7}"
        )
    print()
    print(
        f"These runs used the sandbox's limits and hookfleet's limiter both raised {factor:g}x "
        "(Slack Tier 2 20/min, Tier 3 50/min, Luma 200/min in reality); wall is the measured job "
        f"time at the raised limits. 'At real limits' projects it: measured x {factor:g} (an upper "
        "bound: it scales our own per-call overhead too) and the floor, calls / limit (hookfleet "
        "spaces calls evenly at the limit, so at the real limits a run takes about this long)."
    )


# ---------------------------------------------------------------- main


def bench(config: Config) -> dict[str, Any]:
    results: dict[str, Any] = {"config": {**config.__dict__, "output": str(config.output)}}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-jobs-")))
        database_url = stack.enter_context(own_database())
        redis_port = free_port()
        redis_server = redis_service(redis_port, workdir)
        redis_server.start()
        stack.callback(redis_server.stop)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        redis = redis_client.Redis.from_url(redis_url)
        stack.callback(redis.close)
        wait_until(lambda: answers(redis_port), timeout=20, what="bench redis")
        sandbox = stack.enter_context(SandboxServer(workdir))
        results["machine"] = machine_info(database_url, redis)

        started = time.monotonic()
        community = build_community(config.members, config.rsvps, config.events, seed=config.seed)
        built = time.monotonic()
        engine = make_engine(Settings(_env_file=None, database_url=database_url))
        stack.callback(engine.dispose)
        with Session(engine) as session, session.begin():
            seed_database(session, community)
        seeded_db = time.monotonic()
        seed_sandbox(sandbox.url, community)
        seeded_sandbox = time.monotonic()
        results["community"] = community.summary()
        results["seeding"] = {
            "build_seconds": built - started,
            "database_seconds": seeded_db - built,
            "sandbox_seconds": seeded_sandbox - seeded_db,
        }
        print(
            f"seeded {config.members} members (database {seeded_db - built:.1f} s), "
            f"{len(community.slack_users)} Slack users and {community.pending_guests} pending "
            f"RSVPs over {config.events} events (sandbox {seeded_sandbox - seeded_db:.1f} s)",
            flush=True,
        )

        raise_sandbox_limits(sandbox, config.factor)
        env = job_env(config, database_url, redis_url, sandbox)
        runs = []
        for scenario in SCENARIOS:
            fresh_state(database_url, redis, sandbox)
            print(f"running {scenario.label} ...", flush=True)
            run = run_scenario(scenario, config, env, workdir, sandbox)
            if scenario.provider == "slack":
                run["check"] = check_slack(database_url, community)
            else:
                run["check"] = check_luma(sandbox, community)
            print(
                f"  {run['outcome']}: {run['calls']} calls in {run['job_seconds']:.1f} s, "
                f"peak {run['peak_rss_mib']:.0f} MiB, {run['check']['mismatches']} mismatches",
                flush=True,
            )
            runs.append(run)
        results["runs"] = runs
    results["ok"] = all(
        run["outcome"] == "succeeded" and run["check"]["mismatches"] == 0 for run in runs
    )
    return results


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.jobs", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a tiny community, seconds")
    parser.add_argument("--members", type=int)
    parser.add_argument("--rsvps", type=int)
    parser.add_argument("--events", type=int)
    parser.add_argument("--factor", type=float, default=DEFAULT_FACTOR)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=ROOT / "bench-jobs-results.json")
    parser.add_argument("--timeout", type=float, help="seconds per job run")
    parser.add_argument("--child", metavar="JOB", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.child:
        return child(args.child, json.loads(args.options))
    config = Config(
        members=args.members or (300 if args.smoke else 50_000),
        rsvps=args.rsvps or (60 if args.smoke else 10_000),
        events=args.events or (3 if args.smoke else 20),
        factor=args.factor,
        seed=args.seed,
        output=args.output,
        timeout=args.timeout or (120.0 if args.smoke else 3600.0),
    )
    results = bench(config)
    print_table(results)
    config.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {config.output}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
