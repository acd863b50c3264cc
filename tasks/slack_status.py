"""Slack sync (issue 6): every visible member's Slack account and its status, twice a day.

The bulk strategy pages `users.list` (200 a page; Tier 2) and matches users to members by
lower-cased email: about 250 calls for a 50,000-user workspace, where one `users.lookupByEmail` per
member (Tier 3) would take 50,000. SLACK_SYNC_LOOKUP_FALLBACK looks up members the listing did not
find (an email Slack only matches case-insensitively, a user hidden from the bot's listing). The
"lookup" strategy (option `strategy="lookup"`) asks per member, which is the better deal for a few
members in a huge workspace.

Statuses: `active`, `inactive` (a restricted or ultra-restricted guest), `deactivated` (deleted),
`not_found`. Each is upserted into `integrations` in batches (one multi-row INSERT .. ON CONFLICT DO
UPDATE per batch, on PostgreSQL and SQLite), matches page by page as they are found (a run that fails
half-way keeps them), `not_found` only once the whole listing is read. A change from a previously
recorded status is audited; a first sighting is only counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from schemas.db import session_scope
from schemas.tables import AuditEntry, Integration, IntegrationStatus, Member, utcnow
from tasks.clients.slack import SlackUsers
from workers import runtime
from workers.celery_app import app
from workers.jobs import JobContext, JobSkipped, job_task_options, run_job
from workers.logging import get_logger
from workers.outbound_limits import OutboundLimiter

log = get_logger(__name__)
JOB = "slack-sync"
PROVIDER = "slack"
STRATEGIES = ("bulk", "lookup")
UPSERT_BATCH = 1000
LOOKUP_FLUSH_EVERY = 200
SLACKBOT_ID = "USLACKBOT"


@dataclass(frozen=True)
class Found:
    external_id: str | None
    status: str


def status_of(user: dict[str, Any]) -> str:
    """A Slack user's status for hookfleet: deleted beats restricted beats active."""
    if user.get("deleted"):
        return IntegrationStatus.DEACTIVATED
    if user.get("is_restricted") or user.get("is_ultra_restricted"):
        return IntegrationStatus.INACTIVE
    return IntegrationStatus.ACTIVE


def email_of(user: dict[str, Any]) -> str | None:
    """The user's lower-cased email; None for bots, Slackbot and users without one."""
    if user.get("is_bot") or user.get("is_app_user") or user.get("id") == SLACKBOT_ID:
        return None
    profile = user.get("profile")
    email = profile.get("email") if isinstance(profile, dict) else None
    return email.strip().lower() if isinstance(email, str) and email.strip() else None


def match_page(users: Iterable[dict[str, Any]], members: dict[str, list[int]]) -> dict[int, Found]:
    """Member id -> what Slack says, for the users of one page whose email is a member's."""
    found: dict[int, Found] = {}
    for user in users:
        email = email_of(user)
        if email is None:
            continue
        for member_id in members.get(email, ()):
            found[member_id] = Found(str(user.get("id") or "") or None, status_of(user))
    return found


def visible_members(session: Session) -> dict[str, list[int]]:
    """Lower-cased email -> ids of the visible, not anonymised members with that email."""
    members: dict[str, list[int]] = {}
    rows = session.execute(
        select(Member.id, Member.email).where(
            Member.visible.is_(True), Member.email.is_not(None), Member.anonymised_at.is_(None)
        )
    )
    for member_id, email in rows:
        if email is None:
            continue
        members.setdefault(email.strip().lower(), []).append(member_id)
    return members


def recorded(session: Session) -> dict[int, Found]:
    rows = session.execute(
        select(Integration.member_id, Integration.external_id, Integration.status).where(
            Integration.provider == PROVIDER
        )
    )
    return {member_id: Found(external_id, status) for member_id, external_id, status in rows}


def upsert_integrations(session: Session, provider: str, found: dict[int, Found]) -> None:
    """One multi-row INSERT .. ON CONFLICT (member_id, provider) DO UPDATE per batch."""
    if not found:
        return
    dialect = session.get_bind().dialect.name
    make_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    items = list(found.items())
    for start in range(0, len(items), UPSERT_BATCH):
        rows = [
            {
                "member_id": member_id,
                "provider": provider,
                "external_id": what.external_id,
                "status": what.status,
                "synced_at": now,
            }
            for member_id, what in items[start : start + UPSERT_BATCH]
        ]
        statement = make_insert(Integration).values(rows)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["member_id", "provider"],
                set_={
                    "external_id": statement.excluded.external_id,
                    "status": statement.excluded.status,
                    "synced_at": statement.excluded.synced_at,
                },
            )
        )


