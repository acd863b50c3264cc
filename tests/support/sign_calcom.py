"""Sign a body the way Cal.com does, from its published scheme with hashlib/hmac only.

https://cal.com/docs/developing/guides/automation/webhooks — `X-Cal-Signature-256` is the hex
HMAC-SHA256 of the raw body keyed with the webhook secret (Cal.com's `createWebhookSignature`).
"""

from __future__ import annotations

import hashlib
import hmac

WEBHOOK_VERSION = "2021-10-20"


def sign_calcom(body: bytes, *, secret: str) -> dict[str, str]:
    """The headers Cal.com sends with `body` for a webhook whose secret is `secret`."""
    signature = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return {
        "X-Cal-Signature-256": signature,
        "X-Cal-Webhook-Version": WEBHOOK_VERSION,
        "Content-Type": "application/json",
    }
