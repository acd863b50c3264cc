"""Hookfleet's outbound provider clients: one per provider, each sorting its errors into workers.errors."""

from schemas.settings import Settings
from workers.logging import get_logger

_log = get_logger(__name__)

# The setting whose absence means the platform does not use the provider at all.
SERVICE_KEYS = {
    "mailchimp": "mailchimp_api_key",
    "sendgrid": "sendgrid_api_key",
    "slack": "slack_bot_token",
    "stripe": "stripe_secret_key",
}


def configured(service: str, settings: Settings) -> bool:
    return getattr(settings, SERVICE_KEYS[service]) is not None


def not_configured(service: str) -> str:
    """A provider the platform does not use (no key set) is skipped, not dead-lettered; one set up
    only in part (a key but no list or template) still fails loudly inside its client. Debug, not
    info: it is so for every event of the deployment, and would be half of the worker's lines."""
    _log.debug("provider.not_configured", service=service)
    return f"{service}_not_configured"
