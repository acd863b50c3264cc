"""Which member a stored event is about: by Stripe customer id or by Clerk user id."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.tables import Member, Membership, WebhookEvent


def _object(row: WebhookEvent) -> dict[str, Any]:
    data = json.loads(row.body).get("data", {})
    found = data.get("object", data) if row.provider == "stripe" else data
    return found if isinstance(found, dict) else {}


def member_for_event(session: Session, row: WebhookEvent, *, lock: bool = False) -> Member | None:
    """The member the event concerns, or None when it names nobody we know yet."""
    obj = _object(row)
    if row.provider == "stripe":
        customer = obj.get("customer")
        condition = Member.stripe_customer_id == customer if isinstance(customer, str) else None
    elif row.provider == "clerk":
        user_id = obj.get("id")
        condition = Member.clerk_user_id == user_id if isinstance(user_id, str) else None
    else:
        condition = None
    if condition is None:
        return None
    query = select(Member).where(condition)
    return session.scalar(query.with_for_update() if lock else query)


def membership_of(session: Session, member: Member) -> Membership | None:
    return session.scalar(select(Membership).where(Membership.member_id == member.id))
