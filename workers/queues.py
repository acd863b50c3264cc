"""Named queues and the routes that send each task module to its own queue."""

from __future__ import annotations

from kombu import Exchange, Queue

# Scheduled jobs run for minutes at the providers' limits: a queue of their own, consumed by a
# worker of its own, so a job never holds the slots that webhooks' tasks wait for.
JOB_QUEUE = "jobs"
# The inbox sweep's process_events after an outage: a queue of their own, which workers take from
# in turn with dispatch (kombu's round robin over a worker's queues), so that live webhooks wait
# behind a message or two of the backlog rather than all of it.
BACKLOG_QUEUE = "backlog"
QUEUES = ("dispatch", BACKLOG_QUEUE, "lifecycle", "sync", "notification", "maintenance", JOB_QUEUE)
WEBHOOK_QUEUES = tuple(name for name in QUEUES if name != JOB_QUEUE)
# Each queue has its own direct exchange and routing key, so no message lands in two queues.
QUEUE_OBJECTS = tuple(Queue(name, Exchange(name), routing_key=name) for name in QUEUES)
# `tasks.<module>.<verb>` -> its queue (outbound sync modules share `sync`); every route is here.
ROUTES = {
    "tasks.dispatch.*": {"queue": "dispatch", "routing_key": "dispatch"},
    "tasks.lifecycle.*": {"queue": "lifecycle", "routing_key": "lifecycle"},
    "tasks.sync.*": {"queue": "sync", "routing_key": "sync"},
    "tasks.member_sync.*": {"queue": "sync", "routing_key": "sync"},
    "tasks.notification.*": {"queue": "notification", "routing_key": "notification"},
    "workers.maintenance.*": {"queue": "maintenance", "routing_key": "maintenance"},
}
TASK_MODULES = (
    "tasks.dispatch",
    "tasks.lifecycle",
    "tasks.sync",
    "tasks.member_sync",
    "tasks.notification",
    "workers.maintenance",
)
