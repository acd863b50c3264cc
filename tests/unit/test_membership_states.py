"""The membership state machine: Stripe status mapping, legal moves, and out-of-order events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tasks.membership_states import (
    STRIPE_SUBSCRIPTION_STATUS,
    TRANSITIONS,
    Status,
    from_stripe_subscription,
    is_allowed,
    is_stale,
)

NOW = datetime(2025, 11, 22, 8, 26, 40, tzinfo=UTC)

# https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses
STRIPE_STATUS_TABLE = [
    ("trialing", Status.ACTIVE),
    ("active", Status.ACTIVE),
    ("incomplete", Status.PENDING),
    ("incomplete_expired", Status.CANCELED),
    ("past_due", Status.PAST_DUE),
    ("unpaid", Status.PAST_DUE),
    ("paused", Status.PAST_DUE),
    ("canceled", Status.CANCELED),
]


@pytest.mark.parametrize(("stripe_status", "expected"), STRIPE_STATUS_TABLE)
def test_every_stripe_status_maps_to_a_membership_status(
    stripe_status: str, expected: Status
) -> None:
    assert from_stripe_subscription(stripe_status, cancel_scheduled=False) is expected


def test_status_table_covers_every_mapped_stripe_status() -> None:
    assert {name for name, _ in STRIPE_STATUS_TABLE} == set(STRIPE_SUBSCRIPTION_STATUS)


@pytest.mark.parametrize("stripe_status", ["active", "trialing"])
def test_live_subscription_set_to_cancel_is_cancel_scheduled(stripe_status: str) -> None:
    status = from_stripe_subscription(stripe_status, cancel_scheduled=True)
    assert status is Status.CANCEL_SCHEDULED


@pytest.mark.parametrize(
    ("stripe_status", "expected"),
    [
        ("incomplete", Status.PENDING),
        ("past_due", Status.PAST_DUE),
        ("unpaid", Status.PAST_DUE),
        ("paused", Status.PAST_DUE),
        ("canceled", Status.CANCELED),
        ("incomplete_expired", Status.CANCELED),
    ],
)
def test_cancel_flag_does_not_override_a_status_that_is_not_live(
    stripe_status: str, expected: Status
) -> None:
    assert from_stripe_subscription(stripe_status, cancel_scheduled=True) is expected


@pytest.mark.parametrize("stripe_status", ["", "Active", "ended", "cancelled"])
def test_unknown_stripe_status_raises_value_error(stripe_status: str) -> None:
    with pytest.raises(ValueError, match="unknown Stripe subscription status"):
        from_stripe_subscription(stripe_status, cancel_scheduled=False)


def test_every_status_has_a_transition_entry() -> None:
    assert set(TRANSITIONS) == set(Status)


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("new_subscription", [False, True])
def test_staying_put_is_always_allowed(status: Status, new_subscription: bool) -> None:
    assert is_allowed(status, status, new_subscription=new_subscription)


def test_canceled_membership_does_not_reactivate_on_the_same_subscription() -> None:
    assert not is_allowed(Status.CANCELED, Status.ACTIVE, new_subscription=False)


@pytest.mark.parametrize(
    "new", [Status.PENDING, Status.ACTIVE, Status.PAST_DUE, Status.CANCEL_SCHEDULED]
)
def test_canceled_membership_leaves_canceled_only_with_a_new_subscription(new: Status) -> None:
    assert not is_allowed(Status.CANCELED, new, new_subscription=False)


def test_canceled_membership_reactivates_with_a_new_subscription() -> None:
    assert is_allowed(Status.CANCELED, Status.ACTIVE, new_subscription=True)
    assert is_allowed(Status.CANCELED, Status.PENDING, new_subscription=True)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (Status.PENDING, Status.ACTIVE),
        (Status.ACTIVE, Status.PAST_DUE),
        (Status.PAST_DUE, Status.ACTIVE),
        (Status.ACTIVE, Status.CANCEL_SCHEDULED),
        (Status.CANCEL_SCHEDULED, Status.ACTIVE),
        (Status.CANCEL_SCHEDULED, Status.CANCELED),
        (Status.ACTIVE, Status.CANCELED),
    ],
)
def test_ordinary_lifecycle_moves_are_allowed(current: Status, new: Status) -> None:
    assert is_allowed(current, new, new_subscription=False)


@pytest.mark.parametrize("current", [Status.ACTIVE, Status.PAST_DUE, Status.CANCEL_SCHEDULED])
def test_live_membership_does_not_go_back_to_pending(current: Status) -> None:
    assert not is_allowed(current, Status.PENDING, new_subscription=False)


def test_older_event_is_stale() -> None:
    assert is_stale(NOW - timedelta(seconds=1), NOW, leaves_canceled=False)


def test_newer_event_is_not_stale() -> None:
    assert not is_stale(NOW + timedelta(seconds=1), NOW, leaves_canceled=False)
    assert not is_stale(NOW + timedelta(seconds=1), NOW, leaves_canceled=True)


def test_same_second_event_is_not_stale() -> None:
    assert not is_stale(NOW, NOW, leaves_canceled=False)


def test_same_second_event_leaving_canceled_is_stale() -> None:
    assert is_stale(NOW, NOW, leaves_canceled=True)


@pytest.mark.parametrize("leaves_canceled", [False, True])
def test_event_is_never_stale_without_applied_state(leaves_canceled: bool) -> None:
    assert not is_stale(NOW, None, leaves_canceled=leaves_canceled)
