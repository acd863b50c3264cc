"""The Celery app: broker, reliability settings, queues and routes, logging, per-process resets."""

from __future__ import annotations

import gc
from typing import Any

import structlog
from celery import Celery, signals

from schemas.settings import Settings
from workers import broker_transport, runtime
from workers.beat import beat_schedule
from workers.jobs import JOB_ROUTES, JOB_TASK_MODULES
from workers.logging import configure_logging
from workers.queues import QUEUE_OBJECTS, ROUTES, TASK_MODULES

# Publishing must give up fast when the broker is gone: the inbox row is already committed and the
# sweep re-enqueues it, while a gateway blocked on a dead broker would time out at the provider.
BROKER_SOCKET_TIMEOUT_SECONDS = 2


def make_celery(settings: Settings) -> Celery:
    broker_transport.register()
    app = Celery(
        "hookfleet",
        broker=settings.celery_broker_url,
        include=[*TASK_MODULES, *JOB_TASK_MODULES],
    )
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_time_limit=settings.task_default_time_limit,
        task_soft_time_limit=int(settings.task_default_time_limit * 0.8),
        task_queues=QUEUE_OBJECTS,
        task_default_queue="dispatch",
        task_routes={**ROUTES, **JOB_ROUTES},
        task_send_sent_event=True,
        worker_send_task_events=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Longer than any task's hard limit, or Redis redelivers a task that is still running.
            "visibility_timeout": settings.broker_visibility_timeout,
            "unacked_restore_interval": settings.broker_unacked_restore_interval,
            "unacked_restore_throttle": settings.broker_unacked_restore_throttle,
            "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
            "socket_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
        },
        beat_schedule=beat_schedule(settings),
        # RedBeat keeps the schedule in Redis under a lock: of several beats started, one schedules
        # and the others wait to take over when its lock lapses (a stopped beat releases it).
        beat_scheduler="redbeat.RedBeatScheduler",
        redbeat_redis_url=settings.redis_url,
        redbeat_key_prefix=settings.redbeat_key_prefix,
        redbeat_lock_timeout=settings.beat_lock_timeout_seconds,
        # A Redis blip is waited out (up to a minute) instead of ending the beat process.
        redbeat_redis_options={
            "retry_period": 60,
            "socket_timeout": BROKER_SOCKET_TIMEOUT_SECONDS * 2,
            "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_SECONDS * 2,
        },
        # The active beat renews its lock on every tick, so it must tick well inside the lock's life.
        beat_max_loop_interval=max(1, settings.beat_lock_timeout_seconds // 4),
        timezone="UTC",
        enable_utc=True,
    )
    return app


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure_logging(runtime.settings().log_level, runtime.settings().log_json)


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    runtime.reset_after_fork()
    # Everything inherited from the parent lives as long as the child: full collections skip it
    # (shorter pauses between tasks, fewer copy-on-write pages).
    gc.freeze()


@signals.task_prerun.connect
def _bind_task(task_id: str, task: Any, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=task.name)


@signals.task_postrun.connect
def _unbind_task(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()


app = make_celery(runtime.settings())
