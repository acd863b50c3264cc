"""Realistic Clerk + Stripe sequences for one person, as the providers would deliver them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from workers.sandbox.clerk_webhooks import build_user_event, clerk_user_id, encode, svix_headers
from workers.sandbox.stripe_webhooks import build_event, new_id, signature_header


@dataclass(frozen=True)
class Person:
    email: str
    customer: str
    subscription: str
    clerk_user: str

    @classmethod
    def new(cls, email: str) -> Person:
        return cls(email.lower(), new_id("cus"), new_id("sub"), clerk_user_id())


@dataclass(frozen=True)
class Delivery:
    provider: str  # the gateway route: "stripe" or "clerk"
    event: dict[str, Any]


def _stripe(event_type: str, who: Person, **fields: Any) -> Delivery:
    event = build_event(
        event_type, email=who.email, customer=who.customer, subscription=who.subscription, **fields
    )
    return Delivery("stripe", event)


def signup(who: Person, now: int) -> list[Delivery]:
    """Sign-up with Clerk, then pay: checkout, the subscription, the first invoice."""
    clerk = build_user_event("user.created", user_id=who.clerk_user, email=who.email)
    return [
        Delivery("clerk", clerk),
        _stripe("checkout.session.completed", who, created=now),
        _stripe("customer.subscription.created", who, created=now),
        _stripe("invoice.paid", who, created=now),
    ]


def cancel(who: Person, now: int, ends_in: int) -> list[Delivery]:
    """Cancel at the end of the period, which ends `ends_in` seconds from now."""
    return [
        _stripe("customer.subscription.updated", who, created=now + 1, period_end=now + ends_in)
    ]


def payment_failed(who: Person, now: int) -> list[Delivery]:
    return [_stripe("invoice.payment_failed", who, created=now + 2)]


SCENARIOS: dict[str, Callable[[Person, int, int], list[Delivery]]] = {
    "signup": lambda who, now, _: signup(who, now),
    "cancel": cancel,
    "payment-failed": lambda who, now, _: payment_failed(who, now),
}


def deliver(base_url: str, delivery: Delivery, secrets: dict[str, str]) -> httpx.Response:
    """POST one event to the gateway, signed the way its provider signs."""
    if delivery.provider == "clerk":
        body = encode(delivery.event)
        headers = svix_headers(body, secrets["clerk"])
    else:
        body = json.dumps(delivery.event, indent=2).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": signature_header(body, secrets["stripe"], int(time.time())),
        }
    url = f"{base_url.rstrip('/')}/webhooks/{delivery.provider}"
    return httpx.post(url, content=body, headers=headers, timeout=10)
