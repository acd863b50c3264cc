"""Worker-side Prometheus metrics, shared by every process of a worker's tree.

The metrics are module-level prometheus-client objects. When PROMETHEUS_MULTIPROC_DIR is set before
the process starts (the fleet launcher, deploy/ and the tests set it per role and host, and wipe it
at process-tree start), each prefork child writes its values to files there and the worker's main
process serves the sum (see workers/worker_metrics.py). Task metrics reuse celery-exporter's names
and labels so dashboards built for it keep working; ours carry the `hookfleet_` prefix.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# --- Task lifecycle: celery-exporter's names (danihodovic/celery-exporter) ----------------------
TASK_LABELS = ["name", "hostname", "queue_name"]
TASK_SENT = Counter("celery_task_sent", "Sent when a task message is published.", TASK_LABELS)
TASK_RECEIVED = Counter(
    "celery_task_received", "Sent when the worker receives a task.", TASK_LABELS
)
TASK_STARTED = Counter(
    "celery_task_started", "Sent just before the worker executes the task.", TASK_LABELS
)
TASK_SUCCEEDED = Counter(
    "celery_task_succeeded", "Sent if the task executed successfully.", TASK_LABELS
)
TASK_FAILED = Counter(
    "celery_task_failed", "Sent if the execution of the task failed.", [*TASK_LABELS, "exception"]
)
TASK_RETRIED = Counter(
    "celery_task_retried", "Sent if the task failed, but will be retried.", TASK_LABELS
)
TASK_RUNTIME = Histogram(
    "celery_task_runtime",
    "Histogram of task runtime measurements.",
    TASK_LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 90, float("inf")),
)
# No celery-exporter equivalent: time from publish to the start of execution.
TASK_QUEUE_WAIT = Histogram(
    "hookfleet_task_queue_wait_seconds",
    "Seconds a task message waited between being sent and starting to run",
    ["name", "queue_name"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, float("inf")),
)

# --- Ours ---------------------------------------------------------------------------------------
RETRIED = Counter("hookfleet_task_retried", "Task attempts that will be retried", ["task"])
DEAD_LETTERED = Counter(
    "hookfleet_task_dead_lettered", "Tasks written to the dead-letter store", ["task"]
)
JOB_RUNS = Counter("hookfleet_job_runs", "Scheduled job runs by outcome", ["job", "outcome"])
RATE_LIMIT_WAITS = Counter(
    "hookfleet_rate_limit_waits",
    "Waits imposed by a rate limiter or a provider's Retry-After",
    ["provider"],
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "hookfleet_rate_limit_wait_seconds", "Seconds spent waiting for rate limits", ["provider"]
)
PROVIDER_API_CALLS = Counter(
    "hookfleet_provider_api_calls", "Outbound provider API calls", ["provider", "status"]
)

# Connects the Celery signal hooks that fill the task metrics, in every process that has them.
import workers.worker_metrics  # noqa: E402, F401
