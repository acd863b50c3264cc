"""Retries, dead letters, alerts and replay on real processes, with Slack played by the sandbox.

The task under test is the real `announce_payment_failed` (a Stripe `invoice.payment_failed` posts
to the operators' Slack channel once); faults are injected in the sandbox's chat.postMessage.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime
from itertools import pairwise
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from schemas.tables import AuditEntry, DeadLetter, InboxStatus, WebhookEvent
from tests.integration.conftest import OPERATORS_CHANNEL, Fleet
from tests.support.processes import hookfleet, wait_until
from tests.support.rows import dead_letters, stored
from tests.support.sandbox import SandboxServer
from tests.support.stripe_fixtures import StripeCustomer
from workers.celery_app import make_celery
from workers.enqueue import PROCESS_EVENT, publish_process_events

pytestmark = pytest.mark.integration
ANNOUNCE = "tasks.notification.announce_payment_failed"
T0 = 1_763_800_000


def _payment_failed(fleet: Fleet) -> tuple[dict[str, Any], str]:
    event = StripeCustomer.new().event("invoice.payment_failed", created=T0)
    invoice_id = event["data"]["object"]["id"] = f"in_T{event['id'][5:]}"
    assert fleet.deliver(event).status_code == 200
    return event, invoice_id


def _posts_about(sandbox: SandboxServer, needle: str) -> list[dict[str, Any]]:
    return [
        call
        for call in sandbox.calls("slack", "chat.postMessage")
        if needle in str(call["body"].get("text", ""))
    ]


def _inbox_status(engine: Engine, event_id: str) -> str | None:
    with Session(engine) as session:
        return session.scalar(select(WebhookEvent.status).where(WebhookEvent.event_id == event_id))


def _dead_letter_for(engine: Engine, event_id: str) -> DeadLetter:
    with Session(engine) as session:
        inbox_id = session.scalar(select(WebhookEvent.id).where(WebhookEvent.event_id == event_id))
    wait_until(lambda: dead_letters(engine, inbox_id=inbox_id), timeout=30, what="a dead letter")
    (row,) = dead_letters(engine, inbox_id=inbox_id)
    return row


def _wait_processed(engine: Engine, event_id: str) -> None:
    wait_until(lambda: _inbox_status(engine, event_id) == "processed", timeout=30, what=event_id)


def _marker(kind: str) -> str:
    return f"{kind}-{os.getpid()}-{datetime.now().timestamp()}"


def _dead_letter_of_fault_task(
    fleet: Fleet, engine: Engine, task: str, kind: str, *, timeout: float = 20
) -> tuple[str, DeadLetter]:
    """Send one of tests/support/fault_tasks.py with a fresh marker; wait for its dead letter."""
    marker = _marker(kind)
    make_celery(fleet.settings()).send_task(f"tests.fault_tasks.{task}", args=[marker])
    wait_until(lambda: dead_letters(engine, args=[marker]), timeout=timeout, what="dead letter")
    (dead,) = dead_letters(engine, args=[marker])
    return marker, dead


def _gaps(calls: list[dict[str, Any]]) -> list[float]:
    times = [float(call["received_at"]) for call in calls]
    return [round(later - earlier, 3) for earlier, later in pairwise(times)]


def _cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return hookfleet(*args, env=fleet.env)


def _reject_posts(sandbox: SandboxServer, count: int) -> None:
    """Slack refuses the next `count` posts for good (a 400 no retry can fix)."""
    sandbox.fault(
        "slack",
        "chat.postMessage",
        status=400,
        count=count,
        body={"ok": False, "error": "invalid_blocks"},
    )


def test_provider_failing_twice_with_500_succeeds_on_the_third_attempt_with_growing_delays(
    fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    clean_sandbox.fault("slack", "chat.postMessage", status=500, count=2)

    event, invoice = _payment_failed(fleet)

    _wait_processed(pg_engine, event["id"])
    posts = _posts_about(clean_sandbox, invoice)
    print(f"\n500x2: statuses={[p['status'] for p in posts]} gaps={_gaps(posts)}s")
    assert [post["status"] for post in posts] == [500, 500, 200]
    first_gap, second_gap = _gaps(posts)
    assert second_gap > first_gap
    assert [post["effect"] for post in posts] == [False, False, True]
    assert posts[-1]["body"]["channel"] == OPERATORS_CHANNEL


def test_429_with_retry_after_delays_the_next_attempt_at_least_that_long(
    fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    clean_sandbox.fault("slack", "chat.postMessage", status=429, count=1, retry_after=2)

    event, invoice = _payment_failed(fleet)

    _wait_processed(pg_engine, event["id"])
    posts = _posts_about(clean_sandbox, invoice)
    print(f"\n429 Retry-After 2: statuses={[p['status'] for p in posts]} gap={_gaps(posts)}s")
    assert [post["status"] for post in posts] == [429, 200]
    assert _gaps(posts)[0] >= 2.0


def test_permanent_400_is_dead_lettered_after_one_attempt_and_alerted(
    fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    _reject_posts(clean_sandbox, 1)

    event, invoice = _payment_failed(fleet)

    dead = _dead_letter_for(pg_engine, event["id"])
    assert (dead.task_name, dead.attempts, dead.status) == (ANNOUNCE, 1, "dead")
    assert dead.exc_type.endswith("PermanentError")
    assert len(_posts_about(clean_sandbox, invoice)) == 1
    assert _inbox_status(pg_engine, event["id"]) == InboxStatus.FAILED
    wait_until(lambda: _posts_about(clean_sandbox, "new dead letter"), timeout=15, what="alert")


def test_always_failing_task_gets_four_attempts_one_dead_letter_one_alert_and_replays_once(
    fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    clean_sandbox.fault("slack", "chat.postMessage", status=503, count=4)

    event, invoice = _payment_failed(fleet)

    dead = _dead_letter_for(pg_engine, event["id"])
    posts = _posts_about(clean_sandbox, invoice)
    print(f"\nalways 503: attempts={dead.attempts} calls={len(posts)} gaps={_gaps(posts)}s")
    assert dead.attempts == 4
    assert len(posts) == 4
    assert dead.traceback is not None
    assert "TransientError" in dead.traceback
    assert dead.args == [dead.inbox_id]
    wait_until(lambda: _posts_about(clean_sandbox, "new dead letter"), timeout=15, what="alert")
    alerts = _posts_about(clean_sandbox, "new dead letter")
    assert len(alerts) == 1
    assert ANNOUNCE in alerts[0]["body"]["text"]

    replay = _cli(fleet, "dlq", "replay", str(dead.id))

    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "Replayed 1 of 1" in replay.stdout
    _wait_processed(pg_engine, event["id"])
    effects = [post for post in _posts_about(clean_sandbox, invoice) if post["effect"]]
    assert len(effects) == 1
    (replayed,) = dead_letters(pg_engine, id=dead.id)
    assert replayed.status == "replayed"
    assert replayed.replayed_task_id
    with Session(pg_engine) as session:
        actors = session.scalars(
            select(AuditEntry.actor).where(
                AuditEntry.action == "dead_letter.replayed", AuditEntry.entity_id == str(dead.id)
            )
        ).all()
    assert [actor.startswith("cli:") for actor in actors] == [True]


def test_replay_that_fails_again_links_a_new_dead_letter_to_the_first(
    fleet: Fleet, pg_engine: Engine
) -> None:
    marker, first = _dead_letter_of_fault_task(fleet, pg_engine, "always_permanent", "relapse")

    assert _cli(fleet, "dlq", "replay", str(first.id)).returncode == 0

    wait_until(lambda: len(dead_letters(pg_engine, args=[marker])) == 2, timeout=20, what="second")
    _, second = dead_letters(pg_engine, args=[marker])
    assert second.replay_of_id == first.id
    assert second.status == "dead"
    assert dead_letters(pg_engine, id=first.id)[0].status == "replayed"


def test_a_storm_of_failures_sends_a_summary_not_a_message_each(
    fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    marker = _marker("storm")
    celery = make_celery(fleet.settings())
    for n in range(20):
        celery.send_task("tests.fault_tasks.always_permanent", args=[f"{marker}-{n}"])

    def storm(**where: object) -> list[DeadLetter]:
        """This test's dead letters: others of the task (a replayed one, never alerted) are not."""
        rows = dead_letters(pg_engine, task_name="tests.fault_tasks.always_permanent", **where)
        return [row for row in rows if str(row.args[0]).startswith(marker)]

    wait_until(lambda: len(storm()) == 20, timeout=30, what="20 dead letters")
    wait_until(lambda: storm(alerted_at=None) == [], timeout=15, what="every dead letter alerted")
    alerts = _posts_about(clean_sandbox, "new dead letter")
    print(f"\nstorm: 20 dead letters -> {len(alerts)} alert message(s)")
    assert 1 <= len(alerts) <= 2
    assert "always_permanent" in alerts[0]["body"]["text"]


def test_task_that_kills_its_worker_every_time_ends_as_a_dead_letter(
    fleet: Fleet, pg_engine: Engine
) -> None:
    _, dead = _dead_letter_of_fault_task(fleet, pg_engine, "kill_own_worker", "oom", timeout=60)

    print(
        f"\nkilled worker: delivered {dead.attempts + 1} times, dead-lettered: {dead.exc_message}"
    )
    assert dead.exc_type.endswith("WorkerLostRepeatedlyError")
    assert dead.attempts == 4
    fleet.worker.assert_running()


def test_the_events_of_a_batch_are_committed_in_one_transaction(
    fleet: Fleet, pg_engine: Engine
) -> None:
    events = [StripeCustomer.new().event("checkout.session.completed") for _ in range(4)]
    ids = stored(pg_engine, events)

    assert publish_process_events(make_celery(fleet.settings()), ids) == ids

    for event in events:
        _wait_processed(pg_engine, event["id"])
    customers = [event["data"]["object"]["customer"] for event in events]
    with pg_engine.connect() as connection:
        # Rows written by one transaction carry its id as xmin (the steps after the lifecycle
        # step, sent as tasks, write the inbox rows again: the memberships are the batch's own).
        writers = connection.execute(
            text(
                "SELECT count(*), count(DISTINCT ms.xmin::text) FROM memberships ms"
                " JOIN members m ON m.id = ms.member_id WHERE m.stripe_customer_id = ANY(:c)"
            ),
            {"c": customers},
        ).one()
    assert tuple(writers) == (4, 1)


