"""`hookfleet jobs run` and `hookfleet jobs list` on test jobs (bodies of tests.workers.test_jobs)."""

from __future__ import annotations

import json

import click
import fakeredis
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from tests.workers import test_jobs
from tests.workers.test_jobs import register
from workers import cli_jobs
from workers.cli import main

fleet = test_jobs.fleet
job = test_jobs.job


@pytest.fixture
def test_job_choices(monkeypatch: pytest.MonkeyPatch, job: str) -> str:
    """The CLI's NAME choices were fixed at import; let this test's job through."""
    run_command = cli_jobs.jobs.commands["run"]
    name = next(p for p in run_command.params if p.name == "name")
    assert isinstance(name.type, click.Choice)
    monkeypatch.setattr(name.type, "choices", [*name.type.choices, job])
    return job


def test_jobs_run_prints_the_outcome_and_counts_and_jobs_list_shows_the_run(
    fleet: fakeredis.FakeRedis, test_job_choices: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(monkeypatch, test_job_choices, "counting_body")
    runner = CliRunner()

    ran = runner.invoke(main, ["jobs", "run", test_job_choices])
    listed = runner.invoke(main, ["jobs", "list", "--json", "--limit", "50"])

    assert ran.exit_code == 0, ran.output
    assert f"{test_job_choices} run " in ran.output
    assert ": succeeded" in ran.output
    assert "  seen: 3" in ran.output
    [row] = [row for row in json.loads(listed.stdout) if row["job"] == test_job_choices]
    assert (row["outcome"], row["counts"]) == ("succeeded", {"seen": 3, "dry": 0})
    assert row["triggered_by"].startswith("cli:")


def test_a_failed_run_exits_1_with_its_reason(
    fleet: fakeredis.FakeRedis, test_job_choices: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(monkeypatch, test_job_choices, "failing_body")

    result = CliRunner().invoke(main, ["jobs", "run", test_job_choices, "--json"])

    assert result.exit_code == 1
    outcome = json.loads(result.stdout)
    assert (outcome["outcome"], outcome["error"]) == ("failed", "ConnectionError: provider outage")
    assert outcome["counts"] == {"done_before_the_outage": 7}


def test_a_dry_run_says_so_and_passes_the_strategy(
    fleet: fakeredis.FakeRedis,
    test_job_choices: str,
    monkeypatch: pytest.MonkeyPatch,
    pg_engine: Engine,
) -> None:
    register(monkeypatch, test_job_choices, "options_body")

    result = CliRunner().invoke(
        main, ["jobs", "run", test_job_choices, "--dry-run", "--strategy", "lookup"]
    )

    assert result.exit_code == 0, result.output
    assert f"{test_job_choices} dry run: succeeded" in result.output
    assert "  dry: 1" in result.output
    assert "  lookup: 1" in result.output
    assert test_jobs.runs(pg_engine, test_job_choices) == []


def test_an_unknown_job_is_refused_by_the_cli() -> None:
    result = CliRunner().invoke(main, ["jobs", "run", "no-such-job"])

    assert result.exit_code == 2
    assert "luma-approval" in result.output
