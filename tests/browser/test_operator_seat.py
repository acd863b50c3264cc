"""The operator's seat in a real browser: sign in with an API key, find the dead letter a failing
task left, replay it and see the effect done once at the (sandbox) provider; discard another with a
reason; a form without its CSRF token and a key without the scope are refused."""

from __future__ import annotations

import os
import re
from datetime import datetime
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from schemas.tables import AuditEntry, DeadLetter, WebhookEvent
from tests.browser.conftest import Browser, OperatorKey, create_key
from tests.integration.conftest import Fleet
from tests.support.processes import wait_until
from tests.support.rows import dead_letters
from tests.support.sandbox import SandboxServer
from tests.support.stripe_fixtures import StripeCustomer
from workers.celery_app import make_celery

pytestmark = pytest.mark.integration
ANNOUNCE = "tasks.notification.announce_payment_failed"
ALL_SCOPES = "dlq:read,dlq:write,events:read,events:replay"


def _inbox_row(engine: Engine, event_id: str) -> WebhookEvent:
    with Session(engine) as session:
        row = session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id))
        assert row is not None
        return row


def _posts_about(sandbox: SandboxServer, needle: str) -> list[dict[str, Any]]:
    return [
        call
        for call in sandbox.calls("slack", "chat.postMessage")
        if needle in str(call["body"].get("text", ""))
    ]


def _failed_payment_dead_letter(
    fleet: Fleet, sandbox: SandboxServer, engine: Engine
) -> tuple[DeadLetter, str, str]:
    """A Stripe payment failure whose Slack announcement Slack refuses for good: a dead letter.

    Slack refuses every post until the dead letter is there (a single refusal could be taken by an
    operators' alert about an earlier test's dead letter), and none after."""
    sandbox.fault(
        "slack",
        "chat.postMessage",
        status=400,
        count=-1,
        body={"ok": False, "error": "invalid_blocks"},
    )
    event = StripeCustomer.new().event("invoice.payment_failed")
    invoice_id = event["data"]["object"]["id"] = f"in_B{event['id'][5:]}"
    assert fleet.deliver(event).status_code == 200
    inbox_id = _inbox_row(engine, event["id"]).id
    wait_until(lambda: dead_letters(engine, inbox_id=inbox_id), timeout=30, what="a dead letter")
    sandbox.clear_faults()
    (dead,) = dead_letters(engine, inbox_id=inbox_id)
    return dead, event["id"], invoice_id


def _fault_task_dead_letter(fleet: Fleet, engine: Engine) -> DeadLetter:
    marker = f"browser-{os.getpid()}-{datetime.now().timestamp()}"
    make_celery(fleet.settings()).send_task("tests.fault_tasks.always_permanent", args=[marker])
    wait_until(lambda: dead_letters(engine, args=[marker]), timeout=30, what="a dead letter")
    (dead,) = dead_letters(engine, args=[marker])
    return dead


def _sign_in(browser: Browser, fleet: Fleet, operator: OperatorKey, path: str) -> None:
    """Ask for `path`, be sent to the sign-in form, sign in, and land back on `path`."""
    page = browser.page
    page.goto(f"{fleet.url}{path}")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API key").fill(operator.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(f"signed in as {operator.name}")).to_be_visible()
    assert page.url.endswith(path)


def _actors(engine: Engine, action: str, dead_letter_id: int) -> list[str]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(AuditEntry.actor).where(
                    AuditEntry.action == action, AuditEntry.entity_id == str(dead_letter_id)
                )
            )
        )


