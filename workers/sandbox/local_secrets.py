"""What `make run` puts in place of provider settings that are not set: local webhook secrets, kept
across restarts so the fleet and `hookfleet send` agree, and the sandbox's address for every API."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from pathlib import Path

from schemas.settings import Settings
from workers.sandbox.luma import SANDBOX_API_KEY as LUMA_SANDBOX_KEY

STATE_DIR = Path(".hookfleet")
SECRETS_FILE = STATE_DIR / "sandbox-secrets.json"

_MAKERS: dict[str, Callable[[], str]] = {
    "STRIPE_WEBHOOK_SECRET": lambda: f"whsec_sandbox_{secrets.token_urlsafe(24)}",
    "CLERK_WEBHOOK_SIGNING_SECRET": lambda: (
        "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    ),
}


def sandbox_secret(variable: str) -> str:
    """The local inbound secret for `variable`, created once (file mode 0600)."""
    stored: dict[str, str] = json.loads(SECRETS_FILE.read_text()) if SECRETS_FILE.exists() else {}
    if variable not in stored:
        stored[variable] = _MAKERS[variable]()
        STATE_DIR.mkdir(exist_ok=True)
        SECRETS_FILE.touch(mode=0o600)
        SECRETS_FILE.write_text(json.dumps(stored, indent=2))
    return stored[variable]


def sandbox_overrides(settings: Settings, sandbox_url: str) -> dict[str, str]:
    """Environment for the fleet's processes: each provider left unconfigured is played locally."""
    env: dict[str, str] = {}
    if not settings.stripe_webhook_secret:
        env["STRIPE_WEBHOOK_SECRET"] = sandbox_secret("STRIPE_WEBHOOK_SECRET")
    if not settings.clerk_webhook_signing_secret:
        env["CLERK_WEBHOOK_SIGNING_SECRET"] = sandbox_secret("CLERK_WEBHOOK_SIGNING_SECRET")
    if settings.stripe_secret_key is None:
        env |= {"STRIPE_SECRET_KEY": "sk_test_sandbox", "STRIPE_API_BASE": f"{sandbox_url}/stripe"}
    if settings.slack_bot_token is None:
        env |= {"SLACK_BOT_TOKEN": "xoxb-sandbox", "SLACK_API_BASE": f"{sandbox_url}/slack/api/"}
    if settings.mailchimp_api_key is None:
        env |= {
            "MAILCHIMP_API_KEY": "sandbox-us1",
            "MAILCHIMP_API_BASE": f"{sandbox_url}/mailchimp/3.0",
            "MAILCHIMP_LIST_ID": settings.mailchimp_list_id or "sandbox-audience",
        }
    if settings.sendgrid_api_key is None:
        env |= {
            "SENDGRID_API_KEY": "SG.sandbox",
            "SENDGRID_API_BASE": f"{sandbox_url}/sendgrid",
            "SENDGRID_WELCOME_TEMPLATE_ID": "d-sandbox-welcome",
            "SENDGRID_PAYMENT_FAILED_TEMPLATE_ID": "d-sandbox-payment-failed",
        }
    if settings.airtable_api_key is None:
        env |= {"AIRTABLE_API_KEY": "patSandbox", "AIRTABLE_API_BASE": f"{sandbox_url}/airtable"}
    if settings.luma_api_key is None:
        env |= {"LUMA_API_KEY": LUMA_SANDBOX_KEY, "LUMA_API_BASE": f"{sandbox_url}/luma"}
    return env
