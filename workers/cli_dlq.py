"""`hookfleet dlq` and `hookfleet events`: inspect, replay and discard from a terminal, audited."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from schemas.db import session_scope
from schemas.settings import Settings
from workers import dead_letters, inbox_events
from workers.celery_app import make_celery
from workers.cli_context import cli_actor, cli_sessions
from workers.enqueue import publish_process_event, task_sender

DURATION = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str | None) -> datetime | None:
    """`2h`, `30m`, `7d` (ago), or an ISO-8601 time."""
    if value is None:
        return None
    match = DURATION.match(value.strip())
    if match:
        return datetime.now(UTC) - timedelta(**{UNITS[match[2]]: int(match[1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (2h, 30m) nor an ISO time"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _sender(settings: Settings) -> dead_letters.SendTask:
    return task_sender(make_celery(settings))


def _publisher(settings: Settings) -> Callable[[int], str]:
    celery = make_celery(settings)
    return lambda inbox_id: publish_process_event(celery, inbox_id)


def _echo_rows(rows: list[dict[str, Any]], as_json: bool, columns: tuple[str, ...]) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        click.echo("  ".join(str(row[column]) for column in columns))
    click.echo(f"({len(rows)} rows)")


@click.group()
def dlq() -> None:
    """The dead-letter store."""


@dlq.command("list")
@click.option("--task", default=None)
@click.option("--status", type=click.Choice(dead_letters.DeadLetterStatus.ALL), default=None)
@click.option("--since", default=None, help="2h, 30m, 7d or an ISO time")
@click.option("--limit", default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def dlq_list(
    task: str | None, status: str | None, since: str | None, limit: int, as_json: bool
) -> None:
    with cli_sessions() as (_, sessions), session_scope(sessions) as session:
        rows = dead_letters.query(
            session, task=task, status=status, since=parse_since(since), limit=limit
        )
        data = [dead_letters.as_dict(row) for row in rows]
    _echo_rows(
        data, as_json, ("id", "status", "task_name", "exc_type", "attempts", "last_failed_at")
    )


@dlq.command("show")
@click.argument("dead_letter_id", type=int)
def dlq_show(dead_letter_id: int) -> None:
    with cli_sessions() as (_, sessions), session_scope(sessions) as session:
        try:
            row = dead_letters.get(session, dead_letter_id)
        except dead_letters.DeadLetterNotFoundError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(json.dumps(dead_letters.as_dict(row, full=True), indent=2, default=str))


@dlq.command("replay")
@click.argument("dead_letter_id", type=int, required=False)
@click.option("--all", "replay_all", is_flag=True, help="every dead row matching the filters")
@click.option("--task", default=None)
@click.option("--since", default=None)
@click.option("--dry-run", is_flag=True)
def dlq_replay(
    dead_letter_id: int | None, replay_all: bool, task: str | None, since: str | None, dry_run: bool
) -> None:
    """Send the same task with the same arguments again: one ID, or --all with filters."""
    if (dead_letter_id is None) == (not replay_all):
        raise click.UsageError("give either one ID or --all (with --task/--since filters)")
    if dead_letter_id is not None and (task or since):
        raise click.UsageError("--task and --since filter --all, not a single ID")
    with cli_sessions() as (settings, sessions):
        with session_scope(sessions) as session:
            if dead_letter_id is not None:
                ids = [dead_letters.get(session, dead_letter_id).id]
            else:
                rows = dead_letters.query(
                    session,
                    task=task,
                    status=dead_letters.DeadLetterStatus.DEAD,
                    since=parse_since(since),
                    limit=None,
                )
                ids = [row.id for row in rows]
        if dry_run:
            click.echo(f"Would replay {len(ids)}: {ids}")
            return
        send, replayed = _sender(settings), 0
        for one in ids:
            try:
                new_task_id = dead_letters.replay(sessions, one, send=send, actor=cli_actor())
                click.echo(f"dead letter {one} -> task {new_task_id}")
                replayed += 1
            except (dead_letters.DeadLetterStateError, dead_letters.DeadLetterNotFoundError) as exc:
                click.echo(f"dead letter {one}: {exc}", err=True)
        click.echo(f"Replayed {replayed} of {len(ids)}")
        if replayed < len(ids):
            raise SystemExit(1)


@dlq.command("discard")
@click.argument("dead_letter_id", type=int)
@click.option("--reason", required=True)
def dlq_discard(dead_letter_id: int, reason: str) -> None:
    with cli_sessions() as (_, sessions):
        try:
            with session_scope(sessions) as session:
                dead_letters.discard(session, dead_letter_id, reason=reason, actor=cli_actor())
        except (LookupError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"dead letter {dead_letter_id} discarded")


@click.group()
def events() -> None:
    """Stored webhooks (the inbox)."""


@events.command("list")
@click.option("--provider", default=None)
@click.option("--status", default=None)
@click.option("--type", "event_type", default=None)
@click.option("--since", default=None)
@click.option("--limit", default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def events_list(
    provider: str | None,
    status: str | None,
    event_type: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    with cli_sessions() as (_, sessions), session_scope(sessions) as session:
        rows = inbox_events.query(
            session,
            provider=provider,
            status=status,
            event_type=event_type,
            since=parse_since(since),
            limit=limit,
        )
        data = [inbox_events.as_dict(row) for row in rows]
    _echo_rows(data, as_json, ("id", "status", "provider", "event_type", "event_id", "received_at"))


@events.command("show")
@click.argument("inbox_id", type=int)
def events_show(inbox_id: int) -> None:
    with cli_sessions() as (_, sessions), session_scope(sessions) as session:
        try:
            row = inbox_events.get(session, inbox_id)
        except inbox_events.InboxEventNotFoundError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(json.dumps(inbox_events.as_dict(row, full=True), indent=2, default=str))


@events.command("replay")
@click.argument("inbox_id", type=int)
def events_replay(inbox_id: int) -> None:
    """Process a stored event again from the start (after a fix); done side effects stay done."""
    with cli_sessions() as (settings, sessions):
        try:
            task_id = inbox_events.replay(
                sessions, inbox_id, publish=_publisher(settings), actor=cli_actor()
            )
        except inbox_events.InboxEventNotFoundError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"inbox event {inbox_id} -> task {task_id}")
