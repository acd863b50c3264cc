"""A made-up community, the same every time for a seed: members in our database, their Slack
workspace and Luma events with guests pending approval, for the scheduled jobs' tests, demo and benchmark.

`build_community(members, rsvps, events)` decides everything up front (no I/O), so a test can seed it
and then check each member's Slack status and each guest's decision against what the generator meant:

- members: a realistic mix of membership statuses (mostly active, some past_due, cancel_scheduled
  and canceled), most of them visible in the directory;
- Slack: most members have a user (active, or restricted / ultra-restricted guests, or deactivated),
  some have none; some Slack emails differ in case from ours (matching is by lower-cased email);
  plus Slack-only people and bots;
- Luma: `rsvps` guests pending approval spread over `events` upcoming events, who are active
  members, members who are not active (past due or canceled), or people unknown to us; and a few
  guests already approved, whom the job must leave alone.

`seed_database` bulk-inserts the members and memberships (50,000 in seconds on PostgreSQL);
`seed_sandbox` gives the sandbox the Slack users and the Luma events through its control API.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from schemas.tables import Member, Membership

# Membership statuses (tasks.membership_states.Status; workers/ may not import tasks/).
ACTIVE, PAST_DUE, CANCEL_SCHEDULED, CANCELED = "active", "past_due", "cancel_scheduled", "canceled"
# Members who count as active for Luma approval (tasks.approval.ACTIVE_STATUSES).
APPROVABLE = frozenset({ACTIVE, CANCEL_SCHEDULED})
MEMBERSHIP_MIX = ((ACTIVE, 0.80), (PAST_DUE, 0.07), (CANCEL_SCHEDULED, 0.03), (CANCELED, 0.10))
VISIBLE_SHARE = 0.95

# What Slack holds for a member, and the status slack-sync records for it.
SLACK_MIX = (
    ("active", 0.78),
    ("restricted", 0.05),
    ("ultra_restricted", 0.02),
    ("deleted", 0.05),
    ("missing", 0.10),
)
SLACK_RECORDED_STATUS = {
    "active": "active",
    "restricted": "inactive",
    "ultra_restricted": "inactive",
    "deleted": "deactivated",
    "missing": "not_found",
}
SLACK_EMAIL_IN_OTHER_CASE = 0.10
SLACK_ONLY_SHARE = 0.02  # people in the workspace who are not members
BOTS_PER_THOUSAND = 1

# Who a pending guest is.
GUEST_ACTIVE_MEMBER, GUEST_INACTIVE_MEMBER, GUEST_UNKNOWN = (
    "active_member",
    "inactive_member",
    "unknown",
)
GUEST_MIX = ((GUEST_ACTIVE_MEMBER, 0.70), (GUEST_INACTIVE_MEMBER, 0.15), (GUEST_UNKNOWN, 0.15))
APPROVED_GUESTS_PER_PENDING = 0.05

_FIRST = (
    "ada",
    "grace",
    "alan",
    "barbara",
    "edsger",
    "frances",
    "john",
    "katherine",
    "linus",
    "margaret",
    "niklaus",
    "radia",
    "tim",
    "vint",
    "whitfield",
    "yukihiro",
    "guido",
    "bjarne",
    "dennis",
    "ken",
)
_LAST = (
    "lovelace",
    "hopper",
    "turing",
    "liskov",
    "dijkstra",
    "allen",
    "backus",
    "johnson",
    "torvalds",
    "hamilton",
    "wirth",
    "perlman",
    "berners-lee",
    "cerf",
    "diffie",
    "matsumoto",
    "rossum",
    "stroustrup",
    "ritchie",
    "thompson",
)
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example")


@dataclass(frozen=True)
class CommunityMember:
    email: str
    name: str
    visible: bool
    membership_status: str
    slack: str  # a key of SLACK_RECORDED_STATUS
    slack_email: str | None  # the email Slack holds (maybe in another case); None when missing

    @property
    def expected_slack_status(self) -> str:
        """What slack-sync should record for this member."""
        return SLACK_RECORDED_STATUS[self.slack]


@dataclass(frozen=True)
class CommunityGuest:
    email: str
    name: str
    kind: str  # GUEST_ACTIVE_MEMBER, GUEST_INACTIVE_MEMBER or GUEST_UNKNOWN
    approval_status: str  # as seeded: pending_approval, or approved (to be left alone)


@dataclass(frozen=True)
class CommunityEvent:
    id: str
    name: str
    start_at: str
    guests: tuple[CommunityGuest, ...]


@dataclass(frozen=True)
class Community:
    members: tuple[CommunityMember, ...]
    slack_users: tuple[dict[str, Any], ...]  # seeds for POST /_sandbox/slack/users
    events: tuple[CommunityEvent, ...]
    seed: int

    @property
    def pending_guests(self) -> int:
        return sum(
            guest.approval_status == "pending_approval"
            for event in self.events
            for guest in event.guests
        )

    def summary(self) -> dict[str, Any]:
        """Counts by kind, for the CLI and the benchmark's report."""

        def tally(values: Iterator[str]) -> dict[str, int]:
            counts: dict[str, int] = {}
            for value in values:
                counts[value] = counts.get(value, 0) + 1
            return dict(sorted(counts.items()))

        return {
            "members": len(self.members),
            "visible_members": sum(member.visible for member in self.members),
            "memberships": tally(member.membership_status for member in self.members),
            "slack": tally(member.slack for member in self.members),
            "slack_users": len(self.slack_users),
            "events": len(self.events),
            "pending_guests": self.pending_guests,
            "guests": tally(
                guest.kind
                for event in self.events
                for guest in event.guests
                if guest.approval_status == "pending_approval"
            ),
        }


