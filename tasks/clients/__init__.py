"""Hookfleet's outbound provider clients: one per provider, each sorting its errors into workers.errors."""

from workers.logging import get_logger

_log = get_logger(__name__)


def not_configured(service: str) -> str:
    """A provider the platform does not use (no key set) is skipped, not dead-lettered; one set up
    only in part (a key but no list or template) still fails loudly inside its client."""
    _log.info("provider.not_configured", service=service)
    return f"{service}_not_configured"
