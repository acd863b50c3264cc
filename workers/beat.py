"""The only place schedules are defined: task name -> when, for the single beat process."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from schemas.settings import Settings

INBOX_SWEEP_EVERY = timedelta(minutes=1)


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "inbox-sweep": {
            "task": "workers.maintenance.sweep_inbox",
            "schedule": INBOX_SWEEP_EVERY.total_seconds(),
        },
    }
