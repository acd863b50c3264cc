"""Sign a notification ping the way Airtable does, with hmac/hashlib only.

https://airtable.com/developers/web/api/webhooks-overview — `X-Airtable-Content-MAC: hmac-sha256=<hex>`,
HMAC-SHA256 over the raw body keyed with the base64-decoded `macSecretBase64`. pyairtable only verifies
(it has no signer), so this is written from that page, independent of our verifier.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign_airtable(body: bytes, *, mac_secret_base64: str) -> dict[str, str]:
    """The headers Airtable sends with the ping `body` (no timestamp: the scheme has none)."""
    key = base64.b64decode(mac_secret_base64)
    mac = hmac.new(key, body, hashlib.sha256).hexdigest()
    return {"X-Airtable-Content-MAC": f"hmac-sha256={mac}", "Content-Type": "application/json"}
