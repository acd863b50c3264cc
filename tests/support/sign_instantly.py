"""Authenticate a test delivery the way an Instantly subscription is set up: Instantly signs nothing.

Instantly sends the custom `headers` object stored on the subscription (`POST /api/v2/webhooks`), so
our token travels in the header we document, `X-Instantly-Token`.
https://developer.instantly.ai/guides/webhook-events
"""

from __future__ import annotations

TOKEN_HEADER = "X-Instantly-Token"


def sign_instantly(token: str, *, header: str = TOKEN_HEADER) -> dict[str, str]:
    return {"Content-Type": "application/json", header: token}