def test_an_event_failing_inside_a_batch_is_dead_lettered_alone_and_the_rest_are_processed(
    fleet: Fleet, pg_engine: Engine
) -> None:
    good = [StripeCustomer.new().event("checkout.session.completed") for _ in range(3)]
    bad = StripeCustomer.new().event("checkout.session.completed")
    del bad["data"]  # signed and stored, but not a Stripe event the worker can act on
    ids = stored(pg_engine, [good[0], bad, *good[1:]])

    assert publish_process_events(make_celery(fleet.settings()), ids) == ids

    for event in good:
        _wait_processed(pg_engine, event["id"])
    dead = _dead_letter_for(pg_engine, bad["id"])
    assert (dead.task_name, dead.args) == (PROCESS_EVENT, [ids[1]])
    assert dead.exc_type.endswith("ValidationError")
    assert _inbox_status(pg_engine, bad["id"]) == InboxStatus.FAILED


def _key_from_cli(fleet: Fleet, scopes: str, rate: int) -> str:
    name = f"ops-{os.getpid()}-{int(datetime.now().timestamp() * 1000)}"
    created = _cli(
        fleet, "keys", "create", "--name", name, "--scopes", scopes, "--rate-per-minute", str(rate)
    )
    assert created.returncode == 0, created.stdout + created.stderr
    return next(line for line in created.stdout.splitlines() if line.startswith("hf_"))


