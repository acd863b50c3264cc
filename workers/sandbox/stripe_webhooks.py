"""Builds realistic Stripe events, signs them as Stripe does and delivers them to the gateway.

Shapes follow Stripe's API reference (API version 2025-03-31.basil and later: the subscription's
period end lives on its items, the invoice's subscription under `parent`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx

API_VERSION = "2025-03-31.basil"
DAY = 86_400


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _subscription(
    *,
    subscription: str,
    customer: str,
    price: str,
    status: str,
    now: int,
    cancel: bool,
    period_end: int,
) -> dict[str, Any]:
    return {
        "id": subscription,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "cancel_at_period_end": cancel,
        "cancel_at": period_end if cancel else None,
        "canceled_at": now if status == "canceled" else None,
        "collection_method": "charge_automatically",
        "created": now - 60,
        "currency": "usd",
        "livemode": False,
        "metadata": {},
        "items": {
            "object": "list",
            "has_more": False,
            "data": [
                {
                    "id": new_id("si"),
                    "object": "subscription_item",
                    "current_period_start": now,
                    "current_period_end": period_end,
                    "quantity": 1,
                    "price": {
                        "id": price,
                        "object": "price",
                        "active": True,
                        "currency": "usd",
                        "product": "prod_sandbox_membership",
                        "recurring": {"interval": "month", "interval_count": 1},
                        "type": "recurring",
                        "unit_amount": 2500,
                    },
                }
            ],
        },
    }


def _checkout(ctx: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": new_id("cs_test"),
        "object": "checkout.session",
        "mode": "subscription",
        "status": "complete",
        "payment_status": "paid",
        "customer": ctx["customer"],
        "customer_email": None,
        "customer_details": {"email": ctx["email"], "name": ctx["name"], "phone": None},
        "subscription": ctx["subscription"],
        "amount_total": 2500,
        "currency": "usd",
        "livemode": False,
        "metadata": {"price_id": ctx["price"]},
        "created": ctx["now"] - 120,
        "expires_at": ctx["now"] + DAY,
    }


def _invoice(ctx: dict[str, Any], *, paid: bool) -> dict[str, Any]:
    now = ctx["now"]
    return {
        "id": new_id("in"),
        "object": "invoice",
        "customer": ctx["customer"],
        "customer_email": ctx["email"],
        "status": "paid" if paid else "open",
        "amount_due": 2500,
        "amount_paid": 2500 if paid else 0,
        "attempt_count": 1,
        "billing_reason": "subscription_cycle",
        "currency": "usd",
        "livemode": False,
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": ctx["subscription"], "metadata": {}},
        },
        "lines": {
            "object": "list",
            "has_more": False,
            "data": [{"id": new_id("il"), "period": {"start": now, "end": ctx["period_end"]}}],
        },
        "created": now,
    }


def _sub(status: str, cancel: bool = False) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda ctx: _subscription(
        subscription=ctx["subscription"],
        customer=ctx["customer"],
        price=ctx["price"],
        status=status,
        now=ctx["now"],
        cancel=cancel,
        period_end=ctx["period_end"],
    )


BUILDERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "checkout.session.completed": _checkout,
    "customer.subscription.created": _sub("active"),
    "customer.subscription.updated": _sub("active", cancel=True),
    "customer.subscription.deleted": _sub("canceled"),
    "invoice.paid": lambda ctx: _invoice(ctx, paid=True),
    "invoice.payment_failed": lambda ctx: _invoice(ctx, paid=False),
}


def build_event(
    event_type: str,
    *,
    email: str,
    customer: str | None = None,
    subscription: str | None = None,
    price: str = "price_sandbox_member",
    name: str = "Sandbox Member",
    created: int | None = None,
    period_end: int | None = None,
) -> dict[str, Any]:
    """A Stripe event of `event_type` for one customer, as Stripe would deliver it."""
    if event_type not in BUILDERS:
        raise ValueError(f"the sandbox builds {sorted(BUILDERS)}, not {event_type!r}")
    now = created if created is not None else int(time.time())
    ctx = {
        "customer": customer or new_id("cus"),
        "subscription": subscription or new_id("sub"),
        "email": email,
        "name": name,
        "price": price,
        "now": now,
        "period_end": period_end if period_end is not None else now + 30 * DAY,
    }
    return {
        "id": new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": now,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": BUILDERS[event_type](ctx)},
    }


def signature_header(body: bytes, secret: str, timestamp: int) -> str:
    """`Stripe-Signature` as Stripe computes it: HMAC-SHA256 of `"{t}.{body}"` keyed by `whsec_...`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def deliver(url: str, event: dict[str, Any], secret: str) -> httpx.Response:
    body = json.dumps(event, indent=2).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        "Stripe-Signature": signature_header(body, secret, int(time.time())),
    }
    return httpx.post(url, content=body, headers=headers, timeout=10)
