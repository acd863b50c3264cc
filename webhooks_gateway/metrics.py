"""Gateway-side Prometheus metrics: every webhook outcome counted by provider."""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOKS_RECEIVED = Counter(
    "webhooks_received",
    "Webhook requests by provider and outcome (accepted, duplicate, handshake, rejected kinds)",
    ["provider", "outcome"],
)
SIGNATURE_FAILURES = Counter(
    "webhooks_signature_failures",
    "Rejected signatures by provider and reason",
    ["provider", "reason"],
)
