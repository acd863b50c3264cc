"""The operators' pages under /admin: dead letters, stored webhooks, integration health.

Server-rendered (Jinja2, no script at all), so the pages work the same in any browser and need no
front-end build. The gateway mounts this app at /admin, beside the admin API at /admin/api, and
both share one `AdminDeps`: the same database sessions, broker senders and token bucket.

Who may do what is the admin API's: an operator signs in with an API key (`hookfleet keys create`),
each page needs the scope its API route needs (dlq:read to see dead letters, dlq:write to replay or
discard them, events:read and events:replay for stored webhooks; any key may see the health page,
jobs:run starts a scheduled job from it), and every change goes through `workers.dead_letters` /
`workers.inbox_events` / `workers.jobs`, which write the audit rows, here with the actor
`web:<key name>`. Sign-in and sign-out are audited too.

Every POST carries the session's CSRF token (webhooks_gateway.admin.sessions); sign-in attempts are
limited per client address with the API's Redis token bucket.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import redis
from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.settings import Settings
from schemas.tables import ApiKey
from webhooks_gateway.admin import listing, sessions
from webhooks_gateway.admin.api import AdminDeps, BrokerUnavailableError
from webhooks_gateway.admin.health import enabled_providers, integration_health
from workers import api_keys, dead_letters, inbox_events, jobs
from workers.audit import audit
from workers.logging import get_logger
from workers.rate_limit import retry_after_seconds

log = get_logger(__name__)
TEMPLATES = Path(__file__).parent / "templates"
EVENT_STATUSES = ("received", "enqueued", "dispatched", "processed", "ignored", "failed")
EVENT_PAGE_ROWS = 200
MAX_REASON_CHARS = 4000  # as the admin API's discard

# No script runs on these pages; inline <style> is the only thing allowed beyond the page itself.
SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'none'; style-src 'unsafe-inline'; "
    b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"same-origin",
    b"cache-control": b"no-store",
}


@dataclass(frozen=True)
class Operator:
    """The signed-in key, loaded again on every request."""

    id: int
    name: str
    scopes: frozenset[str]

    @property
    def actor(self) -> str:
        return f"web:{self.name}"

    def may(self, scope: str) -> bool:
        return scope in self.scopes


class NotSignedInError(Exception):
    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class MissingScopeError(Exception):
    def __init__(self, operator: Operator, scope: str) -> None:
        super().__init__(f"the key {operator.name!r} lacks the scope {scope!r}")
        self.operator = operator
        self.scope = scope


class CsrfRefusedError(Exception):
    pass


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS.items() if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- request helpers ----------------------------------------------------------------------------


def _deps(request: Request) -> AdminDeps:
    deps: AdminDeps = request.app.state.deps
    return deps


def _now() -> datetime:
    return datetime.now(UTC)


def _operator(request: Request) -> Operator:
    key_id = sessions.key_id(request)
    if key_id is None:
        raise NotSignedInError()
    with _deps(request).transaction() as session:
        row = session.get(ApiKey, key_id)
        operator = (
            Operator(id=row.id, name=row.name, scopes=frozenset(row.scopes))
            if row is not None and row.revoked_at is None
            else None
        )
    if operator is None:
        sessions.end(request)
        raise NotSignedInError("That API key was revoked; sign in with another.")
    return operator


def signed_in(scope: str | None = None) -> Callable[[Request], Operator]:
    """The dependency of a page: a signed-in, unrevoked key, holding `scope` when one is named."""
    if scope is not None and scope not in api_keys.SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def dependency(request: Request) -> Operator:
        operator = _operator(request)
        request.state.operator = operator  # for the navigation of an error page
        if scope is not None and not operator.may(scope):
            raise MissingScopeError(operator, scope)
        return operator

    return dependency


def _csrf(request: Request, csrf_token: Annotated[str | None, Form()] = None) -> None:
    if not sessions.csrf_ok(request, csrf_token):
        raise CsrfRefusedError()


Csrf = Annotated[None, Depends(_csrf)]
AnyKey = Annotated[Operator, Depends(signed_in())]
DlqRead = Annotated[Operator, Depends(signed_in("dlq:read"))]
DlqWrite = Annotated[Operator, Depends(signed_in("dlq:write"))]
EventsRead = Annotated[Operator, Depends(signed_in("events:read"))]
EventsReplay = Annotated[Operator, Depends(signed_in("events:replay"))]
JobsRun = Annotated[Operator, Depends(signed_in("jobs:run"))]


def _render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    operator: Operator | None = None,
    status_code: int = status.HTTP_200_OK,
    headers: Mapping[str, str] | None = None,
) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(
        request,
        template,
        {
            "operator": operator,
            "csrf_token": sessions.csrf_token(request),
            "csrf_field": sessions.CSRF_FIELD,
            "flashes": sessions.take_flashes(request),
            **(context or {}),
        },
        status_code=status_code,
        headers=dict(headers or {}),
    )


def _redirect(
    request: Request, name: str, query: Mapping[str, str] | None = None, **path: Any
) -> Response:
    url = str(request.url_for(name, **path))
    if query:
        url = f"{url}?{urlencode(query)}"
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)


def _safe_next(request: Request, value: str | None) -> str | None:
    """Only a path of these pages, never another site (`//evil`, `https://...`)."""
    root = request.scope.get("root_path", "")
    if value and value.startswith(f"{root}/") and not value.startswith("//") and "\\" not in value:
        return value
    return None


# --- sign-in ------------------------------------------------------------------------------------

# Route names start with `page_`: url_for resolves names through the gateway's whole router, where
# the admin API's routes (replay_dead_letter, health, ...) would otherwise be found first.
routes = APIRouter()


@routes.get("/", name="page_home")
def home(request: Request, operator: AnyKey) -> Response:
    if operator.may("dlq:read"):
        return _redirect(request, "page_dead_letters")
    if operator.may("events:read"):
        return _redirect(request, "page_events")
    return _redirect(request, "page_health")


@routes.get("/sign-in", name="page_sign_in")
def sign_in_form(request: Request, next: str | None = None) -> Response:
    return _render(request, "sign_in.html", {"next": _safe_next(request, next) or ""})


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _sign_in_wait(request: Request) -> float:
    """Seconds until this address may try again (0: go ahead). Redis away: let it try (logged)."""
    per_minute: int = request.app.state.sign_in_per_minute
    try:
        return _deps(request).bucket.take(
            f"admin_sign_in:{_client(request)}",
            capacity=per_minute,
            refill_per_second=per_minute / 60,
        )
    except redis.RedisError as exc:
        log.warning("admin.sign_in_rate_limit_unavailable", error=str(exc)[:200])
        return 0.0


@routes.post("/sign-in", name="page_sign_in_submit")
def sign_in(
    request: Request,
    _: Csrf,
    api_key: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    wait = _sign_in_wait(request)
    if wait > 0:
        seconds = retry_after_seconds(wait)
        log.warning("admin.sign_in_rate_limited", client=_client(request))
        return _render(
            request,
            "sign_in.html",
            {"next": next, "error": f"Too many sign-in attempts; try again in {seconds}s."},
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(seconds)},
        )
    client = _client(request)
    with _deps(request).transaction() as session:
        row = api_keys.authenticate(session, api_key.strip())
        signed_in_as = (row.id, row.name) if row is not None else None
        if signed_in_as is None:
            # Who tried is unknown; where from is kept (attempts are few: the rate limit above).
            audit(
                session,
                actor="web:anonymous",
                action="admin.sign_in_refused",
                entity_type="client",
                entity_id=client[:64],
            )
        else:
            audit(
                session,
                actor=f"web:{signed_in_as[1]}",
                action="admin.signed_in",
                entity_type="api_key",
                entity_id=signed_in_as[0],
                client=client,
            )
    if signed_in_as is None:
        log.warning("admin.sign_in_refused", client=client)
        return _render(
            request,
            "sign_in.html",
            {"next": next, "error": "Unknown or revoked API key."},
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    key_id, name = signed_in_as
    sessions.start(request, key_id)
    log.info("admin.signed_in", api_key=name)
    target = _safe_next(request, next)
    if target:
        return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    return _redirect(request, "page_home")


@routes.post("/sign-out", name="page_sign_out")
def sign_out(request: Request, operator: AnyKey, _: Csrf) -> Response:
    with _deps(request).transaction() as session:
        audit(
            session,
            actor=operator.actor,
            action="admin.signed_out",
            entity_type="api_key",
            entity_id=operator.id,
        )
    sessions.end(request)
    sessions.flash(request, "ok", "Signed out.")
    return _redirect(request, "page_sign_in")


# --- dead letters -------------------------------------------------------------------------------


@routes.get("/dead-letters", name="page_dead_letters")
def dead_letter_list(request: Request, operator: DlqRead) -> Response:
    filters = listing.Filters.parse(request.query_params)
    now = _now()
    with _deps(request).transaction() as session:
        context = {
            "filters": filters,
            "groups": listing.groups(session, filters, now),
            "rows": listing.rows(session, filters, now),
            "total": listing.count(session, filters, now),
            "task_names": listing.task_names(session),
            "statuses": listing.STATUSES,
            "windows": list(listing.WINDOWS),
            "page_rows": listing.PAGE_ROWS,
        }
        return _render(request, "dead_letters.html", context, operator=operator)


@routes.get("/dead-letters/replay", name="page_confirm_group_replay")
def confirm_group_replay(request: Request, operator: DlqWrite) -> Response:
    """What a group replay would send, for the operator to confirm: the count and the ids."""
    filters = listing.Filters.parse(request.query_params).only_dead()
    now = _now()
    with _deps(request).transaction() as session:
        ids = listing.dead_ids(session, filters, now)
        total = listing.count(session, filters, now)
    context = {"filters": filters, "ids": ids, "total": total, "cap": listing.MAX_GROUP_REPLAY}
    return _render(request, "confirm_replay.html", context, operator=operator)


@routes.post("/dead-letters/replay", name="page_group_replay")
def group_replay(
    request: Request,
    operator: DlqWrite,
    _: Csrf,
    ids: Annotated[list[int], Form()],
    task: Annotated[str, Form()] = "",
    exc_type: Annotated[str, Form()] = "",
    within: Annotated[str, Form()] = "",
) -> Response:
    """Replay the ids the operator confirmed (those still dead); stop if the broker goes away."""
    filters = listing.Filters.parse({"task": task, "exc_type": exc_type, "within": within})
    confirmed = sorted(set(ids))
    deps = _deps(request)
    outcome = _replay_each(deps, confirmed, operator.actor)
    with deps.transaction() as session:
        audit(
            session,
            actor=operator.actor,
            action="dead_letter.group_replayed",
            entity_type="dead_letter_group",
            entity_id=filters.task or "*",
            filters=filters.params(),
            confirmed=len(confirmed),
            replayed=outcome.replayed,
            skipped=outcome.skipped,
            not_sent=outcome.not_sent,
        )
    if outcome.not_sent:
        sessions.flash(
            request,
            "error",
            f"The broker is unavailable: replayed {len(outcome.replayed)} of {len(confirmed)}, "
            f"{len(outcome.not_sent)} left dead. Try again later.",
        )
    else:
        skipped = f", {len(outcome.skipped)} already acted on" if outcome.skipped else ""
        sessions.flash(
            request,
            "ok",
            f"Replayed {len(outcome.replayed)} of {len(confirmed)} dead letters{skipped}.",
        )
    return _redirect(request, "page_dead_letters", filters.params(status="replayed"))


@dataclass
class _GroupOutcome:
    replayed: list[int]
    skipped: list[int]
    not_sent: list[int]


def _replay_each(deps: AdminDeps, ids: list[int], actor: str) -> _GroupOutcome:
    outcome = _GroupOutcome([], [], [])
    for position, dead_letter_id in enumerate(ids):
        try:
            dead_letters.replay(deps.sessions, dead_letter_id, send=deps.send, actor=actor)
        except (dead_letters.DeadLetterStateError, dead_letters.DeadLetterNotFoundError):
            outcome.skipped.append(dead_letter_id)
        except BrokerUnavailableError as exc:
            log.warning("admin.group_replay_interrupted", error=str(exc), replayed=outcome.replayed)
            outcome.not_sent = ids[position:]
            break
        else:
            outcome.replayed.append(dead_letter_id)
    return outcome


@routes.get("/dead-letters/{dead_letter_id}", name="page_dead_letter")
def dead_letter_detail(request: Request, operator: DlqRead, dead_letter_id: int) -> Response:
    with _deps(request).transaction() as session:
        row = dead_letters.get(session, dead_letter_id)
        context = {
            "row": row,
            "around": listing.surroundings(session, row),
            "max_reason": MAX_REASON_CHARS,
        }
        return _render(request, "dead_letter.html", context, operator=operator)


@routes.post("/dead-letters/{dead_letter_id}/replay", name="page_replay_dead_letter")
def replay_dead_letter(
    request: Request, operator: DlqWrite, _: Csrf, dead_letter_id: int
) -> Response:
    deps = _deps(request)
    new_task_id = dead_letters.replay(
        deps.sessions, dead_letter_id, send=deps.send, actor=operator.actor
    )
    sessions.flash(request, "ok", f"Replayed dead letter {dead_letter_id} as task {new_task_id}.")
    return _redirect(request, "page_dead_letter", dead_letter_id=dead_letter_id)


@routes.post("/dead-letters/{dead_letter_id}/discard", name="page_discard_dead_letter")
def discard_dead_letter(
    request: Request,
    operator: DlqWrite,
    _: Csrf,
    dead_letter_id: int,
    reason: Annotated[str, Form()] = "",
) -> Response:
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON_CHARS:
        sessions.flash(
            request,
            "error",
            f"A discard needs a reason of at most {MAX_REASON_CHARS} characters."
            if reason
            else "A discard needs a reason.",
        )
        return _redirect(request, "page_dead_letter", dead_letter_id=dead_letter_id)
    with _deps(request).transaction() as session:
        dead_letters.discard(session, dead_letter_id, reason=reason, actor=operator.actor)
    sessions.flash(request, "ok", f"Discarded dead letter {dead_letter_id}.")
    return _redirect(request, "page_dead_letter", dead_letter_id=dead_letter_id)


# --- stored webhooks ----------------------------------------------------------------------------


@routes.get("/events", name="page_events")
def event_list(
    request: Request,
    operator: EventsRead,
    provider: str = "",
    status_: Annotated[str, Query(alias="status")] = "",
    event_type: str = "",
) -> Response:
    provider, event_type = provider.strip(), event_type.strip()
    event_status = status_ if status_ in EVENT_STATUSES else ""
    with _deps(request).transaction() as session:
        rows = inbox_events.query(
            session,
            provider=provider or None,
            status=event_status or None,
            event_type=event_type or None,
            limit=EVENT_PAGE_ROWS,
        )
        context = {
            "rows": rows,
            "provider": provider,
            "status": event_status,
            "event_type": event_type,
            "providers": [name for name, _ in request.app.state.providers],
            "statuses": EVENT_STATUSES,
            "page_rows": EVENT_PAGE_ROWS,
        }
        return _render(request, "events.html", context, operator=operator)


@routes.get("/events/{inbox_id}", name="page_event")
def event_detail(request: Request, operator: EventsRead, inbox_id: int) -> Response:
    with _deps(request).transaction() as session:
        row = inbox_events.get(session, inbox_id)
        body = row.body.decode("utf-8", errors="replace")
        return _render(request, "event.html", {"row": row, "body": body}, operator=operator)


@routes.post("/events/{inbox_id}/replay", name="page_replay_event")
def replay_event(request: Request, operator: EventsReplay, _: Csrf, inbox_id: int) -> Response:
    task_id = inbox_events.replay(
        _deps(request).sessions,
        inbox_id,
        publish=_deps(request).publish_event,
        actor=operator.actor,
    )
    sessions.flash(request, "ok", f"Webhook {inbox_id} is processed again (task {task_id}).")
    return _redirect(request, "page_event", inbox_id=inbox_id)


# --- health -------------------------------------------------------------------------------------


@routes.get("/health", name="page_health")
def health_page(request: Request, operator: AnyKey) -> Response:
    deps = _deps(request)
    with deps.transaction() as session:
        health = integration_health(
            session, deps.bucket.redis, request.app.state.providers, now=_now()
        )
    context = {"health": health, "job_names": sorted(jobs.JOBS)}
    return _render(request, "health.html", context, operator=operator)


@routes.post("/jobs/{name}/run", name="page_run_job")
def run_job(request: Request, operator: JobsRun, _: Csrf, name: str) -> Response:
    """No dry run here: it writes no job_runs row, so this page could not show what it found."""
    deps = _deps(request)
    task_id = jobs.request_run(
        deps.sessions, name, dry_run=False, actor=operator.actor, send=deps.start_job
    )
    sessions.flash(request, "ok", f"A run of {name} is queued (task {task_id}).")
    return _redirect(request, "page_health")


# --- the app ------------------------------------------------------------------------------------


def _error(request: Request, status_code: int, title: str, detail: str) -> Response:
    return _render(
        request,
        "error.html",
        {"title": title, "detail": detail, "status_code": status_code},
        operator=getattr(request.state, "operator", None),
        status_code=status_code,
    )


async def _not_signed_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotSignedInError)
    if exc.message:
        sessions.flash(request, "error", exc.message)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = {"next": target} if request.method == "GET" else None
    return _redirect(request, "page_sign_in", query)


async def _missing_scope(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MissingScopeError)
    return _error(
        request,
        status.HTTP_403_FORBIDDEN,
        "Not allowed",
        f"The API key {exc.operator.name!r} lacks the scope {exc.scope!r} this needs.",
    )


async def _csrf_refused(request: Request, _: Exception) -> Response:
    log.warning("admin.csrf_refused", path=request.url.path, client=_client(request))
    return _error(
        request,
        status.HTTP_403_FORBIDDEN,
        "Form expired",
        "The form's security token is missing or does not match this session. "
        "Go back, reload the page and submit it again.",
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(request, status.HTTP_404_NOT_FOUND, "Not found", str(exc))


async def _conflict(request: Request, exc: Exception) -> Response:
    return _error(request, status.HTTP_409_CONFLICT, "Already acted on", str(exc))


async def _broker_down(request: Request, exc: Exception) -> Response:
    log.warning("admin.broker_unavailable", error=str(exc))
    return _error(
        request,
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "Broker unavailable",
        "The task could not be handed to the broker; nothing was changed. Try again shortly.",
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    title = "Not found" if exc.status_code == status.HTTP_404_NOT_FOUND else "Error"
    return _error(request, exc.status_code, title, str(exc.detail))


async def _bad_form(request: Request, exc: Exception) -> Response:
    return _error(
        request,
        status.HTTP_400_BAD_REQUEST,
        "Bad request",
        "The address or the form was not valid.",
    )


def create_admin_pages(deps: AdminDeps, settings: Settings) -> FastAPI:
    """The pages, relative to wherever the app is mounted (/admin in the gateway)."""
    app = FastAPI(
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        middleware=[
            Middleware(_SecurityHeaders),
            Middleware(
                sessions.AdminSessionMiddleware,
                secret=sessions.session_secret(settings),
                max_age=settings.admin_session_max_age_seconds,
            ),
        ],
        exception_handlers={
            NotSignedInError: _not_signed_in,
            MissingScopeError: _missing_scope,
            CsrfRefusedError: _csrf_refused,
            dead_letters.DeadLetterNotFoundError: _not_found,
            inbox_events.InboxEventNotFoundError: _not_found,
            jobs.UnknownJobError: _not_found,
            dead_letters.DeadLetterStateError: _conflict,
            BrokerUnavailableError: _broker_down,
            RequestValidationError: _bad_form,
            StarletteHTTPException: _http_error,
        },
    )
    app.state.deps = deps
    app.state.templates = Jinja2Templates(directory=TEMPLATES)
    app.state.providers = enabled_providers(settings)
    app.state.sign_in_per_minute = settings.admin_sign_in_per_minute
    app.include_router(routes)
    return app
