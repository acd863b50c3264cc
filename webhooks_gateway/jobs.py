"""`POST /jobs/{name}`: an external cron starts a scheduled job (operators use the admin API's
`POST /admin/api/jobs/{name}`, with a key of scope `jobs:run`, which is audited).

Authenticated by `Authorization: Bearer <CRON_SECRET>`, compared in constant time; 401 without it
or with a wrong one (before anything else is revealed), then 404 for an unknown job. The job task is
enqueued on the jobs' queue and the answer is 202 with its task id; `?dry_run=true` asks for a dry
run. With CRON_SECRET unset the route is disabled: it answers 404 and start-up says so.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.settings import Settings
from workers.jobs import JOBS, SendJob
from workers.logging import get_logger
from workers.queues import JOB_QUEUE

log = get_logger(__name__)
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def job_routes(settings: Settings, send_job: SendJob) -> list[Route]:
    secret = settings.cron_secret.get_secret_value() if settings.cron_secret else ""
    if not secret.strip():
        log.warning("gateway.jobs_route_disabled", reason="set CRON_SECRET to enable POST /jobs")

    async def start_job(request: Request) -> JSONResponse:
        if not secret.strip():
            return _error(404, "POST /jobs is disabled: CRON_SECRET is not set")
        token = _bearer(request)
        if token is None or not hmac.compare_digest(token.encode(), secret.encode()):
            return _error(401, "a valid cron secret is required", **{"WWW-Authenticate": "Bearer"})
        name = request.path_params["name"]
        spec = JOBS.get(name)
        if spec is None:
            return _error(404, f"no job named {name!r}")
        dry_run = request.query_params.get("dry_run", "").lower() in TRUE_VALUES
        kwargs = {"triggered_by": "cron", "dry_run": dry_run}
        try:
            task_id = await run_in_threadpool(send_job, spec.task, kwargs, JOB_QUEUE)
        except Exception as exc:  # the broker is down: the cron should try again
            log.error("gateway.job_not_enqueued", job=name, error=str(exc)[:200])
            return _error(503, "the job could not be queued; try again")
        log.info("gateway.job_enqueued", job=name, task_id=task_id, dry_run=dry_run)
        return JSONResponse(
            {"job": name, "task_id": task_id, "dry_run": dry_run, "status": "queued"},
            status_code=202,
        )

    return [Route("/jobs/{name}", start_job, methods=["POST"])]


def celery_job_sender(celery: Any) -> SendJob:
    """Send by task name on the given queue, failing fast when the broker is gone."""
    from workers.enqueue import PUBLISH_RETRY_POLICY

    def send(task: str, kwargs: dict[str, Any], queue: str) -> str:
        result = celery.send_task(
            task, kwargs=kwargs, queue=queue, retry=True, retry_policy=PUBLISH_RETRY_POLICY
        )
        return str(result.id)

    return send
