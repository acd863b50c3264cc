"""The only place schedules are defined: task name -> when, for the single beat process."""

from __future__ import annotations

from typing import Any

from schemas.settings import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "deactivation-sweep": {
            "task": "tasks.lifecycle.end_due_memberships",
            "schedule": settings.deactivation_sweep_every_seconds,
        },
        "inbox-sweep": {
            "task": "workers.maintenance.sweep_inbox",
            "schedule": settings.inbox_sweep_every_seconds,
        },
    }
