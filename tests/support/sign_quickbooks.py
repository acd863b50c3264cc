"""Sign a body the way Intuit does for QuickBooks Online webhooks, with hmac/hashlib only.

https://developer.intuit.com/app/developer/qbo/docs/develop/webhooks — `intuit-signature` is the base64
HMAC-SHA256 of the raw body keyed with the app's Verifier Token. Intuit publishes no Python signer, so
this is written from that page, independent of webhooks_gateway.providers.quickbooks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign_quickbooks(body: bytes, *, verifier_token: str) -> dict[str, str]:
    """The headers Intuit sends with `body` (no timestamp: the scheme has none)."""
    digest = hmac.new(verifier_token.encode("utf-8"), body, hashlib.sha256).digest()
    return {
        "intuit-signature": base64.b64encode(digest).decode("ascii"),
        "Content-Type": "application/json",
    }
