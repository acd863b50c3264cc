"""Tasks that misbehave on purpose, loaded into test workers with `celery worker -I`.

They use the production base task, so what they prove (retry limits, dead letters for lost
workers) is the behaviour every real task gets.
"""

from __future__ import annotations

import os
import signal
import time

from schemas.db import session_scope
from workers import runtime
from workers.audit import audit
from workers.base_task import GatewayTask
from workers.celery_app import app


class _NoInbox(GatewayTask):
    carries_inbox_id = False


@app.task(name="tests.fault_tasks.kill_own_worker", base=_NoInbox)
def kill_own_worker(marker: str) -> None:
    """Dies like an OOM-killed worker: SIGKILL to its own process, every time."""
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="tests.fault_tasks.always_permanent", base=_NoInbox)
def always_permanent(marker: str) -> None:
    raise ValueError(f"permanent failure for {marker}")


@app.task(name="tests.fault_tasks.slow_mark", base=_NoInbox)
def slow_mark(marker: str, seconds: float) -> None:
    """Takes `seconds`, then leaves one audit row per run, so a test can count runs per marker."""
    time.sleep(seconds)
    with session_scope(runtime.sessions()) as session:
        audit(
            session, actor="test", action="test.slow_mark", entity_type="marker", entity_id=marker
        )