def test_admin_api_over_http_refuses_401_403_429_and_replays_like_the_cli(
    fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    api = f"{fleet.url}/admin/api"
    reader = _key_from_cli(fleet, "dlq:read", rate=120)
    writer = _key_from_cli(fleet, "dlq:read,dlq:write", rate=120)
    slow = _key_from_cli(fleet, "dlq:read", rate=2)
    _reject_posts(clean_sandbox, 2)
    via_api_event, via_api_invoice = _payment_failed(fleet)
    via_cli_event, via_cli_invoice = _payment_failed(fleet)
    via_api = _dead_letter_for(pg_engine, via_api_event["id"])
    via_cli = _dead_letter_for(pg_engine, via_cli_event["id"])

    assert httpx.get(f"{api}/dead-letters").status_code == 401
    assert httpx.get(f"{api}/dead-letters", headers=_bearer("hf_00000000_nope")).status_code == 401
    forbidden = httpx.post(f"{api}/dead-letters/{via_api.id}/replay", headers=_bearer(reader))
    assert forbidden.status_code == 403
    limited = [httpx.get(f"{api}/dead-letters", headers=_bearer(slow)) for _ in range(3)]
    assert [r.status_code for r in limited] == [200, 200, 429]
    assert int(limited[-1].headers["Retry-After"]) >= 1

    replayed = httpx.post(f"{api}/dead-letters/{via_api.id}/replay", headers=_bearer(writer))
    by_cli = _cli(fleet, "dlq", "replay", str(via_cli.id))

    assert replayed.status_code == 200
    assert by_cli.returncode == 0
    for event, invoice in ((via_api_event, via_api_invoice), (via_cli_event, via_cli_invoice)):
        _wait_processed(pg_engine, event["id"])
        assert [post["effect"] for post in _posts_about(clean_sandbox, invoice)] == [False, True]
    rows = {row.id: row for row in dead_letters(pg_engine, task_name=ANNOUNCE)}
    assert rows[via_api.id].status == rows[via_cli.id].status == "replayed"
    assert rows[via_api.id].replayed_task_id == replayed.json()["new_task_id"]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_cli_lists_shows_and_discards_dead_letters_with_a_reason(
    fleet: Fleet, pg_engine: Engine
) -> None:
    marker, dead = _dead_letter_of_fault_task(fleet, pg_engine, "always_permanent", "discard")

    listed = _cli(fleet, "dlq", "list", "--task", dead.task_name, "--status", "dead", "--json")
    shown = _cli(fleet, "dlq", "show", str(dead.id))
    discarded = _cli(fleet, "dlq", "discard", str(dead.id), "--reason", "test data, not a bug")
    again = _cli(fleet, "dlq", "replay", str(dead.id))

    assert dead.id in [row["id"] for row in json.loads(listed.stdout)]
    assert json.loads(shown.stdout)["args"] == [marker]
    assert "ValueError" in json.loads(shown.stdout)["traceback"]
    assert discarded.returncode == 0
    (row,) = dead_letters(pg_engine, id=dead.id)
    assert (row.status, row.discard_reason) == ("discarded", "test data, not a bug")
    assert again.returncode != 0  # a discarded row is kept, and is not replayed
    assert "discarded, not dead" in again.stderr


def test_cli_replays_a_stored_event_from_the_start(
    fleet: Fleet, clean_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    event, invoice = _payment_failed(fleet)
    _wait_processed(pg_engine, event["id"])
    with Session(pg_engine) as session:
        inbox_id = session.scalar(
            select(WebhookEvent.id).where(WebhookEvent.event_id == event["id"])
        )
    listed = _cli(fleet, "events", "list", "--type", "invoice.payment_failed", "--json")
    assert inbox_id in [row["id"] for row in json.loads(listed.stdout)]

    replay = _cli(fleet, "events", "replay", str(inbox_id))

    assert replay.returncode == 0, replay.stderr
    wait_until(
        lambda: _audit_actions(pg_engine, inbox_id).count("inbox_event.replayed") == 1,
        what="the replay audited",
    )
    _wait_processed(pg_engine, event["id"])
    # Processed twice, its Slack message posted once: the effect key held.
    assert len([p for p in _posts_about(clean_sandbox, invoice) if p["effect"]]) == 1
    with Session(pg_engine) as session:
        row = session.scalars(select(WebhookEvent).where(WebhookEvent.id == inbox_id)).one()
    assert row.attempts == 2


def _audit_actions(engine: Engine, inbox_id: int | None) -> list[str]:
    with Session(engine) as session:
        return list(
            session.scalars(select(AuditEntry.action).where(AuditEntry.inbox_id == inbox_id))
        )
