"""Recorded Stripe events from tests/fixtures/stripe, re-addressed to one test's customer."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parents[1] / "fixtures" / "stripe"
# The ids the recorded fixtures carry; each test swaps in its own so tests never share a member.
RECORDED_CUSTOMER = "cus_FixtureCustomer0001"
RECORDED_SUBSCRIPTION = "sub_FixtureSubscription01"
RECORDED_EMAIL = "jenny.rosen@example.com"
RECORDED_PRICE = "price_FixturePriceMember1"
RECORDED_CREATED = 1763800000


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.glob("*.json"))


@dataclass(frozen=True)
class StripeCustomer:
    customer: str
    subscription: str
    email: str
    price: str = RECORDED_PRICE

    @classmethod
    def new(cls) -> StripeCustomer:
        tag = secrets.token_hex(6)
        return cls(f"cus_T{tag}", f"sub_T{tag}", f"member-{tag}@example.com")

    def event(
        self,
        event_type: str,
        *,
        created: int = RECORDED_CREATED,
        subscription: str | None = None,
        **object_fields: Any,
    ) -> dict[str, Any]:
        """The recorded `event_type`, with a fresh event id, this customer's ids and `created`."""
        text = (FIXTURES / f"{event_type}.json").read_text()
        for recorded, ours in (
            (RECORDED_CUSTOMER, self.customer),
            (RECORDED_SUBSCRIPTION, subscription or self.subscription),
            (RECORDED_EMAIL, self.email),
            (RECORDED_PRICE, self.price),
        ):
            text = text.replace(recorded, ours)
        event: dict[str, Any] = json.loads(text)
        event["id"] = f"evt_T{secrets.token_hex(10)}"
        event["created"] = created
        event["data"]["object"].update(object_fields)
        return event


def body_of(event: dict[str, Any]) -> bytes:
    return json.dumps(event, indent=2).encode()
