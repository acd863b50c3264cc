"""Named queues and the routes that send each task module to its own queue."""

from __future__ import annotations

from kombu import Exchange, Queue

QUEUES = ("dispatch", "lifecycle", "sync", "notification", "maintenance")
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
