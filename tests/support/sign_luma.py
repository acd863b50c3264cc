"""Sign a Luma webhook body with hashlib/hmac, as third-party Luma receivers describe the scheme.

`Webhook-Signature: t=<unix>,v1=<hex>`, v1 = HMAC-SHA256 over `"{t}.{raw body}"` keyed with the
webhook secret exactly as Luma gives it (`whsec_` prefix included), sent with `Webhook-Id` and
`Webhook-Timestamp`. Luma's own pages do not describe it (see webhooks_gateway/providers/luma.py);
this is written from that description, independently of our verifier.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime


def luma_v1_signature(body: bytes, *, secret: str, timestamp: int) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign_luma(
    body: bytes, *, secret: str, at: datetime, webhook_id: str | None = None
) -> dict[str, str]:
    """The headers Luma sends with `body` signed at `at`."""
    timestamp = int(at.timestamp())
    signature = luma_v1_signature(body, secret=secret, timestamp=timestamp)
    return {
        "Content-Type": "application/json",
        "Webhook-Id": webhook_id or f"msg_{secrets.token_hex(12)}",
        "Webhook-Timestamp": str(timestamp),
        "Webhook-Signature": f"t={timestamp},v1={signature}",
    }