class _Recorder:
    """Counts what a sync found and writes it (unless a dry run), auditing changes of status."""

    def __init__(self, context: JobContext, previous: dict[int, Found]) -> None:
        self.context = context
        self.previous = previous
        self.done: set[int] = set()

    def record(self, found: dict[int, Found]) -> None:
        fresh = {member_id: what for member_id, what in found.items() if member_id not in self.done}
        if not fresh:
            return
        counts = self.context.counts
        changes = []
        for member_id, what in fresh.items():
            counts[what.status] += 1
            before = self.previous.get(member_id)
            if before is None:
                counts["new"] += 1
            elif before != what:
                counts["changed"] += 1
                changes.append(
                    {
                        "at": utcnow(),
                        "actor": self.context.actor,
                        "action": "slack.status_changed",
                        "entity_type": "member",
                        "entity_id": str(member_id),
                        "inbox_id": None,
                        "detail": {
                            "from": before.status,
                            "to": what.status,
                            "slack_user_id": what.external_id,
                            "previous_slack_user_id": before.external_id,
                            "run_id": self.context.run_id,
                        },
                    }
                )
        self.done.update(fresh)
        if self.context.dry_run:
            return
        with session_scope(self.context.sessions) as session:
            upsert_integrations(session, PROVIDER, fresh)
            if changes:
                session.execute(insert(AuditEntry), changes)
        self.context.checkpoint()


def _lookup(
    slack: SlackUsers, recorder: _Recorder, members: dict[str, list[int]], emails: list[str]
) -> None:
    """users.lookupByEmail for each email; writes every LOOKUP_FLUSH_EVERY answers."""
    batch: dict[int, Found] = {}
    for email in emails:
        user = slack.lookup_by_email(email)
        recorder.context.counts["lookups"] += 1
        if user is not None and email_of(user) is not None:
            for member_id in members[email]:
                batch[member_id] = Found(str(user.get("id") or "") or None, status_of(user))
        if len(batch) >= LOOKUP_FLUSH_EVERY:
            recorder.record(batch)
            batch = {}
        recorder.context.counts["slack_calls"] = slack.calls
    recorder.record(batch)


def run_slack_sync(context: JobContext) -> None:
    """The job body (see workers.jobs)."""
    settings = context.settings
    strategy = str(context.options.get("strategy", "bulk"))
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown slack-sync strategy {strategy!r}; use one of {STRATEGIES}")
    if settings.slack_bot_token is None:
        raise JobSkipped("SLACK_BOT_TOKEN is not set; Slack sync is disabled")
    with session_scope(context.sessions) as session:
        members = visible_members(session)
        previous = recorded(session)
    context.counts["members"] = sum(len(ids) for ids in members.values())
    recorder = _Recorder(context, previous)
    slack = SlackUsers(settings, OutboundLimiter(context.redis, "slack"))
    try:
        if strategy == "bulk":
            for users in slack.pages():
                context.counts["pages"] += 1
                context.counts["slack_calls"] = slack.calls
                recorder.record(match_page(users, members))
            unmatched = [
                email for email, ids in members.items() if not recorder.done.issuperset(ids)
            ]
            if settings.slack_sync_lookup_fallback:
                _lookup(slack, recorder, members, unmatched)
        else:
            _lookup(slack, recorder, members, list(members))
    finally:
        context.counts["slack_calls"] = slack.calls
    missing = {
        member_id: Found(None, IntegrationStatus.NOT_FOUND)
        for ids in members.values()
        for member_id in ids
        if member_id not in recorder.done
    }
    recorder.record(missing)


@app.task(name="tasks.slack_status.slack_sync", **job_task_options(runtime.settings()))
def slack_sync(
    triggered_by: str = "beat", dry_run: bool = False, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    return run_job(JOB, dry_run=dry_run, triggered_by=triggered_by, options=options).as_dict()
