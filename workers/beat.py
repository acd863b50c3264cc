"""The only place schedules are defined: task name -> when, for the single beat process."""

from __future__ import annotations

from typing import Any

from schemas.settings import Settings, parse_schedule
from workers.jobs import JOBS
from workers.queues import JOB_QUEUE


def job_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The scheduled jobs (workers.jobs), each at the cron expression of its setting."""
    return {
        spec.name: {
            "task": spec.task,
            "schedule": parse_schedule(getattr(settings, spec.schedule_setting)),
            "kwargs": {"triggered_by": "beat"},
            "options": {"queue": JOB_QUEUE},
        }
        for spec in JOBS.values()
    }


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        **job_schedule(settings),
        "deactivation-sweep": {
            "task": "tasks.lifecycle.end_due_memberships",
            "schedule": settings.deactivation_sweep_every_seconds,
        },
        "inbox-sweep": {
            "task": "workers.maintenance.sweep_inbox",
            "schedule": settings.inbox_sweep_every_seconds,
        },
    }
