"""The admin API: dead letters and stored webhooks for operators' tools, behind scoped API keys.

FastAPI here (the webhook path stays plain Starlette): these routes take typed queries and JSON
bodies and are read by people through the generated OpenAPI page. The routes are relative, and the
gateway mounts the app at /admin/api, so the schema is /admin/api/openapi.json and the page
/admin/api/docs.

Every request passes, in order: the key (401), the route's scope (403), the key's token bucket (429
with Retry-After). The work itself is done by workers.dead_letters, workers.inbox_events and
workers.jobs, which the CLI and the pages call too; they write the audit rows, here with the actor
`api:<key name>`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import redis
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Security, status
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import session_scope
from webhooks_gateway.admin.health import IntegrationHealth, integration_health
from workers import api_keys, dead_letters, inbox_events, jobs
from workers.dead_letters import DeadLetterStatus, SendTask
from workers.jobs import SendJob
from workers.logging import get_logger
from workers.rate_limit import TokenBucket, retry_after_seconds

log = get_logger(__name__)

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

DeadLetterStatusName = Literal["dead", "replayed", "discarded"]
InboxStatusName = Literal["received", "enqueued", "dispatched", "processed", "ignored", "failed"]


class BrokerUnavailableError(RuntimeError):
    """The task could not be handed to the broker; nothing was changed."""


@dataclass(frozen=True)
class Caller:
    """The authenticated key, copied out of its session."""

    id: int
    name: str
    scopes: frozenset[str]
    rate_per_minute: int

    @property
    def actor(self) -> str:
        return f"api:{self.name}"


# --- response and request bodies -------------------------------------------------------------


class DeadLetterSummary(BaseModel):
    id: int
    task_name: str
    task_id: str
    status: str
    exc_type: str
    exc_message: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    inbox_id: int | None
    replay_of_id: int | None
    replayed_task_id: str | None
    discard_reason: str | None


class DeadLetterDetail(DeadLetterSummary):
    # `kwargs` goes by alias: a field of that name clashes with the **kwargs of the __init__ that the
    # pydantic mypy plugin synthesizes. The JSON key is still `kwargs`.
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    args: list[Any]
    kwargs_: dict[str, Any] = Field(alias="kwargs")
    queue: str | None
    traceback: str | None


class DeadLetterList(BaseModel):
    items: list[DeadLetterSummary]
    count: int


class DeadLetterReplayed(BaseModel):
    id: int
    new_task_id: str


class BulkReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str | None = Field(default=None, description="only dead letters of this task name")
    since: datetime | None = Field(
        default=None, description="only those that last failed at or after this time (UTC if naive)"
    )
    dry_run: bool = Field(default=False, description="report what would be replayed, send nothing")


class BulkReplayResult(BaseModel):
    matched: int
    matched_ids: list[int]
    replayed: list[int]
    skipped: list[int] = Field(
        description="matched, but replayed or discarded by someone else in the meantime"
    )
    dry_run: bool


class DiscardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = Field(min_length=1, max_length=4000, description="why it is not replayed")


class DeadLetterDiscarded(BaseModel):
    id: int
    status: str
    discard_reason: str


class EventSummary(BaseModel):
    id: int
    provider: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    last_error: str | None
    received_at: datetime
    enqueued_at: datetime | None
    processed_at: datetime | None


class EventDetail(EventSummary):
    body: str
    headers: dict[str, Any]


class EventList(BaseModel):
    items: list[EventSummary]
    count: int


class EventReplayed(BaseModel):
    id: int
    task_id: str


class JobQueued(BaseModel):
    job: str
    task_id: str
    dry_run: bool
    status: Literal["queued"] = "queued"


# --- wiring: what the routes use, kept on the app so the routes can live at module level ------


@dataclass(frozen=True)
class AdminDeps:
    sessions: sessionmaker[Session]
    send_task: SendTask
    publish: Callable[[int], str]
    send_job: SendJob
    bucket: TokenBucket
    # (name, inbound secret set) of every provider, for the health report.
    providers: tuple[tuple[str, bool], ...] = ()

    def transaction(self) -> AbstractContextManager[Session]:
        return session_scope(self.sessions)

    def send(
        self,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        headers: dict[str, Any],
        task_id: str,
    ) -> str:
        return _to_broker(self.send_task, name, args, kwargs, headers, task_id)

    def publish_event(self, inbox_id: int) -> str:
        return _to_broker(self.publish, inbox_id)

    def start_job(self, task: str, kwargs: dict[str, Any], queue: str) -> str:
        return _to_broker(self.send_job, task, kwargs, queue)


def _to_broker(call: Callable[..., str], *args: Any) -> str:
    """Any failure to hand over is the broker's: the routes answer 503, nothing changed."""
    try:
        return call(*args)
    except Exception as exc:
        raise BrokerUnavailableError(f"{type(exc).__name__}: {exc}"[:300]) from exc


