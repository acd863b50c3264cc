"""Typed views of the Stripe event payloads hookfleet acts on (only the fields it reads).

Shapes follow Stripe's API reference; fields that moved between API versions (the subscription's
`current_period_end` moved onto its items, the invoice's `subscription` under `parent`) are read from
both places so an account on either version works.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def from_unix(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


class EventData(_Shape):
    object: dict[str, Any]
    previous_attributes: dict[str, Any] | None = None


class StripeEvent(_Shape):
    id: str
    type: str
    created: int
    livemode: bool = False
    api_version: str | None = None
    data: EventData

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created, UTC)


class CustomerDetails(_Shape):
    email: str | None = None
    name: str | None = None


class CheckoutSession(_Shape):
    id: str
    customer: str | None = None
    customer_email: str | None = None
    customer_details: CustomerDetails | None = None
    subscription: str | None = None
    mode: str
    payment_status: str
    metadata: dict[str, str] = Field(default_factory=dict)

    @property
    def email(self) -> str | None:
        details = self.customer_details.email if self.customer_details else None
        return details or self.customer_email

    @property
    def name(self) -> str | None:
        return self.customer_details.name if self.customer_details else None


class Price(_Shape):
    id: str


class SubscriptionItem(_Shape):
    price: Price
    current_period_end: int | None = None


class SubscriptionItems(_Shape):
    data: list[SubscriptionItem] = Field(default_factory=list)


class Subscription(_Shape):
    id: str
    customer: str
    status: str
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    current_period_end: int | None = None
    items: SubscriptionItems = Field(default_factory=SubscriptionItems)

    @property
    def price_id(self) -> str | None:
        return self.items.data[0].price.id if self.items.data else None

    @property
    def period_end(self) -> datetime | None:
        if self.current_period_end is not None:
            return from_unix(self.current_period_end)
        ends = [item.current_period_end for item in self.items.data if item.current_period_end]
        return from_unix(max(ends)) if ends else None


class Period(_Shape):
    end: int


class InvoiceLine(_Shape):
    period: Period | None = None


class InvoiceLines(_Shape):
    data: list[InvoiceLine] = Field(default_factory=list)


class SubscriptionDetails(_Shape):
    subscription: str | None = None


class InvoiceParent(_Shape):
    subscription_details: SubscriptionDetails | None = None


class Invoice(_Shape):
    id: str
    customer: str
    customer_email: str | None = None
    subscription: str | None = None
    parent: InvoiceParent | None = None
    lines: InvoiceLines = Field(default_factory=InvoiceLines)

    @property
    def subscription_id(self) -> str | None:
        if self.subscription:
            return self.subscription
        details = self.parent.subscription_details if self.parent else None
        return details.subscription if details else None

    @property
    def period_end(self) -> datetime | None:
        ends = [line.period.end for line in self.lines.data if line.period]
        return from_unix(max(ends)) if ends else None
