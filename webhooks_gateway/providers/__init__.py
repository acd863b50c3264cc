"""The provider registry: route segment -> the module holding that provider's inbound story."""

from __future__ import annotations

from webhooks_gateway.providers import stripe
from webhooks_gateway.providers.base import Provider

PROVIDERS: dict[str, Provider] = {"stripe": stripe}
