"""Authenticate a test request the way our Zap actions and Zapier app are set up: a shared secret.

"Webhooks by Zapier" requests are not signed; the Zap's action sends the header we configure.
https://help.zapier.com/hc/en-us/articles/8496326446989-Send-webhooks-in-Zaps
"""

from __future__ import annotations

SECRET_HEADER = "X-Hookfleet-Secret"


def sign_zapier(secret: str, *, bearer: bool = False) -> dict[str, str]:
    """The headers of a Zap's JSON POST, the secret as X-Hookfleet-Secret (or as a Bearer token)."""
    if bearer:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}
    return {"Content-Type": "application/json", SECRET_HEADER: secret}