def _deps(request: Request) -> AdminDeps:
    deps: AdminDeps = request.app.state.admin
    return deps


Deps = Annotated[AdminDeps, Depends(_deps)]

_bearer = HTTPBearer(auto_error=False, description="an API key from `hookfleet keys create`")
_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="the same key, in a header of its own"
)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def _spend_token(bucket: TokenBucket, caller: Caller) -> None:
    """429 when the key's bucket is empty. A Redis outage lets the request through (logged): the
    key was already checked in the database, and the limit guards load, not access."""
    try:
        wait = bucket.take(
            f"api_key:{caller.id}",
            capacity=caller.rate_per_minute,
            refill_per_second=caller.rate_per_minute / 60,
        )
    except redis.RedisError as exc:
        log.warning("admin.rate_limit_unavailable", error=str(exc)[:200], api_key=caller.name)
        return
    if wait > 0:
        seconds = retry_after_seconds(wait)
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"rate limit of {caller.rate_per_minute} requests/minute; retry in {seconds}s",
            headers={"Retry-After": str(seconds)},
        )


def require(scope: str | None) -> Callable[..., Caller]:
    """The dependency of a route that needs `scope` (None: any valid key): the key (401), the scope
    (403), the rate (429)."""
    if scope is not None and scope not in api_keys.SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def dependency(
        deps: Deps,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        header_key: Annotated[str | None, Security(_key_header)],
    ) -> Caller:
        presented = credentials.credentials if credentials else header_key
        if not presented:
            raise _unauthorized("an API key is required")
        with deps.transaction() as session:
            row = api_keys.authenticate(session, presented)
            caller = (
                Caller(
                    id=row.id,
                    name=row.name,
                    scopes=frozenset(row.scopes),
                    rate_per_minute=row.rate_per_minute,
                )
                if row is not None
                else None
            )
        if caller is None:
            raise _unauthorized("unknown or revoked API key")
        if scope is not None and scope not in caller.scopes:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail=f"this API key lacks the scope {scope!r}"
            )
        _spend_token(deps.bucket, caller)
        return caller

    dependency.__name__ = f"api_key_with_{(scope or 'any_scope').replace(':', '_')}"
    return dependency


DlqRead = Annotated[Caller, Depends(require("dlq:read"))]
DlqWrite = Annotated[Caller, Depends(require("dlq:write"))]
EventsRead = Annotated[Caller, Depends(require("events:read"))]
EventsReplay = Annotated[Caller, Depends(require("events:replay"))]
JobsRun = Annotated[Caller, Depends(require("jobs:run"))]
AnyKey = Annotated[Caller, Depends(require(None))]

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many, newest first")]
Since = Annotated[datetime | None, Query(description="at or after this time (UTC if naive)")]

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such row"}}
NOT_DEAD: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND,
    409: {"description": "the dead letter was already replayed or discarded"},
    503: {"description": "the broker is unavailable; nothing was changed"},
}


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


# --- dead letters ---------------------------------------------------------------------------

dead_letter_routes = APIRouter(prefix="/dead-letters", tags=["dead letters"])


@dead_letter_routes.get("", response_model=DeadLetterList)
def list_dead_letters(
    _: DlqRead,
    deps: Deps,
    task: str | None = None,
    status_: Annotated[DeadLetterStatusName | None, Query(alias="status")] = None,
    since: Since = None,
    limit: Limit = DEFAULT_LIMIT,
) -> DeadLetterList:
    """Dead letters, newest first. Scope `dlq:read`."""
    with deps.transaction() as session:
        rows = dead_letters.query(
            session, task=task, status=status_, since=_as_utc(since), limit=limit
        )
        items = [DeadLetterSummary.model_validate(dead_letters.as_dict(row)) for row in rows]
    return DeadLetterList(items=items, count=len(items))


