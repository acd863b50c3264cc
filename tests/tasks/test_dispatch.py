"""process_event's routing: one table, a forward-only inbox status, invalid bodies refused."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy.orm import Session

from schemas.tables import InboxStatus, WebhookEvent, utcnow
from tasks import dispatch
from tasks.clients import SERVICE_KEYS
from tasks.dispatch import (
    DISPATCH,
    STEP_SERVICES,
    finish_step,
    process_events,
    route_event,
    skip_unused,
)
from tasks.inbox import InboxRowMissingError, finish, finished_handlers
from tests.conftest import make_settings
from tests.support.stripe_fixtures import StripeCustomer, body_of
from workers.effects import mark_handled


def _stored(session: Session, event_type: str, body: bytes | None = None) -> WebhookEvent:
    """An inbox row as the gateway leaves it: enqueued, with the recorded body of `event_type`."""
    row = WebhookEvent(
        provider="stripe",
        event_id=f"evt_T{secrets.token_hex(8)}",
        event_type=event_type,
        body=body if body is not None else body_of(StripeCustomer.new().event(event_type)),
        status=InboxStatus.ENQUEUED,
    )
    session.add(row)
    session.flush()
    return row


_TYPES = {t for provider, t in DISPATCH if provider == "stripe"}
# Every provider a failed payment's steps call is in use.
SENDGRID_AND_SLACK = make_settings(
    sendgrid_api_key=SecretStr("SG.key"), slack_bot_token=SecretStr("xoxb-1")
)


@pytest.mark.parametrize("event_type", sorted(_TYPES))
def test_handled_event_is_routed_to_its_tasks_and_marked_dispatched(
    db_session: Session, event_type: str
) -> None:
    row = _stored(db_session, event_type)

    names = route_event(db_session, row.id)

    assert names == DISPATCH[("stripe", event_type)]
    assert (row.status, row.attempts, row.handler_count) == (
        InboxStatus.DISPATCHED,
        1,
        len(names),
    )


def test_redispatch_sends_only_the_handlers_that_have_not_finished(db_session: Session) -> None:
    row = _stored(db_session, "invoice.payment_failed")
    first, *rest = route_event(db_session, row.id)
    mark_handled(db_session, row.id, first)

    assert route_event(db_session, row.id) == tuple(rest)


def test_event_is_processed_only_when_its_last_handler_finishes(db_session: Session) -> None:
    row = _stored(db_session, "invoice.payment_failed")
    *earlier, last = route_event(db_session, row.id)

    for step in earlier:
        finish(db_session, row.id, step)
    assert row.status == InboxStatus.DISPATCHED
    finish(db_session, row.id, last)
    assert row.status == InboxStatus.PROCESSED


def test_an_event_taken_before_the_relay_marked_it_gets_its_enqueued_time_from_the_worker(
    db_session: Session,
) -> None:
    row = _stored(db_session, "invoice.paid")
    marked = _stored(db_session, "invoice.paid")
    marked.enqueued_at = at = utcnow() - timedelta(seconds=5)

    route_event(db_session, row.id)
    route_event(db_session, marked.id)

    assert row.enqueued_at is not None
    assert marked.enqueued_at == at


def test_the_next_step_is_the_first_unfinished_one_in_pipeline_order(db_session: Session) -> None:
    row = _stored(db_session, "invoice.payment_failed")
    steps = route_event(db_session, row.id)

    assert skip_unused(db_session, row.id, SENDGRID_AND_SLACK) == steps[0]
    finish(db_session, row.id, steps[0])
    assert skip_unused(db_session, row.id, SENDGRID_AND_SLACK) == steps[1]
    for step in steps[1:]:
        finish(db_session, row.id, step)
    assert skip_unused(db_session, row.id, SENDGRID_AND_SLACK) is None


def test_steps_of_a_provider_the_platform_does_not_use_are_finished_without_a_task(
    db_session: Session,
) -> None:
    row = _stored(db_session, "checkout.session.completed")
    lifecycle, mailchimp, welcome = route_event(db_session, row.id)
    assert mailchimp in STEP_SERVICES
    no_mailchimp = make_settings(sendgrid_api_key=SecretStr("SG.key"))

    assert finish_step(db_session, row.id, lifecycle, no_mailchimp) == welcome
    assert finished_handlers(db_session, row.id) == {lifecycle, mailchimp}
    assert row.status == InboxStatus.DISPATCHED
    assert skip_unused(db_session, row.id, make_settings()) is None
    assert row.status == InboxStatus.PROCESSED


def test_a_step_of_a_provider_in_use_is_kept(db_session: Session) -> None:
    row = _stored(db_session, "invoice.payment_failed")
    lifecycle, email, _ = route_event(db_session, row.id)

    assert skip_unused(db_session, row.id, make_settings()) == lifecycle
    assert finish_step(db_session, row.id, lifecycle, SENDGRID_AND_SLACK) == email
    assert finished_handlers(db_session, row.id) == {lifecycle}


def test_finishing_a_step_again_changes_nothing(db_session: Session) -> None:
    row = _stored(db_session, "invoice.payment_failed")
    lifecycle, email, _ = route_event(db_session, row.id)

    assert finish_step(db_session, row.id, lifecycle, SENDGRID_AND_SLACK) == email
    assert finish_step(db_session, row.id, lifecycle, SENDGRID_AND_SLACK) == email
    assert finished_handlers(db_session, row.id) == {lifecycle}
    assert row.status == InboxStatus.DISPATCHED


def test_every_step_named_for_a_provider_is_a_pipeline_step_of_a_known_provider() -> None:
    steps = {step for pipeline in DISPATCH.values() for step in pipeline}

    assert set(STEP_SERVICES) <= steps
    assert set(STEP_SERVICES.values()) <= set(SERVICE_KEYS)
    assert not any(step.startswith("tasks.lifecycle.") for step in STEP_SERVICES)


def test_event_type_without_handler_is_marked_ignored(db_session: Session) -> None:
    event = StripeCustomer.new().event("invoice.paid")
    event["type"] = "customer.discount.created"
    row = _stored(db_session, "customer.discount.created", body_of(event))

    assert route_event(db_session, row.id) == ()
    assert row.status == InboxStatus.IGNORED
    assert row.processed_at is not None


def test_event_already_processed_is_not_routed_again(db_session: Session) -> None:
    row = _stored(db_session, "invoice.paid")
    row.status = InboxStatus.PROCESSED

    assert route_event(db_session, row.id) == ()
    assert row.status == InboxStatus.PROCESSED


def test_body_that_is_not_a_stripe_event_is_refused(db_session: Session) -> None:
    row = _stored(db_session, "invoice.paid", body=b'{"id": "evt_1", "type": "invoice.paid"}')

    with pytest.raises(ValidationError):
        route_event(db_session, row.id)


def test_missing_inbox_row_is_a_permanent_error(db_session: Session) -> None:
    with pytest.raises(InboxRowMissingError):
        route_event(db_session, 987_654_321)


@pytest.mark.parametrize(
    ("retries", "attempt", "split"),
    [(3, 1, False), (1, 2, True), (0, None, False), (1, None, True)],
    ids=["after-database-waits", "after-a-failed-attempt", "first", "retried-count-unknown"],
)
def test_a_batch_runs_whole_after_waiting_for_the_database_and_is_split_after_a_failed_attempt(
    monkeypatch: pytest.MonkeyPatch, retries: int, attempt: int | None, split: bool
) -> None:
    sent: list[int] = []
    together: list[list[int]] = []
    monkeypatch.setattr(dispatch, "publish_process_events_singly", sent.extend)

    def run_together(inbox_ids: list[int], _: dict[str, object]) -> bool:
        together.append(inbox_ids)
        return True

    monkeypatch.setattr(dispatch, "_process_together", run_together)
    process_events.push_request(
        id="batch-2", retries=retries, delivery_info={}, hookfleet_attempt=attempt
    )
    try:
        process_events.run([5, 6, 7])
    finally:
        process_events.pop_request()

    assert (sent, together) == (([5, 6, 7], []) if split else ([], [[5, 6, 7]]))


def test_a_batch_delivered_again_sends_each_event_on_alone_without_processing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[int] = []
    monkeypatch.setattr(dispatch, "publish_process_events_singly", sent.extend)
    process_events.push_request(id="batch-1", retries=0, delivery_info={"redelivered": True})
    try:
        outcome = process_events.run([5, 6, 7])
    finally:
        process_events.pop_request()

    assert sent == [5, 6, 7]
    assert outcome == {"processed": 0, "sent_alone": 3}
