"""The no-op task the worker-throughput figure is compared with: same workers, same queue, no work.

Loaded into the bench's workers with `-I tests.bench.noop_task`; unrouted, so it lands on the
default queue (`dispatch`), where process_event is consumed.
"""

from __future__ import annotations

from workers.base_task import GatewayTask
from workers.celery_app import app

NOOP = "tests.bench.noop"


class _NoInbox(GatewayTask):
    """The production base task (its hooks cost the same), for an argument that names no row."""

    carries_inbox_id = False


@app.task(name=NOOP, base=_NoInbox)  # type: ignore[untyped-decorator]  # Celery is untyped
def noop(inbox_id: int) -> None:
    """Takes the same argument as process_event and does nothing with it."""