@dead_letter_routes.post(
    "/replay",
    response_model=BulkReplayResult,
    responses={503: {"description": "the broker went away; the rows replayed so far are listed"}},
)
def replay_dead_letters(
    caller: DlqWrite, deps: Deps, filters: BulkReplayRequest
) -> BulkReplayResult:
    """Replay every `dead` row matching the filters, each in a transaction of its own.

    Scope `dlq:write`. With `dry_run` nothing is sent: the matching ids are reported."""
    with deps.transaction() as session:
        rows = dead_letters.query(
            session,
            task=filters.task,
            status=DeadLetterStatus.DEAD,
            since=_as_utc(filters.since),
            limit=None,
        )
        matched_ids = sorted(row.id for row in rows)
    replayed: list[int] = []
    skipped: list[int] = []
    if not filters.dry_run:
        for dead_letter_id in matched_ids:
            try:
                dead_letters.replay(
                    deps.sessions, dead_letter_id, send=deps.send, actor=caller.actor
                )
            except (dead_letters.DeadLetterStateError, dead_letters.DeadLetterNotFoundError):
                skipped.append(dead_letter_id)  # someone else acted on it meanwhile
                continue
            except BrokerUnavailableError as exc:
                done = set(replayed) | set(skipped)
                log.warning("admin.bulk_replay_interrupted", replayed=replayed, error=str(exc))
                raise HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE,
                    detail={
                        "error": "the broker is unavailable; the replay stopped",
                        "replayed": replayed,
                        "not_replayed": [i for i in matched_ids if i not in done],
                    },
                ) from exc
            replayed.append(dead_letter_id)
    return BulkReplayResult(
        matched=len(matched_ids),
        matched_ids=matched_ids,
        replayed=replayed,
        skipped=skipped,
        dry_run=filters.dry_run,
    )


@dead_letter_routes.get("/{dead_letter_id}", response_model=DeadLetterDetail, responses=NOT_FOUND)
def show_dead_letter(_: DlqRead, deps: Deps, dead_letter_id: int) -> DeadLetterDetail:
    """One dead letter with its arguments and traceback. Scope `dlq:read`."""
    with deps.transaction() as session:
        row = dead_letters.get(session, dead_letter_id)
        return DeadLetterDetail.model_validate(dead_letters.as_dict(row, full=True))


@dead_letter_routes.post(
    "/{dead_letter_id}/replay", response_model=DeadLetterReplayed, responses=NOT_DEAD
)
def replay_dead_letter(caller: DlqWrite, deps: Deps, dead_letter_id: int) -> DeadLetterReplayed:
    """Send the same task with the same arguments again. Scope `dlq:write`."""
    new_task_id = dead_letters.replay(
        deps.sessions, dead_letter_id, send=deps.send, actor=caller.actor
    )
    return DeadLetterReplayed(id=dead_letter_id, new_task_id=new_task_id)


@dead_letter_routes.post(
    "/{dead_letter_id}/discard", response_model=DeadLetterDiscarded, responses=NOT_DEAD
)
def discard_dead_letter(
    caller: DlqWrite, deps: Deps, dead_letter_id: int, body: DiscardRequest
) -> DeadLetterDiscarded:
    """Keep the row, marked `discarded` with the reason. Scope `dlq:write`."""
    with deps.transaction() as session:
        dead_letters.discard(session, dead_letter_id, reason=body.reason, actor=caller.actor)
    return DeadLetterDiscarded(
        id=dead_letter_id, status=DeadLetterStatus.DISCARDED, discard_reason=body.reason
    )


# --- stored webhooks ------------------------------------------------------------------------

event_routes = APIRouter(prefix="/events", tags=["events"])


@event_routes.get("", response_model=EventList)
def list_events(
    _: EventsRead,
    deps: Deps,
    provider: str | None = None,
    status_: Annotated[InboxStatusName | None, Query(alias="status")] = None,
    event_type: str | None = None,
    since: Since = None,
    limit: Limit = DEFAULT_LIMIT,
) -> EventList:
    """Stored webhooks, newest first. Scope `events:read`."""
    with deps.transaction() as session:
        rows = inbox_events.query(
            session,
            provider=provider,
            status=status_,
            event_type=event_type,
            since=_as_utc(since),
            limit=limit,
        )
        items = [EventSummary.model_validate(inbox_events.as_dict(row)) for row in rows]
    return EventList(items=items, count=len(items))


