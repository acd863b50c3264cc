"""The webhook secret `make run` invents when none is configured, shared by the fleet and the sender."""

from __future__ import annotations

import secrets
from pathlib import Path

STATE_DIR = Path(".hookfleet")
SANDBOX_SECRET_FILE = STATE_DIR / "sandbox-stripe-webhook-secret"


def sandbox_stripe_secret() -> str:
    """Read it, or create it once (mode 0600) so restarts and `hookfleet send` agree."""
    if SANDBOX_SECRET_FILE.exists():
        return SANDBOX_SECRET_FILE.read_text().strip()
    STATE_DIR.mkdir(exist_ok=True)
    value = f"whsec_sandbox_{secrets.token_urlsafe(24)}"
    SANDBOX_SECRET_FILE.touch(mode=0o600)
    SANDBOX_SECRET_FILE.write_text(value)
    return value
