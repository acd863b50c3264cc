"""`hookfleet jobs`: run a scheduled job here and now, and list recent runs.

`jobs run` runs the job in this process (the same `run_job` beat's worker runs), under the same
per-job lock, so it cannot overlap a scheduled run; it exits 1 when the run failed.
"""

from __future__ import annotations

import json
from typing import Any

import click

from schemas.db import session_scope
from workers import runtime
from workers.cli_context import cli_actor
from workers.jobs import JOBS, Outcome, recent_runs, run_duration, run_job
from workers.logging import configure_logging


@click.group()
def jobs() -> None:
    """The scheduled jobs (luma-approval, slack-sync)."""


@jobs.command("run")
@click.argument("name", type=click.Choice(sorted(JOBS)))
@click.option("--dry-run", is_flag=True, help="decide and report; change nothing anywhere")
@click.option(
    "--strategy",
    type=click.Choice(["bulk", "lookup"]),
    default=None,
    help="slack-sync: users.list pages (bulk, default) or users.lookupByEmail per member",
)
@click.option("--json", "as_json", is_flag=True)
def jobs_run(name: str, dry_run: bool, strategy: str | None, as_json: bool) -> None:
    """Run job NAME now, in this process."""
    settings = runtime.settings()
    configure_logging(settings.log_level, settings.log_json)
    options = {"strategy": strategy} if strategy else None
    outcome = run_job(name, dry_run=dry_run, triggered_by=cli_actor(), options=options)
    if as_json:
        click.echo(json.dumps(outcome.as_dict(), indent=2))
    else:
        run = "dry run" if outcome.dry_run else f"run {outcome.run_id}"
        click.echo(f"{name} {run}: {outcome.outcome}")
        for key, value in sorted(outcome.counts.items()):
            click.echo(f"  {key}: {value}")
        if outcome.error:
            click.echo(f"  reason: {outcome.error}")
    if outcome.outcome == Outcome.FAILED:
        raise SystemExit(1)


@jobs.command("list")
@click.option("--job", type=click.Choice(sorted(JOBS)), default=None)
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def jobs_list(job: str | None, limit: int, as_json: bool) -> None:
    """Recent runs, newest first."""
    with session_scope(runtime.sessions()) as session:
        rows: list[dict[str, Any]] = [
            {
                "id": run.id,
                "job": run.job,
                "outcome": run.outcome,
                "triggered_by": run.triggered_by,
                "started_at": run.started_at.isoformat(timespec="seconds"),
                "seconds": None if (took := run_duration(run)) is None else round(took, 1),
                "counts": run.counts,
                "error": run.error,
            }
            for run in recent_runs(session, job=job, limit=limit)
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        counts = " ".join(f"{key}={value}" for key, value in sorted(row["counts"].items()))
        line = f"{row['id']}  {row['job']}  {row['outcome']}  {row['started_at']}  "
        line += f"{row['seconds']}s  by {row['triggered_by']}  {counts}"
        click.echo(line + (f"  ({row['error']})" if row["error"] else ""))
    click.echo(f"({len(rows)} runs)")
