"""`python -m tests.bench.jobs --smoke`: the jobs benchmark harness runs end to end on a tiny community,
counts every call, and its checks find each member's Slack status and each guest's decision right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(175)
def test_bench_jobs_smoke_runs_three_jobs_and_checks_their_outcomes(
    services: None, tmp_path: Path
) -> None:
    output = tmp_path / "bench-jobs-results.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.jobs", "--smoke", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=165,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "at real limits" in done.stdout
    results = json.loads(output.read_text())
    assert results["ok"] is True
    bulk, lookup, luma = results["runs"]
    visible = results["community"]["visible_members"]
    assert bulk["calls_by_endpoint"] == {"users.list": 2}
    assert lookup["calls_by_endpoint"] == {"users.lookupByEmail": visible}
    assert set(luma["calls_by_endpoint"]) == {"list-events", "list-guests", "update-status"}
    assert luma["calls_by_endpoint"]["update-status"] == results["community"]["pending_guests"]
    for run in results["runs"]:
        assert run["outcome"] == "succeeded", run
        assert run["check"]["mismatches"] == 0, run
        assert run["peak_rss_mib"] > 0
        assert run["projected_seconds_floor"] > 0
