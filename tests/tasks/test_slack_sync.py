"""Slack sync against the provider sandbox's Slack, on the run's database: statuses per member,
changes audited, the bulk listing's call count, the lookup fallback and strategy, faults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import make_engine, session_scope
from schemas.migrate import upgrade
from schemas.tables import Integration, Member
from tasks.slack_status import Found, email_of, match_page, status_of, upsert_integrations
from tests.conftest import make_settings
from tests.support.sandbox import SandboxServer
from tests.tasks import job_support
from tests.tasks.job_support import Community, JobRuntime, audits_of_run, job_run, job_settings

job_runtime = job_support.job_runtime
community = job_support.community
JOB = "slack-sync"


def seed_mix(sandbox: SandboxServer, people: Community) -> None:
    """Members of every kind, and the workspace's users for them (and a few of Slack's own)."""
    for who in ("active", "guest", "single", "deleted", "missing", "shouty", "lookup"):
        people.add(who, "active")
    people.add("hidden", "active", visible=False)
    sandbox.seed_slack_users(
        [
            {"email": people.email("active")},
            {"email": people.email("guest"), "is_restricted": True},
            {"email": people.email("single"), "is_ultra_restricted": True},
            {"email": people.email("deleted"), "deleted": True},
            {"email": people.email("shouty").upper()},
            {"email": people.email("hidden")},
            {"email": f"slack-only.{people.tag}@example.org"},
            {"email": f"bot.{people.tag}@example.org", "is_bot": True},
        ],
        replace=True,
    )


def recorded(engine: Engine, people: Community) -> dict[str, tuple[str, bool]]:
    """who -> (status, has a Slack user id) for the test's members."""
    names = {member_id: who for who, member_id in people.ids.items()}
    with Session(engine) as session:
        rows = session.scalars(
            select(Integration).where(
                Integration.member_id.in_(names), Integration.provider == "slack"
            )
        )
        return {names[row.member_id]: (row.status, row.external_id is not None) for row in rows}


EXPECTED = {
    "active": ("active", True),
    "guest": ("inactive", True),
    "single": ("inactive", True),
    "deleted": ("deactivated", True),
    "missing": ("not_found", False),
    "shouty": ("active", True),
    "lookup": ("not_found", False),
}


def test_the_seeded_mix_ends_with_the_right_statuses(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer
) -> None:
    seed_mix(sandbox, community)

    outcome = job_runtime.run(JOB)

    assert outcome.outcome == "succeeded", outcome.error
    assert recorded(job_runtime.engine, community) == EXPECTED  # "hidden" is not visible
    assert outcome.counts["pages"] == 1
    assert outcome.counts["slack_calls"] == 1
    assert "lookups" not in outcome.counts
    assert job_run(job_runtime.engine, outcome.run_id).counts == outcome.counts


def test_a_second_run_changes_nothing_and_a_change_is_audited_from_the_recorded_status(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer
) -> None:
    seed_mix(sandbox, community)
    job_runtime.run(JOB)

    again = job_runtime.run(JOB)
    users = sandbox.slack_users()
    deleted_now = next(u for u in users if u["profile"].get("email") == community.email("active"))
    sandbox.seed_slack_users([{**deleted_now, "deleted": True}])
    changed = job_runtime.run(JOB)

    assert (again.counts.get("changed", 0), again.counts.get("new", 0)) == (0, 0)
    assert audits_of_run(job_runtime.engine, again.run_id) == []
    assert recorded(job_runtime.engine, community)["active"] == ("deactivated", True)
    assert changed.counts["changed"] == 1
    [entry] = audits_of_run(job_runtime.engine, changed.run_id)
    assert (entry.action, entry.entity_id) == ("slack.status_changed", str(community.ids["active"]))
    assert (entry.detail["from"], entry.detail["to"]) == ("active", "deactivated")
    assert entry.detail["slack_user_id"] == deleted_now["id"]


def test_the_fallback_looks_up_members_the_listing_did_not_find(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer, database_url: str
) -> None:
    seed_mix(sandbox, community)
    job_runtime.configure(job_settings(sandbox, database_url, slack_sync_lookup_fallback=True))

    outcome = job_runtime.run(JOB)

    assert outcome.outcome == "succeeded"
    lookups = [
        call["body"] or call["query"] for call in sandbox.calls("slack", "users.lookupByEmail")
    ]
    looked_up = {(params.get("email") or "").lower() for params in lookups}
    assert community.email("missing") in looked_up
    assert community.email("active") not in looked_up  # the listing found them
    assert recorded(job_runtime.engine, community) == EXPECTED


def test_the_lookup_strategy_asks_once_per_member_and_agrees_with_the_listing(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer
) -> None:
    seed_mix(sandbox, community)

    outcome = job_runtime.run(JOB, options={"strategy": "lookup"})

    assert outcome.outcome == "succeeded"
    assert sandbox.calls("slack", "users.list") == []
    assert outcome.counts["lookups"] == outcome.counts["members"]
    assert recorded(job_runtime.engine, community) == EXPECTED


