"""Sign webhook bodies the way the provider does, from its published scheme with hashlib/hmac only.

Independent of our verifier and of the stripe SDK, so a bug they share cannot make a test pass.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime


def stripe_v1_signature(body: bytes, *, secret: str, timestamp: int) -> str:
    """Hex HMAC-SHA256 of `"{t}." + body`, keyed with the whole `whsec_...` string.

    https://docs.stripe.com/webhooks#verify-manually
    """
    signed_payload = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed_payload, hashlib.sha256).hexdigest()


def sign_stripe(
    body: bytes,
    *,
    secret: str,
    at: datetime,
    extra_secrets: Iterable[str] = (),
) -> dict[str, str]:
    """The headers Stripe sends with `body` signed at `at`.

    Each of `extra_secrets` adds one more `v1=` entry, as Stripe does while a rolled secret's
    predecessor is still live.
    """
    timestamp = int(at.timestamp())
    signatures = [
        stripe_v1_signature(body, secret=key, timestamp=timestamp)
        for key in (secret, *extra_secrets)
    ]
    header = ",".join([f"t={timestamp}", *(f"v1={signature}" for signature in signatures)])
    return {"Stripe-Signature": header, "Content-Type": "application/json"}
