"""The member lifecycle end to end: Clerk and Stripe webhooks through the real gateway, Redis,
PostgreSQL and Celery worker, with Mailchimp, SendGrid, Slack and Stripe played by the sandbox.

Assertions are on the final database state and on what the sandbox recorded, never on log lines.
"""

from __future__ import annotations

import random
import secrets
import time
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from schemas.tables import Member, Membership
from tests.conftest import STRIPE_SECRET
from tests.integration.conftest import Fleet
from tests.support.processes import wait_until
from tests.support.provider_secrets import current
from tests.support.sandbox import SandboxServer
from workers.sandbox.clerk_webhooks import build_user_event
from workers.sandbox.scenarios import Delivery, Person, cancel, deliver, payment_failed, signup

pytestmark = pytest.mark.integration
LIST_ID = "sandbox-audience"
SECRETS = {"stripe": STRIPE_SECRET, "clerk": current("CLERK_WEBHOOK_SIGNING_SECRET")}


def _person() -> Person:
    return Person.new(f"member-{secrets.token_hex(5)}@example.com")


def _send(fleet: Fleet, deliveries: list[Delivery]) -> None:
    for delivery in deliveries:
        response = deliver(fleet.url, delivery, SECRETS)
        assert response.status_code == 200, response.text


def _state(engine: Engine, who: Person) -> tuple[str | None, str | None, bool | None]:
    """(status, tier, visible) of the person's membership, as the database holds it."""
    with Session(engine) as session:
        row = session.execute(
            select(Membership.status, Membership.tier, Member.visible)
            .join(Member, Member.id == Membership.member_id)
            .where(Member.stripe_customer_id == who.customer)
        ).first()
    return (row[0], row[1], row[2]) if row else (None, None, None)


def _tags(sandbox: SandboxServer, who: Person) -> set[str]:
    member = sandbox.mailchimp_member(LIST_ID, who.email)
    if member is None:
        return set()
    return {tag["name"] if isinstance(tag, dict) else str(tag) for tag in member["tags"]}


def _emails_to(sandbox: SandboxServer, who: Person, template: str) -> list[dict[str, Any]]:
    return [
        mail
        for mail in sandbox.sent_emails()
        if mail["body"].get("template_id") == template
        and who.email in str(mail["body"].get("personalizations"))
    ]


def _settled(check: Any, *, timeout: float = 30) -> None:
    """Wait until `check()` holds, then make sure it still holds a moment later (nothing more ran)."""
    wait_until(check, timeout=timeout, what=getattr(check, "__doc__", None) or "the final state")
    time.sleep(1.5)
    assert check()


def _signed_up(fleet: Fleet, sandbox: SandboxServer, engine: Engine, who: Person) -> None:
    _send(fleet, signup(who, int(time.time())))

    def done() -> bool:
        """an active member, tagged in Mailchimp, welcomed once"""
        return (
            _state(engine, who) == ("active", "member", True)
            and {"member", "active"} <= _tags(sandbox, who)
            and len(_emails_to(sandbox, who, "d-sandbox-welcome")) == 1
        )

    _settled(done)


