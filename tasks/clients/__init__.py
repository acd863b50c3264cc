"""Hookfleet's outbound provider clients: one per provider, each sorting its errors into workers.errors."""
