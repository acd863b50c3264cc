"""Sign a webhook the way Daily.co does, with hmac/hashlib only (Daily ships no Python signer).

Scheme as webhooks_gateway/providers/daily.py records it (the signed string is unconfirmed in Daily's
docs): `X-Webhook-Signature` = base64(HMAC-SHA256(base64-decoded secret, "{timestamp}.{raw body}")),
`X-Webhook-Timestamp` = unix seconds. Written independently of our verifier.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime


def sign_daily(body: bytes, *, secret: str, at: datetime) -> dict[str, str]:
    """The headers Daily sends with `body` signed at `at`, for the base64 `hmac` secret."""
    timestamp = str(int(at.timestamp()))
    mac = hmac.new(base64.b64decode(secret), f"{timestamp}.".encode() + body, hashlib.sha256)
    return {
        "X-Webhook-Signature": base64.b64encode(mac.digest()).decode(),
        "X-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }
