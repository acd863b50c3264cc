"""The membership state machine: its statuses, the legal moves, and how Stripe's states map onto it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"  # checkout started, first payment not confirmed
    ACTIVE = "active"
    PAST_DUE = "past_due"  # a renewal failed; Stripe is retrying the card
    CANCEL_SCHEDULED = "cancel_scheduled"  # ends at `deactivate_at` unless un-cancelled
    CANCELED = "canceled"  # ended; only a new subscription starts it again


# from -> the statuses it may move to. Staying put is always allowed (tier or period changes).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset(
        {Status.ACTIVE, Status.PAST_DUE, Status.CANCEL_SCHEDULED, Status.CANCELED}
    ),
    Status.ACTIVE: frozenset({Status.PAST_DUE, Status.CANCEL_SCHEDULED, Status.CANCELED}),
    Status.PAST_DUE: frozenset({Status.ACTIVE, Status.CANCEL_SCHEDULED, Status.CANCELED}),
    Status.CANCEL_SCHEDULED: frozenset({Status.ACTIVE, Status.PAST_DUE, Status.CANCELED}),
    Status.CANCELED: frozenset({Status.PENDING, Status.ACTIVE}),
}

# Stripe subscription.status -> ours. https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses
STRIPE_SUBSCRIPTION_STATUS: dict[str, Status] = {
    "trialing": Status.ACTIVE,
    "active": Status.ACTIVE,
    "incomplete": Status.PENDING,
    "past_due": Status.PAST_DUE,
    "unpaid": Status.PAST_DUE,
    "paused": Status.PAST_DUE,
    "canceled": Status.CANCELED,
    "incomplete_expired": Status.CANCELED,
}


def from_stripe_subscription(stripe_status: str, *, cancel_scheduled: bool) -> Status:
    """A live subscription set to cancel at period end is `cancel_scheduled`, not `active`."""
    try:
        status = STRIPE_SUBSCRIPTION_STATUS[stripe_status]
    except KeyError:
        raise ValueError(f"unknown Stripe subscription status {stripe_status!r}") from None
    if cancel_scheduled and status is Status.ACTIVE:
        return Status.CANCEL_SCHEDULED
    return status


def is_allowed(current: Status, new: Status, *, new_subscription: bool) -> bool:
    """A canceled Stripe subscription is final: only a different subscription revives the membership."""
    if current is Status.CANCELED and not new_subscription:
        return new is Status.CANCELED
    return new is current or new in TRANSITIONS[current]


def is_stale(
    event_at: datetime, last_applied_at: datetime | None, *, leaves_canceled: bool
) -> bool:
    """Stripe does not order deliveries: an event older than the applied state must not undo it.

    Stripe's `created` has one-second resolution, so events of the same second all apply, except
    one that would move a membership out of `canceled`: the end of a subscription wins a tie.
    """
    if last_applied_at is None:
        return False
    if event_at < last_applied_at:
        return True
    return event_at == last_applied_at and leaves_canceled
