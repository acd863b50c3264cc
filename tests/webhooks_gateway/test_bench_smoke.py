"""`make bench-smoke`: the benchmark harness runs end to end and accounts for every event."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(170)
def test_bench_smoke_measures_servers_fleet_and_workers_and_loses_nothing(
    services: None, tmp_path: Path
) -> None:
    output = tmp_path / "bench-results.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--smoke", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=160,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(output.read_text())
    assert results["ok"] is True
    servers = results["acceptance"]["servers"]
    assert set(servers) == {"bare", "naive", "hookfleet"}
    for name, summary in servers.items():
        assert summary["valid_runs"] == summary["runs"] >= 1, name
        assert summary["rps"]["median"] > 0, name
    for name in ("naive", "hookfleet"):
        for run in results["acceptance"]["raw_runs"][name]:
            check = run["check"]
            assert check["accepted"] > 0
            assert check["rows"] == check["distinct_event_ids"] == check["queue_length"]
    hookfleet_cpu = servers["hookfleet"]["cpu_us_per_request"]
    assert hookfleet_cpu["postgresql"]["median"] > 0  # its inbox INSERTs are PostgreSQL's work
    assert hookfleet_cpu["box"]["median"] > hookfleet_cpu["server"]["median"] > 0
    budget = results["acceptance"]["box_budget"]
    assert budget["budget_us_per_request"] == pytest.approx(
        budget["cores"] * 1e6 / (0.4 * servers["bare"]["rps"]["median"])
    )
    open_loop = results["ack_latency"]["servers"]["hookfleet"]
    assert open_loop["lost_events"] is False
    assert 0 < open_loop["box_busy_percent"]["median"] <= 105  # of every core, ticks rounded
    assert open_loop["cpu_us_per_request"]["server"]["median"] > 0
    end_to_end = results["end_to_end"]
    assert end_to_end["valid_runs"] == end_to_end["runs"] >= 1
    for run in end_to_end["raw_runs"]:
        assert run["memberships"] == run["sent"] > 0  # every signup became a membership
    throughput = results["worker_throughput"]
    assert throughput["lost_events"] is False
    assert throughput["lifecycle_events_per_s"]["median"] > 0
    assert throughput["noop_tasks_per_s"]["median"] > 0
    assert results["peak_rss_mib"]["worker"] > 0
    assert set(results["bar"]) == {
        "hookfleet/naive >= 8",
        "hookfleet/bare >= 0.4",
        "ack p99 at half peak < 20 ms",
        "end-to-end p99 at 300/s < 500 ms",
        "worker events/s >= 0.5 x no-op",
    }