@event_routes.get("/{inbox_id}", response_model=EventDetail, responses=NOT_FOUND)
def show_event(_: EventsRead, deps: Deps, inbox_id: int) -> EventDetail:
    """One stored webhook with its body and the headers kept to verify it. Scope `events:read`."""
    with deps.transaction() as session:
        row = inbox_events.get(session, inbox_id)
        return EventDetail.model_validate(inbox_events.as_dict(row, full=True))


@event_routes.post(
    "/{inbox_id}/replay",
    response_model=EventReplayed,
    responses={**NOT_FOUND, 503: {"description": "the broker is unavailable"}},
)
def replay_event(caller: EventsReplay, deps: Deps, inbox_id: int) -> EventReplayed:
    """Process the stored webhook again from the start. Scope `events:replay`."""
    task_id = inbox_events.replay(
        deps.sessions, inbox_id, publish=deps.publish_event, actor=caller.actor
    )
    return EventReplayed(id=inbox_id, task_id=task_id)


# --- scheduled jobs -------------------------------------------------------------------------

job_routes = APIRouter(prefix="/jobs", tags=["jobs"])


@job_routes.post(
    "/{name}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobQueued,
    responses={404: {"description": "no such job"}, 503: {"description": "the broker is down"}},
)
def start_job(
    caller: JobsRun,
    deps: Deps,
    name: str,
    dry_run: Annotated[bool, Query(description="decide and report; change nothing")] = False,
) -> JobQueued:
    """Queue a run of the scheduled job now, as beat would; its job_runs row and the audit name
    the key. Scope `jobs:run`."""
    task_id = jobs.request_run(
        deps.sessions, name, dry_run=dry_run, actor=caller.actor, send=deps.start_job
    )
    return JobQueued(job=name, task_id=task_id, dry_run=dry_run)


# --- integration health ---------------------------------------------------------------------

health_routes = APIRouter(tags=["health"])


@health_routes.get("/health", response_model=IntegrationHealth)
def health(_: AnyKey, deps: Deps) -> IntegrationHealth:
    """Per provider: the last webhook stored and the last hour's failures, the last outbound call
    that succeeded and failed and the last hour's error rate; the last run of every scheduled job.
    Any valid key."""
    with deps.transaction() as session:
        return integration_health(session, deps.bucket.redis, deps.providers, now=datetime.now(UTC))


# --- the app --------------------------------------------------------------------------------


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)


async def _broker_down(_: Request, exc: Exception) -> JSONResponse:
    log.warning("admin.broker_unavailable", error=str(exc))
    return JSONResponse(
        {"detail": "the broker is unavailable; nothing was changed, try again"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


def create_admin_api(
    *,
    sessions: sessionmaker[Session],
    send_task: SendTask,
    publish: Callable[[int], str],
    send_job: SendJob,
    bucket: TokenBucket,
    providers: Sequence[tuple[str, bool]] = (),
) -> FastAPI:
    """The admin routes, relative to wherever the app is mounted (/admin/api in the gateway)."""
    app = FastAPI(
        title="hookfleet admin API",
        version="1",
        description=(
            "Dead letters and stored webhooks: list, inspect, replay, discard; "
            "scheduled jobs: start one now. "
            "Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`; "
            "keys are made with `hookfleet keys create`. Every change is audited."
        ),
        exception_handlers={
            dead_letters.DeadLetterNotFoundError: _not_found,
            inbox_events.InboxEventNotFoundError: _not_found,
            jobs.UnknownJobError: _not_found,
            dead_letters.DeadLetterStateError: _conflict,
            BrokerUnavailableError: _broker_down,
        },
    )
    app.state.admin = AdminDeps(
        sessions=sessions,
        send_task=send_task,
        publish=publish,
        send_job=send_job,
        bucket=bucket,
        providers=tuple(providers),
    )
    app.include_router(dead_letter_routes)
    app.include_router(event_routes)
    app.include_router(job_routes)
    app.include_router(health_routes)
    return app
