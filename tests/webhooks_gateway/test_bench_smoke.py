"""`make bench-smoke`: the benchmark harness runs end to end and accounts for every event."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(90)
def test_bench_smoke_measures_three_servers_and_loses_nothing(
    services: None, tmp_path: Path
) -> None:
    output = tmp_path / "bench-results.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--smoke", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=80,
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
    assert results["ack_latency"]["servers"]["hookfleet"]["valid"] is True