def test_signup_makes_an_active_member_tagged_in_mailchimp_and_welcomed_once(
    fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    who = _person()

    _signed_up(fleet, clean_sandbox, pg_engine, who)

    member = clean_sandbox.mailchimp_member(LIST_ID, who.email)
    assert member is not None
    assert member["status"] == "subscribed"
    assert _tags(clean_sandbox, who) >= {"member", "active"}
    assert "alumni" not in _tags(clean_sandbox, who)
    (welcome,) = _emails_to(clean_sandbox, who, "d-sandbox-welcome")
    assert welcome["body"]["personalizations"][0]["dynamic_template_data"]["tier"] == "member"


def test_cancel_at_period_end_then_the_sweep_makes_an_alumnus(
    fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    who = _person()
    _signed_up(fleet, clean_sandbox, pg_engine, who)

    _send(fleet, cancel(who, int(time.time()), ends_in=4))
    wait_until(lambda: _state(pg_engine, who)[0] == "cancel_scheduled", what="cancel_scheduled")

    def ended() -> bool:
        """canceled, hidden, tagged alumni and no longer active"""
        tags = _tags(clean_sandbox, who)
        return (
            _state(pg_engine, who) == ("canceled", "member", False)
            and "alumni" in tags
            and "active" not in tags
        )

    _settled(ended, timeout=40)


def test_payment_failure_delivered_three_times_emails_once_and_posts_once_despite_a_500(
    fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    who = _person()
    _signed_up(fleet, clean_sandbox, pg_engine, who)
    clean_sandbox.fault("sendgrid", "mail-send", status=500, count=1)
    (failure,) = payment_failed(who, int(time.time()))
    invoice = failure.event["data"]["object"]["id"]

    _send(fleet, [failure, failure, failure])

    def handled() -> bool:
        """past_due, one payment email, one Slack post"""
        posts = [
            call
            for call in clean_sandbox.effects("slack", "chat.postMessage")
            if invoice in str(call["body"])
        ]
        return (
            _state(pg_engine, who)[0] == "past_due"
            and len(_emails_to(clean_sandbox, who, "d-sandbox-payment-failed")) == 1
            and len(posts) == 1
        )

    _settled(handled)
    attempts = [
        call["status"]
        for call in clean_sandbox.calls("sendgrid", "mail-send")
        if who.email in str(call["body"]) and "payment" in str(call["body"])
    ]
    assert attempts == [500, 202]


@pytest.mark.parametrize("order", ["reversed", "shuffled-with-duplicates"])
def test_signup_events_in_any_order_and_repeated_end_in_the_same_state(
    fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine, order: str
) -> None:
    who = _person()
    deliveries = signup(who, int(time.time()))
    if order == "reversed":
        deliveries.reverse()
    else:
        deliveries = deliveries + deliveries[1:3]
        random.Random(7).shuffle(deliveries)

    _send(fleet, deliveries)

    def same_as_in_order() -> bool:
        """active, tagged, one welcome: what the in-order signup gives"""
        return (
            _state(pg_engine, who) == ("active", "member", True)
            and {"member", "active"} <= _tags(clean_sandbox, who)
            and len(_emails_to(clean_sandbox, who, "d-sandbox-welcome")) == 1
        )

    _settled(same_as_in_order)
    with Session(pg_engine) as session:
        member = session.scalars(
            select(Member).where(Member.stripe_customer_id == who.customer)
        ).one()
    assert (member.email, member.clerk_user_id) == (who.email, who.clerk_user)


def test_mailchimp_429_is_waited_out_and_the_sync_completes(
    fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    who = _person()
    clean_sandbox.fault("mailchimp", "set-list-member", status=429, count=1, retry_after=1)

    _signed_up(fleet, clean_sandbox, pg_engine, who)

    upserts = [
        call
        for call in clean_sandbox.calls("mailchimp", "set-list-member")
        if who.email in str(call["body"])
    ]
    assert [call["status"] for call in upserts][:2] == [429, 200]
    waited = float(upserts[1]["received_at"]) - float(upserts[0]["received_at"])
    print(f"\nMailchimp 429 Retry-After 1: next attempt after {waited:.2f}s")
    assert waited >= 1.0


def test_new_primary_email_in_clerk_moves_the_member_the_stripe_customer_and_the_subscriber(
    fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    who = _person()
    clean_sandbox.seed_stripe_customer(who.customer, email=who.email)
    _signed_up(fleet, clean_sandbox, pg_engine, who)
    new_email = f"renamed-{secrets.token_hex(4)}@example.com"
    later_ms = int(time.time() * 1000) + 5_000
    change = build_user_event(
        "user.updated", user_id=who.clerk_user, email=new_email, updated_ms=later_ms
    )

    _send(fleet, [Delivery("clerk", change), Delivery("clerk", change)])

    def moved() -> bool:
        """the new address everywhere, the old one nowhere"""
        customer = clean_sandbox.stripe_customer(who.customer) or {}
        return (
            _member_email(pg_engine, who) == new_email
            and customer.get("email") == new_email
            and clean_sandbox.mailchimp_member(LIST_ID, new_email) is not None
            and clean_sandbox.mailchimp_member(LIST_ID, who.email) is None
        )

    _settled(moved)
    updates = [
        call
        for call in clean_sandbox.effects("stripe", "update-customer")
        if who.customer in str(call["path"])
    ]
    assert len(updates) == 1


def test_deleted_clerk_user_is_anonymised_and_removed_from_mailchimp(
    fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    who = _person()
    _signed_up(fleet, clean_sandbox, pg_engine, who)
    deleted = build_user_event("user.deleted", user_id=who.clerk_user, email=who.email)

    _send(fleet, [Delivery("clerk", deleted)])

    def gone() -> bool:
        """no personal data here, no subscriber there"""
        return (
            _member_email(pg_engine, who) is None
            and clean_sandbox.mailchimp_member(LIST_ID, who.email) is None
        )

    _settled(gone)
    assert _state(pg_engine, who)[2] is False


def _member_email(engine: Engine, who: Person) -> str | None:
    with Session(engine) as session:
        return session.scalar(select(Member.email).where(Member.stripe_customer_id == who.customer))


@pytest.mark.parametrize(
    ("scenario", "final_status"), [("cancel", "cancel_scheduled"), ("payment-failed", "past_due")]
)
def test_later_scenarios_delivered_backwards_and_twice_end_as_in_order(
    fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine, scenario: str, final_status: str
) -> None:
    who = _person()
    now = int(time.time())
    later = cancel(who, now, ends_in=3600) if scenario == "cancel" else payment_failed(who, now)
    everything = signup(who, now) + later
    backwards_and_repeated = list(reversed(everything)) + everything[1:]

    _send(fleet, backwards_and_repeated)

    def as_in_order() -> bool:
        """the state and messages the in-order sequence gives"""
        welcome = _emails_to(clean_sandbox, who, "d-sandbox-welcome")
        failed = _emails_to(clean_sandbox, who, "d-sandbox-payment-failed")
        return (
            _state(pg_engine, who)[:2] == (final_status, "member")
            and len(welcome) == 1
            and len(failed) == (1 if scenario == "payment-failed" else 0)
        )

    _settled(as_in_order)
