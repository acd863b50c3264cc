"""Sign a body the way Svix does for Clerk, with the svix SDK's own signer.

https://docs.svix.com/receiving/verifying-payloads/how-manual — `v1,<base64 HMAC-SHA256>` over
`"{msg_id}.{timestamp}.{body}"`, keyed with the base64-decoded part of `whsec_...`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from svix.webhooks import Webhook


def sign_clerk(
    body: bytes,
    *,
    secret: str,
    at: datetime,
    msg_id: str,
    extra_secrets: Iterable[str] = (),
    prefix: str = "svix",
) -> dict[str, str]:
    """The headers Svix sends with `body` as message `msg_id`, signed at `at` (an aware datetime).

    Each of `extra_secrets` adds one more space-separated `v1,` entry, as Svix does while an
    endpoint's previous secret is still live. `prefix="webhook"` gives the white-label headers.
    """
    text = body.decode("utf-8")
    signatures = [Webhook(key).sign(msg_id, at, text) for key in (secret, *extra_secrets)]
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(int(at.timestamp())),
        f"{prefix}-signature": " ".join(signatures),
        "Content-Type": "application/json",
    }
