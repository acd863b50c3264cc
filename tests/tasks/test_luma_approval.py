"""Luma approval against the provider sandbox's Luma, on the run's database: who is approved,
declined or skipped and why, audited once, never decided twice, faults survived or recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import session_scope
from schemas.tables import LumaDecision
from tasks.approval import decide, membership_by_email
from tests.support.sandbox import SandboxServer
from tests.tasks import job_support
from tests.tasks.job_support import Community, JobRuntime, audits_of_run, job_run, job_settings

job_runtime = job_support.job_runtime
community = job_support.community

JOB = "luma-approval"


def metric(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(f"hookfleet_{name}_total", {"provider": "luma", **labels})
    return value or 0.0


def iso(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def seed_mix(sandbox: SandboxServer, people: Community) -> dict[str, Any]:
    """Two upcoming events and a past one; guests of every kind. Returns {who: (event, guest)}."""
    people.add("active", "active")
    people.add("ending", "cancel_scheduled")
    people.add("late", "past_due")
    people.add("gone", "canceled")
    people.add("nomembership", None)
    people.add("shouty", "active", email=people.email("shouty").upper())
    upcoming = [
        {"email": people.email(who)}
        for who in ("active", "ending", "late", "gone", "nomembership", "stranger")
    ]
    upcoming.append({"email": people.email("shouty")})  # registered lower-case at Luma
    upcoming.append({"email": people.email("active") + ".other", "approval_status": "approved"})
    created = sandbox.seed_luma_events(
        [
            {
                "id": f"evt-soon-{people.tag}",
                "name": "Soon",
                "start_at": iso(2),
                "guests": upcoming,
            },
            {
                "id": f"evt-later-{people.tag}",
                "name": "Later",
                "start_at": iso(9),
                "guests": [{"email": people.email("active").upper()}],
            },
            {
                "id": f"evt-past-{people.tag}",
                "name": "Past",
                "start_at": iso(-3),
                "guests": [{"email": people.email("active")}],
            },
        ],
        replace=True,
    )
    soon, later, past = created
    names = ["active", "ending", "late", "gone", "nomembership", "stranger", "shouty", "approved"]
    guests = {who: (soon["id"], gid) for who, gid in zip(names, soon["guests"], strict=True)}
    guests["active-later"] = (later["id"], later["guests"][0])
    guests["active-past"] = (past["id"], past["guests"][0])
    return guests


def statuses(sandbox: SandboxServer, guests: dict[str, Any]) -> dict[str, str]:
    by_id = {guest["id"]: guest["approval_status"] for guest in sandbox.luma_guests()}
    return {who: by_id[guest_id] for who, (_, guest_id) in guests.items()}


def decisions(job_runtime: JobRuntime, people: Community) -> dict[str, tuple[str, str, str]]:
    with Session(job_runtime.engine) as session:
        rows = session.scalars(
            select(LumaDecision).where(LumaDecision.email.like(f"%.{people.tag}@%"))
        )
        return {
            f"{row.event_id}/{row.guest_id}": (row.decision, row.reason, row.state) for row in rows
        }


EXPECTED_DECLINE = {
    "active": "approved",
    "ending": "approved",
    "late": "declined",
    "gone": "declined",
    "nomembership": "declined",
    "stranger": "declined",
    "shouty": "approved",
    "approved": "approved",
    "active-later": "approved",
    "active-past": "pending_approval",  # not upcoming: not touched
}


def test_the_seeded_mix_ends_with_the_right_decisions_audited_and_summed_up(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer
) -> None:
    guests = seed_mix(sandbox, community)

    outcome = job_runtime.run(JOB, triggered_by="test")

    assert outcome.outcome == "succeeded", outcome.error
    assert statuses(sandbox, guests) == EXPECTED_DECLINE
    counts = outcome.counts
    assert (counts["approved"], counts["declined"], counts["skipped"], counts["errors"]) == (
        4,
        4,
        0,
        0,
    )
    assert counts["guests_seen"] == 8
    assert counts["events"] == 2
    assert job_run(job_runtime.engine, outcome.run_id).counts == counts
    reasons = {
        entry.detail["email"]: (entry.action, entry.detail["reason"], entry.detail["event_id"])
        for entry in audits_of_run(job_runtime.engine, outcome.run_id)
        if entry.detail["event_id"] == guests["late"][0]
    }
    soon = guests["late"][0]
    assert reasons[community.email("late")] == ("luma.guest_declined", "membership_past_due", soon)
    assert reasons[community.email("gone")] == ("luma.guest_declined", "membership_canceled", soon)
    assert reasons[community.email("stranger")] == ("luma.guest_declined", "not_a_member", soon)
    assert reasons[community.email("nomembership")][1] == "no_membership"
    assert reasons[community.email("ending")] == ("luma.guest_approved", "active_member", soon)
    assert len(audits_of_run(job_runtime.engine, outcome.run_id)) == 8
    [summary] = sandbox.effects("slack", "chat.postMessage")
    assert summary["body"]["channel"] == "#jobs-test"
    assert "4 approved, 4 declined, 0 skipped, 0 errors" in summary["body"]["text"]


def test_a_second_run_changes_nothing(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer
) -> None:
    guests = seed_mix(sandbox, community)
    job_runtime.run(JOB)
    before = decisions(job_runtime, community)
    sandbox.reset()

    again = job_runtime.run(JOB)

    assert again.outcome == "succeeded"
    assert (again.counts["approved"], again.counts["declined"], again.counts["guests_seen"]) == (
        0,
        0,
        0,
    )
    assert sandbox.effects("luma", "update-status") == []
    assert decisions(job_runtime, community) == before
    assert audits_of_run(job_runtime.engine, again.run_id) == []
    assert statuses(sandbox, guests) == EXPECTED_DECLINE


def test_skipped_guests_stay_pending_and_are_approved_once_their_membership_is_active(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer, database_url: str
) -> None:
    job_runtime.configure(job_settings(sandbox, database_url, luma_non_member_action="skip"))
    guests = seed_mix(sandbox, community)

    first = job_runtime.run(JOB)
    second = job_runtime.run(JOB)
    community.set_status("late", "active")
    third = job_runtime.run(JOB)

    assert (first.counts["approved"], first.counts["skipped"]) == (4, 4)
    assert (second.counts["approved"], second.counts["skipped"]) == (0, 4)
    # A skip is audited when it is made, not again on every run that sees it unchanged.
    assert len(audits_of_run(job_runtime.engine, first.run_id)) == 8
    assert audits_of_run(job_runtime.engine, second.run_id) == []
    assert (third.counts["approved"], third.counts["skipped"]) == (1, 3)
    final = statuses(sandbox, guests)
    assert final["late"] == "approved"
    assert {final[who] for who in ("gone", "nomembership", "stranger")} == {"pending_approval"}


def test_a_dry_run_decides_and_reports_but_writes_nothing(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer
) -> None:
    guests = seed_mix(sandbox, community)

    outcome = job_runtime.run(JOB, dry_run=True)

    assert (outcome.outcome, outcome.run_id) == ("succeeded", None)
    assert (outcome.counts["approved"], outcome.counts["declined"]) == (4, 4)
    assert sandbox.effects("luma", "update-status") == []
    assert sandbox.calls("luma", "update-status") == []
    assert sandbox.calls("slack", "chat.postMessage") == []
    assert decisions(job_runtime, community) == {}
    assert statuses(sandbox, guests)["active"] == "pending_approval"


def test_a_429_storm_slows_the_run_but_loses_nothing(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer
) -> None:
    guests = seed_mix(sandbox, community)
    sandbox.fault("luma", "update-status", status=429, count=4, retry_after=1, after=2)
    sandbox.fault("luma", "list-guests", status=429, count=1, retry_after=1)
    answered_429, waits = metric("provider_api_calls", status="429"), metric("rate_limit_waits")

    outcome = job_runtime.run(JOB)

    assert outcome.outcome == "succeeded", outcome.error
    assert statuses(sandbox, guests) == EXPECTED_DECLINE
    refused = [call for call in sandbox.calls("luma") if call["status"] == 429]
    assert len(refused) == 5
    assert outcome.counts["errors"] == 0
    # Every answer is counted, and the waits the Retry-Afters imposed too.
    assert metric("provider_api_calls", status="429") == answered_429 + 5
    assert metric("rate_limit_waits") >= waits + 1


def test_an_outage_mid_run_fails_the_run_with_what_was_done_and_the_next_run_finishes(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer
) -> None:
    guests = seed_mix(sandbox, community)
    sandbox.fault("luma", "update-status", status=503, count=-1, after=3)

    failed = job_runtime.run(JOB)

    assert failed.outcome == "failed"
    assert failed.error is not None
    assert "503" in failed.error
    assert failed.counts["approved"] + failed.counts["declined"] == 3
    row = job_run(job_runtime.engine, failed.run_id)
    assert (row.outcome, row.counts["approved"] + row.counts["declined"]) == ("failed", 3)
    [summary] = sandbox.effects("slack", "chat.postMessage")
    assert "failed" in summary["body"]["text"]

    sandbox.clear_faults()
    finished = job_runtime.run(JOB)

    assert finished.outcome == "succeeded"
    assert "already_decided" not in finished.counts  # decided guests are no longer pending
    assert finished.counts["approved"] + finished.counts["declined"] == 5
    # The page's decisions written before the outage (4 guests not yet told) are sent as made.
    assert finished.counts["resumed"] == 4
    assert statuses(sandbox, guests) == EXPECTED_DECLINE
    assert all(state == "done" for _, _, state in decisions(job_runtime, community).values())


def test_a_guest_luma_refuses_is_counted_as_an_error_and_the_run_goes_on(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer
) -> None:
    guests = seed_mix(sandbox, community)
    sandbox.fault("luma", "update-status", status=400, count=1)

    outcome = job_runtime.run(JOB)

    assert outcome.outcome == "succeeded"
    assert outcome.counts["errors"] == 1
    assert outcome.counts["approved"] + outcome.counts["declined"] == 7
    # The refused guest is still pending, and decided afresh by the next run.
    again = job_runtime.run(JOB)
    assert again.counts["approved"] + again.counts["declined"] == 1
    assert statuses(sandbox, guests) == EXPECTED_DECLINE


def test_without_a_luma_key_the_run_is_skipped(
    job_runtime: JobRuntime, sandbox: SandboxServer, database_url: str
) -> None:
    job_runtime.configure(job_settings(sandbox, database_url, luma_api_key=None))

    outcome = job_runtime.run(JOB)

    assert outcome.outcome == "skipped"
    assert outcome.error is not None
    assert "LUMA_API_KEY" in outcome.error
    assert sandbox.calls("luma") == []


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("a@x.org", ("approve", "active_member")),
        ("c@x.org", ("approve", "active_member")),  # cancel_scheduled: a member until it ends
        ("p@x.org", ("decline", "membership_past_due")),
        ("n@x.org", ("decline", "no_membership")),
        ("who@x.org", ("decline", "not_a_member")),
        ("", ("decline", "no_email")),
    ],
)
def test_decide(email: str, expected: tuple[str, str]) -> None:
    memberships = {
        "a@x.org": "active",
        "c@x.org": "cancel_scheduled",
        "p@x.org": "past_due",
        "n@x.org": None,
    }

    decision = decide(email, memberships, non_member_action="decline")

    assert (decision.action, decision.reason) == expected


def test_one_query_finds_a_page_of_memberships_by_lower_cased_email(
    job_runtime: JobRuntime, community: Community
) -> None:
    community.add("mixed", "past_due", email=community.email("Mixed").upper())
    community.add("plain", "active")

    with Session(job_runtime.engine) as session:
        found = membership_by_email(
            session,
            {community.email("mixed").lower(), community.email("plain"), "nobody@example.org"},
        )

    assert found == {
        community.email("mixed").lower(): "past_due",
        community.email("plain"): "active",
    }


def test_every_page_of_a_large_event_is_decided_while_guests_change_between_pages(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer
) -> None:
    guests = [{"email": community.email(f"stranger{n}")} for n in range(230)]
    [event] = sandbox.seed_luma_events(
        [{"id": f"evt-big-{community.tag}", "start_at": iso(5), "guests": guests}], replace=True
    )

    outcome = job_runtime.run(JOB)

    assert outcome.outcome == "succeeded", outcome.error
    assert (outcome.counts["guests_seen"], outcome.counts["declined"]) == (230, 230)
    # Pages of 100: each page's guests are declined before the next page is asked for, and the
    # cursor still lands on the right guest.
    assert len(sandbox.calls("luma", "list-guests")) == 3
    assert {guest["approval_status"] for guest in sandbox.luma_guests(event["id"])} == {"declined"}


def test_a_wrong_luma_key_fails_the_run_saying_luma_refused_it(
    job_runtime: JobRuntime, sandbox: SandboxServer, database_url: str
) -> None:
    job_runtime.configure(
        job_settings(sandbox, database_url, luma_api_key=SecretStr("not-a-luma-key"))
    )

    outcome = job_runtime.run(JOB)

    assert outcome.outcome == "failed"
    assert outcome.error is not None
    assert "luma answered 401" in outcome.error
    assert len(sandbox.calls("luma")) == 1  # a refusal is not retried


def test_a_decision_luma_took_before_the_run_died_is_confirmed_and_audited_not_made_again(
    job_runtime: JobRuntime, community: Community, sandbox: SandboxServer
) -> None:
    guests = seed_mix(sandbox, community)
    event_id, guest_id = guests["approved"]  # approved at Luma: as if our call went through ...
    with session_scope(sessionmaker(job_runtime.engine)) as session:
        session.add(  # ... and the run died before it could mark its decision done
            LumaDecision(
                event_id=event_id,
                guest_id=guest_id,
                email=community.email("active") + ".other",
                decision="approve",
                reason="active_member",
                state="started",
            )
        )

    outcome = job_runtime.run(JOB)

    assert outcome.outcome == "succeeded"
    assert outcome.counts["confirmed"] == 1
    assert decisions(job_runtime, community)[f"{event_id}/{guest_id}"] == (
        "approve",
        "active_member",
        "done",
    )
    [confirmed] = [
        entry
        for entry in audits_of_run(job_runtime.engine, outcome.run_id)
        if entry.entity_id == guest_id
    ]
    assert confirmed.action == "luma.guest_approved"
    assert confirmed.detail["confirmed"] == "no longer pending at Luma"
    # It was not sent again: only the 8 guests pending across both upcoming events were.
    assert len(sandbox.calls("luma", "update-status")) == 8
