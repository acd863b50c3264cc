"""The made-up community: the same for a seed, a realistic mix, seeded into PostgreSQL in bulk and
into the sandbox process through its control API, and by `hookfleet sandbox seed`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from schemas.tables import Member, Membership
from tests.support.databases import migrated_database
from tests.support.processes import hookfleet
from tests.support.sandbox import SandboxServer
from workers.sandbox.community import (
    APPROVABLE,
    GUEST_ACTIVE_MEMBER,
    GUEST_INACTIVE_MEMBER,
    GUEST_UNKNOWN,
    Community,
    build_community,
    seed_database,
    seed_sandbox,
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(Path(tmp_path_factory.mktemp("sandbox"))) as server:
        yield server


@pytest.fixture(scope="module")
def community() -> Community:
    return build_community(2000, 400, 4, seed=7)


def test_one_seed_builds_the_same_community_and_another_seed_a_different_one() -> None:
    assert build_community(300, 60, 3, seed=3) == build_community(300, 60, 3, seed=3)
    assert build_community(300, 60, 3, seed=3) != build_community(300, 60, 3, seed=4)


def test_members_come_in_a_realistic_mix(community: Community) -> None:
    summary = community.summary()

    assert summary["members"] == 2000
    assert set(summary["memberships"]) == {"active", "past_due", "cancel_scheduled", "canceled"}
    assert summary["memberships"]["active"] > 2000 * 0.6
    assert 2000 * 0.85 < summary["visible_members"] < 2000
    assert len({member.email.lower() for member in community.members}) == 2000


def test_slack_holds_most_members_in_every_state_plus_slack_only_people_and_bots(
    community: Community,
) -> None:
    kinds = community.summary()["slack"]
    by_email = {
        str(user["email"]).lower(): user for user in community.slack_users if "email" in user
    }
    bots = [user for user in community.slack_users if user.get("is_bot")]

    assert set(kinds) == {"active", "restricted", "ultra_restricted", "deleted", "missing"}
    assert kinds["active"] > 2000 * 0.6
    for member in community.members:
        user = by_email.get(member.email.lower())
        if member.slack == "missing":
            assert user is None
            assert member.expected_slack_status == "not_found"
            continue
        assert user is not None
        assert user["deleted"] is (member.slack == "deleted")
        assert user["is_ultra_restricted"] is (member.slack == "ultra_restricted")
    assert any(m.slack_email and m.slack_email != m.email for m in community.members)
    members = {member.email.lower() for member in community.members}
    assert len(set(by_email) - members) >= 20
    assert bots


def test_events_hold_the_pending_rsvps_asked_for_with_known_and_unknown_guests(
    community: Community,
) -> None:
    members = {member.email: member for member in community.members}

    assert len(community.events) == 4
    assert community.pending_guests == 400
    kinds = community.summary()["guests"]
    assert set(kinds) == {GUEST_ACTIVE_MEMBER, GUEST_INACTIVE_MEMBER, GUEST_UNKNOWN}
    for event in community.events:
        emails = [guest.email for guest in event.guests]
        assert len(emails) == len(set(emails))
        assert sum(g.approval_status == "pending_approval" for g in event.guests) == 100
        assert any(g.approval_status == "approved" for g in event.guests)
        for guest in event.guests:
            member = members.get(guest.email)
            if guest.kind == GUEST_UNKNOWN:
                assert member is None
            else:
                assert member is not None
                approvable = member.membership_status in APPROVABLE
                assert approvable is (guest.kind == GUEST_ACTIVE_MEMBER)


def test_a_community_cannot_have_rsvps_without_events() -> None:
    with pytest.raises(ValueError, match="event"):
        build_community(10, 5, 0)


def test_seed_database_inserts_members_and_memberships_once(
    db_session: Session, community: Community
) -> None:
    inserted = seed_database(db_session, community)
    again = seed_database(db_session, community)

    assert (inserted, again) == (2000, 0)
    statuses = dict(
        db_session.execute(
            select(Membership.status, func.count())
            .join(Member, Member.id == Membership.member_id)
            .where(Member.email.in_([m.email for m in community.members]))
            .group_by(Membership.status)
        ).all()
    )
    assert statuses == community.summary()["memberships"]
    visible = db_session.scalar(
        select(func.count()).where(
            Member.visible.is_(True), Member.email.in_([m.email for m in community.members])
        )
    )
    assert visible == community.summary()["visible_members"]


def test_seed_sandbox_gives_the_sandbox_the_slack_users_and_luma_guests(
    sandbox: SandboxServer, community: Community
) -> None:
    sandbox.reset()

    seeded = seed_sandbox(sandbox.url, community)

    assert seeded["slack_users"] == len(community.slack_users)
    assert len(sandbox.slack_users()) == len(community.slack_users)
    assert [event["id"] for event in seeded["events"]] == [event.id for event in community.events]
    guests = sandbox.luma_guests(community.events[0].id)
    expected = {guest.email: guest.approval_status for guest in community.events[0].guests}
    assert {guest["user_email"]: guest["approval_status"] for guest in guests} == expected


def test_seed_sandbox_replaces_what_the_sandbox_held(sandbox: SandboxServer) -> None:
    seed_sandbox(sandbox.url, build_community(200, 40, 2, seed=1))

    seed_sandbox(sandbox.url, build_community(100, 10, 1, seed=2))

    assert len(sandbox.luma_guests()) == len(build_community(100, 10, 1, seed=2).events[0].guests)
    assert len(sandbox.slack_users()) == len(build_community(100, 10, 1, seed=2).slack_users)


@pytest.fixture
def own_database_url(services: None) -> Iterator[str]:
    """A migrated database of this test's own: the CLI commits, and nobody else should count it."""
    with migrated_database("hookfleet_seed") as url:
        yield url


def test_hookfleet_sandbox_seed_fills_the_database_and_the_sandbox(
    sandbox: SandboxServer, own_database_url: str
) -> None:
    result = hookfleet(
        "sandbox",
        "seed",
        "--members",
        "300",
        "--rsvps",
        "60",
        "--events",
        "3",
        "--sandbox-url",
        sandbox.url,
        env={"DATABASE_URL": own_database_url},
    )
    rerun = hookfleet(
        "sandbox",
        "seed",
        "--members",
        "300",
        "--rsvps",
        "60",
        "--events",
        "3",
        "--no-sandbox",
        env={"DATABASE_URL": own_database_url},
    )

    assert result.returncode == 0, result.stderr
    assert "database: 300 new members" in result.stdout
    assert "3 Luma events" in result.stdout
    assert "database: 0 new members (300 were there already)" in rerun.stdout
    with psycopg.connect(own_database_url) as connection:
        row = connection.execute("SELECT count(*) FROM memberships").fetchone()
    assert row == (300,)
    pending = [g for g in sandbox.luma_guests() if g["approval_status"] == "pending_approval"]
    assert len(pending) == 60


def test_hookfleet_sandbox_seed_says_what_is_wrong_with_its_arguments() -> None:
    result = hookfleet(
        "sandbox", "seed", "--rsvps", "5", "--events", "0", "--no-database", "--no-sandbox", env={}
    )

    assert result.returncode == 2
    assert "event" in result.stderr
