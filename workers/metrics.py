"""Worker-side Prometheus metrics (served and aggregated across processes in the operators' issue)."""

from __future__ import annotations

from prometheus_client import Counter

RETRIED = Counter("hookfleet_task_retried", "Task attempts that will be retried", ["task"])
DEAD_LETTERED = Counter(
    "hookfleet_task_dead_lettered", "Tasks written to the dead-letter store", ["task"]
)