def _pick(rng: random.Random, mix: Sequence[tuple[str, float]]) -> str:
    return rng.choices([name for name, _ in mix], weights=[weight for _, weight in mix])[0]


def _person(rng: random.Random, number: int) -> tuple[str, str]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return f"{first}.{last}.{number}@{rng.choice(_DOMAINS)}", f"{first.title()} {last.title()}"


def _other_case(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local.title()}@{domain.upper()}"


def _build_members(rng: random.Random, count: int) -> list[CommunityMember]:
    members = []
    for number in range(count):
        email, name = _person(rng, number)
        slack = _pick(rng, SLACK_MIX)
        slack_email = None
        if slack != "missing":
            slack_email = _other_case(email) if rng.random() < SLACK_EMAIL_IN_OTHER_CASE else email
        members.append(
            CommunityMember(
                email=email,
                name=name,
                visible=rng.random() < VISIBLE_SHARE,
                membership_status=_pick(rng, MEMBERSHIP_MIX),
                slack=slack,
                slack_email=slack_email,
            )
        )
    return members


def _build_slack_users(
    rng: random.Random, members: Sequence[CommunityMember]
) -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = []
    for member in members:
        if member.slack_email is None:
            continue
        users.append(
            {
                "email": member.slack_email,
                "real_name": member.name,
                "deleted": member.slack == "deleted",
                # An ultra-restricted (single-channel) guest is restricted too, as Slack reports it.
                "is_restricted": member.slack in ("restricted", "ultra_restricted"),
                "is_ultra_restricted": member.slack == "ultra_restricted",
            }
        )
    for number in range(round(len(members) * SLACK_ONLY_SHARE)):
        email, name = _person(rng, number)
        users.append({"email": f"slack-only.{email}", "real_name": name})
    for number in range(max(1, len(members) * BOTS_PER_THOUSAND // 1000)):
        users.append({"is_bot": True, "real_name": f"Helper Bot {number + 1}"})
    rng.shuffle(users)  # the workspace's order is not ours
    return users


def _build_events(
    rng: random.Random, members: Sequence[CommunityMember], rsvps: int, events: int
) -> list[CommunityEvent]:
    active = [m for m in members if m.membership_status in APPROVABLE]
    inactive = [m for m in members if m.membership_status not in APPROVABLE]
    first_start = datetime(2030, 1, 1, 18, tzinfo=UTC)
    built = []
    for index in range(events):
        pending = rsvps // events + (1 if index < rsvps % events else 0)
        approved = round(pending * APPROVED_GUESTS_PER_PENDING)
        taken: set[str] = set()
        guests: list[CommunityGuest] = []
        for position in range(pending + approved):
            kind = _pick(rng, GUEST_MIX)
            pool = active if kind == GUEST_ACTIVE_MEMBER else inactive
            if kind != GUEST_UNKNOWN and len(taken) < len(pool) // 2:
                member = rng.choice(pool)
                while member.email in taken:
                    member = rng.choice(pool)
                email, name = member.email, member.name
            else:  # unknown to us (or the pool is nearly used up)
                kind = GUEST_UNKNOWN
                email, name = _person(rng, index * 1_000_000 + position)
                email = f"guest.{email}"
            taken.add(email)
            status = "pending_approval" if position < pending else "approved"
            guests.append(CommunityGuest(email, name, kind, status))
        rng.shuffle(guests)
        start = first_start + timedelta(days=7 * index)
        built.append(
            CommunityEvent(
                id=f"evt-community{index + 1:03d}",
                name=f"Community night #{index + 1}",
                start_at=start.isoformat().replace("+00:00", "Z"),
                guests=tuple(guests),
            )
        )
    return built


def build_community(members: int, rsvps: int, events: int, seed: int = 1) -> Community:
    """The community for `seed`: `members` members, their Slack workspace, and `rsvps` guests pending
    approval over `events` upcoming Luma events (2030 onwards, a week apart)."""
    if members < 0 or rsvps < 0 or events < 0:
        raise ValueError("members, rsvps and events cannot be negative")
    if rsvps and not events:
        raise ValueError("RSVPs need at least one event")
    rng = random.Random(seed)
    people = _build_members(rng, members)
    return Community(
        members=tuple(people),
        slack_users=tuple(_build_slack_users(rng, people)),
        events=tuple(_build_events(rng, people, rsvps, events)),
        seed=seed,
    )


# seeding --------------------------------------------------------------------------------------------

_CHUNK = 5000
T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def seed_database(session: Session, community: Community) -> int:
    """Insert the members our database does not have yet (by lower-cased email) with their
    memberships, in bulk; return how many were inserted. The caller commits."""
    existing = {
        email
        for (email,) in session.execute(select(func.lower(Member.email))).all()
        if email is not None
    }
    new = [member for member in community.members if member.email.lower() not in existing]
    now = datetime.now(UTC)
    for chunk in _chunks(new):
        rows = [
            {
                "email": member.email,
                "name": member.name,
                "visible": member.visible,
                "created_at": now,
                "updated_at": now,
            }
            for member in chunk
        ]
        inserted = session.execute(insert(Member).returning(Member.id, Member.email), rows).all()
        ids = {email: member_id for member_id, email in inserted}
        session.execute(
            insert(Membership),
            [
                {
                    "member_id": ids[member.email],
                    "status": member.membership_status,
                    "tier": "member",
                    "current_period_end": now + timedelta(days=30),
                    "created_at": now,
                    "updated_at": now,
                }
                for member in chunk
            ],
        )
    session.flush()
    return len(new)


def seed_sandbox(
    base_url: str, community: Community, *, replace: bool = True, timeout: float = 120.0
) -> dict[str, Any]:
    """Give the sandbox at `base_url` the community's Slack users and Luma events (replacing what it
    held, unless `replace` is False); return `{"slack_users": n, "events": [{"id", "guests": [...]}]}`."""
    base = base_url.rstrip("/")
    users = list(community.slack_users)
    with httpx.Client(base_url=base, timeout=timeout) as client:
        held = 0
        for number, chunk in enumerate(_chunks(users, 10_000)):
            response = client.post(
                "/_sandbox/slack/users",
                json={"users": list(chunk), "replace": replace and number == 0},
            )
            response.raise_for_status()
            held = int(response.json()["users"])
        if replace and not users:
            client.post(
                "/_sandbox/slack/users", json={"users": [], "replace": True}
            ).raise_for_status()
        response = client.post(
            "/_sandbox/luma/events",
            json={
                "replace": replace,
                "events": [
                    {
                        "id": event.id,
                        "name": event.name,
                        "start_at": event.start_at,
                        "guests": [
                            {
                                "email": guest.email,
                                "name": guest.name,
                                "approval_status": guest.approval_status,
                            }
                            for guest in event.guests
                        ],
                    }
                    for event in community.events
                ],
            },
        )
        response.raise_for_status()
    return {"slack_users": held, "events": response.json()["events"]}
