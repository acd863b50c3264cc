"""Builds Clerk user events as Clerk documents them and signs them as Svix delivers them."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from svix.webhooks import Webhook


def clerk_user_id() -> str:
    return f"user_{secrets.token_hex(12)}"


def build_user_event(
    event_type: str,
    *,
    user_id: str,
    email: str,
    first_name: str = "Sandbox",
    last_name: str = "Member",
    updated_ms: int | None = None,
) -> dict[str, Any]:
    """`user.created` / `user.updated` carry the User object; `user.deleted` only its id."""
    now_ms = updated_ms if updated_ms is not None else int(time.time() * 1000)
    if event_type == "user.deleted":
        data: dict[str, Any] = {"id": user_id, "object": "user", "deleted": True}
    else:
        address_id = f"idn_{secrets.token_hex(12)}"
        data = {
            "id": user_id,
            "object": "user",
            "email_addresses": [
                {
                    "id": address_id,
                    "object": "email_address",
                    "email_address": email,
                    "linked_to": [],
                    "verification": {"status": "verified", "strategy": "email_code"},
                }
            ],
            "primary_email_address_id": address_id,
            "first_name": first_name,
            "last_name": last_name,
            "image_url": "https://img.clerk.com/sandbox",
            "created_at": now_ms - 1000,
            "updated_at": now_ms,
            "public_metadata": {},
            "private_metadata": {},
            "unsafe_metadata": {},
        }
    return {
        "data": data,
        "object": "event",
        "type": event_type,
        "timestamp": now_ms,
        "instance_id": "ins_sandbox",
    }


def svix_headers(body: bytes, secret: str, *, message_id: str | None = None) -> dict[str, str]:
    """Svix's three headers for `body`, signed with the endpoint's `whsec_...` secret."""
    msg_id = message_id or f"msg_{secrets.token_hex(12)}"
    now = datetime.now(UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, now, body.decode()),
        "content-type": "application/json",
    }


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()