def test_operator_replays_a_dead_letter_and_the_effect_is_done_once(
    browser: Browser, fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    dead, event_id, invoice_id = _failed_payment_dead_letter(fleet, clean_sandbox, pg_engine)
    operator = create_key(fleet, ALL_SCOPES)
    page = browser.page

    _sign_in(browser, fleet, operator, "/admin/dead-letters")
    groups = page.locator("#groups")
    expect(groups).to_contain_text(ANNOUNCE)
    expect(groups).to_contain_text("PermanentError")
    browser.screenshot("dead-letters")
    page.locator("#dead-letters").get_by_role("link", name=str(dead.id), exact=True).click()
    expect(page.get_by_role("heading", name=f"Dead letter {dead.id}")).to_be_visible()
    expect(page.locator("#status")).to_have_text("dead")
    expect(page.locator("#traceback")).to_contain_text("PermanentError")
    expect(page.locator("#args")).to_contain_text(str(dead.inbox_id))
    expect(page.get_by_text("invoice.payment_failed")).to_be_visible()  # the originating webhook
    browser.screenshot("detail")
    page.locator("#replay").click()

    expect(page.get_by_text(f"Replayed dead letter {dead.id}")).to_be_visible()
    expect(page.locator("#status")).to_have_text("replayed")
    browser.screenshot("replayed")
    wait_until(
        lambda: _inbox_row(pg_engine, event_id).status == "processed", timeout=30, what=event_id
    )
    posts = _posts_about(clean_sandbox, invoice_id)
    assert [post["status"] for post in posts] == [400, 200]
    assert [post["effect"] for post in posts] == [False, True]  # done once, by the replay
    page.reload()
    expect(page.locator("#status")).to_have_text("replayed")
    expect(page.get_by_role("table").last).to_contain_text(f"web:{operator.name}")  # history
    assert _actors(pg_engine, "dead_letter.replayed", dead.id) == [f"web:{operator.name}"]


def test_operator_discards_a_dead_letter_with_a_reason(
    browser: Browser, fleet: Fleet, pg_engine: Engine
) -> None:
    dead = _fault_task_dead_letter(fleet, pg_engine)
    operator = create_key(fleet, ALL_SCOPES)
    page = browser.page

    _sign_in(browser, fleet, operator, f"/admin/dead-letters/{dead.id}")
    page.get_by_label("Discard, because").fill("a test marker, nothing to redo")
    browser.screenshot("discarding")
    page.locator("#discard").click()

    expect(page.get_by_text(f"Discarded dead letter {dead.id}")).to_be_visible()
    expect(page.locator("#status")).to_have_text("discarded")
    expect(page.locator("#discard-reason")).to_have_text("a test marker, nothing to redo")
    expect(page.locator("#replay")).to_have_count(0)
    browser.screenshot("discarded")
    (row,) = dead_letters(pg_engine, id=dead.id)
    assert (row.status, row.discard_reason) == ("discarded", "a test marker, nothing to redo")
    assert _actors(pg_engine, "dead_letter.discarded", dead.id) == [f"web:{operator.name}"]


def test_a_form_sent_without_its_csrf_token_is_refused(
    browser: Browser, fleet: Fleet, pg_engine: Engine
) -> None:
    dead = _fault_task_dead_letter(fleet, pg_engine)
    operator = create_key(fleet, ALL_SCOPES)
    page = browser.page
    _sign_in(browser, fleet, operator, f"/admin/dead-letters/{dead.id}")

    # What a forged form would send: the right session cookie, but no token.
    for field in page.locator("form:has(#replay) input[name=csrf_token]").all():
        field.evaluate("node => node.remove()")
    page.locator("#replay").click()

    expect(page.get_by_role("heading", name=re.compile("Form expired"))).to_be_visible()
    browser.screenshot("csrf-refused")
    assert dead_letters(pg_engine, id=dead.id)[0].status == "dead"
    assert _actors(pg_engine, "dead_letter.replayed", dead.id) == []


def test_a_key_without_the_scope_sees_403(browser: Browser, fleet: Fleet) -> None:
    operator = create_key(fleet, "events:read")
    page = browser.page
    _sign_in(browser, fleet, operator, "/admin/events")

    response = page.goto(f"{fleet.url}/admin/dead-letters")

    assert response is not None
    assert response.status == 403
    expect(page.get_by_text("lacks the scope 'dlq:read'")).to_be_visible()
    expect(page.get_by_role("link", name="Dead letters")).to_have_count(0)
    browser.screenshot("forbidden")


def test_the_health_page_shows_the_webhooks_and_calls_of_the_last_hour(
    browser: Browser, fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    _failed_payment_dead_letter(fleet, clean_sandbox, pg_engine)
    operator = create_key(fleet, "events:read")
    page = browser.page

    _sign_in(browser, fleet, operator, "/admin/health")

    stripe = page.locator("#provider-stripe")
    expect(stripe).to_be_visible()
    assert stripe.locator("td").nth(1).inner_text() != "never"  # a webhook came in
    slack = page.locator("#provider-slack")
    assert slack.locator("td").nth(5).inner_text() != "never"  # Slack refused a call
    browser.screenshot("health")