def test_a_dry_run_writes_nothing(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer
) -> None:
    seed_mix(sandbox, community)

    outcome = job_runtime.run(JOB, dry_run=True)

    assert (outcome.outcome, outcome.run_id) == ("succeeded", None)
    assert outcome.counts["inactive"] >= 2
    assert recorded(job_runtime.engine, community) == {}


def test_a_429_storm_slows_the_listing_but_loses_nothing(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer
) -> None:
    seed_mix(sandbox, community)
    sandbox.fault("slack", "users.list", status=429, count=3, retry_after=1)

    outcome = job_runtime.run(JOB)

    assert outcome.outcome == "succeeded", outcome.error
    assert outcome.counts["slack_calls"] == 4
    assert recorded(job_runtime.engine, community) == EXPECTED


def test_an_outage_mid_listing_fails_the_run_keeping_the_matches_so_far(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer
) -> None:
    seed_mix(sandbox, community)
    # A second page, and Slack gone after the first.
    sandbox.seed_slack_users(
        [{"email": f"filler{n}.{community.tag}@example.org"} for n in range(250)]
    )
    sandbox.fault("slack", "users.list", status=503, count=-1, after=1)

    failed = job_runtime.run(JOB)

    assert failed.outcome == "failed"
    assert failed.counts["pages"] == 1
    partial = recorded(job_runtime.engine, community)
    assert "missing" not in partial  # not_found is only said once the listing is whole
    assert job_run(job_runtime.engine, failed.run_id).counts == failed.counts

    sandbox.clear_faults()
    finished = job_runtime.run(JOB)

    assert finished.outcome == "succeeded"
    assert finished.counts["pages"] == 2
    assert recorded(job_runtime.engine, community) == EXPECTED


def test_without_a_slack_token_the_run_is_skipped(
    job_runtime: JobRuntime, sandbox: SandboxServer, database_url: str
) -> None:
    job_runtime.configure(job_settings(sandbox, database_url, slack_bot_token=None))

    outcome = job_runtime.run(JOB)

    assert outcome.outcome == "skipped"
    assert sandbox.calls("slack") == []


def user(**fields: Any) -> dict[str, Any]:
    return {
        "id": "U1",
        "deleted": False,
        "is_restricted": False,
        "is_ultra_restricted": False,
    } | fields


def test_status_of_a_slack_user() -> None:
    assert status_of(user()) == "active"
    assert status_of(user(is_restricted=True)) == "inactive"
    assert status_of(user(is_ultra_restricted=True)) == "inactive"
    assert status_of(user(deleted=True, is_restricted=True)) == "deactivated"


def test_bots_and_users_without_an_email_match_nobody() -> None:
    assert email_of(user(profile={"email": " Ann@X.org "})) == "ann@x.org"
    assert email_of(user(is_bot=True, profile={"email": "bot@x.org"})) is None
    assert email_of(user(id="USLACKBOT", profile={"email": "slackbot@x.org"})) is None
    assert email_of(user(profile={})) is None


def test_a_page_is_matched_by_lower_cased_email() -> None:
    members = {"ann@x.org": [1], "bo@x.org": [2, 3]}
    page = [
        user(id="UA", profile={"email": "ANN@x.org"}, is_restricted=True),
        user(id="UB", profile={"email": "bo@x.org"}),
        user(id="UC", profile={"email": "cy@x.org"}),
    ]

    assert match_page(page, members) == {
        1: Found("UA", "inactive"),
        2: Found("UB", "active"),
        3: Found("UB", "active"),
    }


def test_upserts_insert_then_update_in_batches_on_sqlite_too(tmp_path: Path) -> None:
    settings = make_settings(database_url=f"sqlite:///{tmp_path}/jobs.db")
    upgrade(settings)
    engine = make_engine(settings)
    sessions = sessionmaker(engine)
    count = 2500  # more than one batch
    with session_scope(sessions) as session:
        session.execute(
            insert(Member), [{"email": f"m{n}@x.org", "visible": True} for n in range(count)]
        )
        ids = list(session.scalars(select(Member.id)))
        upsert_integrations(session, "slack", {i: Found(f"U{i}", "active") for i in ids})
    with session_scope(sessions) as session:
        upsert_integrations(session, "slack", {ids[0]: Found(None, "not_found")})
    with Session(engine) as session:
        rows = {
            row.member_id: (row.external_id, row.status)
            for row in session.scalars(select(Integration))
        }
    engine.dispose()

    assert len(rows) == count
    assert rows[ids[0]] == (None, "not_found")
    assert rows[ids[1]] == (f"U{ids[1]}", "active")
