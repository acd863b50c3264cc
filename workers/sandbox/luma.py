"""Luma's calendar events and event guests, played by the sandbox (LUMA_API_BASE = <sandbox>/luma).

See reference/providers.md section 4.5. The luma-approval job lists the calendar's upcoming events,
pages through each event's guests pending approval and approves or declines them one at a time; the
sandbox plays those three calls with Luma's shapes and its limit.

- Auth: `x-luma-api-key` with a key of Luma's form `secret-...`; missing or any other -> 401
  `{"message": ...}` (`make run` and the tests configure `LUMA_API_KEY=secret-sandbox`).
- `GET /v1/calendars/events/list` (`list-events`): `after` / `before` (ISO 8601, on `start_at`),
  `sort_direction` (`asc` by default, or `desc`), `pagination_cursor`, `pagination_limit` (at most 100,
  50 by default).
- `GET /v1/events/guests/list` (`list-guests`): `event_id` (required; unknown -> 404),
  `approval_status`, `pagination_cursor`, `pagination_limit` (at most 100, 50 by default). Guests are
  kept in a stable order by guest id and the cursor is the last id a page held, filtered at read time:
  a guest approved after page 1 does not shift page 2, so nobody is skipped while the job changes them.
- `POST /v1/events/guests/update-status` (`update-status`): `{"event_id", "guest_id" (id or email),
  "status", "send_email"?, "message"?}` -> `{}`; unknown event or guest -> 404, a status Luma does not
  take -> 400. Setting the status a guest already has answers `{}` but is recorded without effect.
- Limit: 200 requests a minute per API key, GET and POST together (`POST /_sandbox/rate-limits`
  `{"provider": "luma", "endpoint": "*", "per_minute": ...}` changes it). The call over it gets 429
  with `Retry-After`, and the key stays blocked until its bucket is full again (a minute at the real
  limit). Every answer carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`
  (Unix seconds when the window resets, or when the block ends).
- Control: `POST /_sandbox/luma/events` seeds events and their guests, `GET /_sandbox/luma/guests`
  reads guests with their current status.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from workers.sandbox.server import (
    Incoming,
    ProviderSpec,
    Reply,
    SandboxState,
    declare_rate_limit,
    endpoint,
    register_provider,
    serve,
)

PROVIDER = "luma"
SHARED = "*"  # Luma's limit is per key, shared by every endpoint
REQUESTS_PER_MINUTE = 200.0
MAX_PAGE = 100
DEFAULT_PAGE = 50
API_KEY_PREFIX = "secret-"
SANDBOX_API_KEY = "secret-sandbox"  # what `make run` and the tests configure as LUMA_API_KEY
APPROVAL_STATUSES = ("approved", "session", "pending_approval", "invited", "declined", "waitlist")
# What update-status accepts (reference/providers.md 4.5).
SETTABLE_STATUSES = ("approved", "declined", "pending_approval", "waitlist")
_EVENTS = ("luma", "events")

declare_rate_limit(PROVIDER, SHARED, REQUESTS_PER_MINUTE)

Handler = Callable[[SandboxState, Incoming], Reply]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass
class GuestBook:
    """One event's guests: by id, in id order (what cursors point into), and by lower-cased email."""

    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    by_email: dict[str, str] = field(default_factory=dict)

    def put(self, guest: dict[str, Any]) -> None:
        if guest["id"] not in self.by_id:
            bisect.insort(self.order, guest["id"])
        self.by_id[guest["id"]] = guest
        self.by_email[guest["user_email"].lower()] = guest["id"]

    def find(self, id_or_email: str) -> dict[str, Any] | None:
        guest_id = self.by_email.get(id_or_email.strip().lower(), id_or_email)
        return self.by_id.get(guest_id)


@dataclass
class Calendar:
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    guests: dict[str, GuestBook] = field(default_factory=dict)


def _calendar(held: dict[Any, Any]) -> Calendar:
    calendar = held.get(_EVENTS)
    if not isinstance(calendar, Calendar):
        calendar = held[_EVENTS] = Calendar()
    return calendar


# seeding --------------------------------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_urlsafe(12).replace('-', 'x').replace('_', 'y')}"


def _event_from_seed(
    seed: dict[str, Any], index: int, old: dict[str, Any] | None
) -> dict[str, Any] | str:
    event_id = seed.get("id") or (old or {}).get("id") or _new_id("evt")
    if not isinstance(event_id, str) or not event_id.startswith("evt-"):
        return f"an event id starts with evt-, not {event_id!r}"
    start_text = seed.get("start_at")
    if start_text is None:
        start = (old and _parse_iso(old["start_at"])) or (
            datetime.now(UTC).replace(hour=18, minute=0, second=0, microsecond=0)
            + timedelta(days=index + 1)
        )
    else:
        parsed = _parse_iso(start_text) if isinstance(start_text, str) else None
        if parsed is None:
            return f"start_at must be an ISO 8601 time, not {start_text!r}"
        start = parsed
    name = seed.get("name") or (old or {}).get("name") or f"Community meetup {index + 1}"
    if not isinstance(name, str):
        return "name must be a string"
    slug = event_id.removeprefix("evt-").lower()[:10]
    return {
        "id": event_id,
        "name": name,
        "start_at": _iso(start),
        "end_at": _iso(start + timedelta(hours=2)),
        "timezone": "UTC",
        "url": f"https://luma.com/{slug}",
    }


def _guest_from_seed(seed: Any, event_id: str, old: dict[str, Any] | None) -> dict[str, Any] | str:
    if not isinstance(seed, dict):
        return "each guest must be an object"
    email = seed.get("email")
    if not isinstance(email, str) or "@" not in email:
        return f"a guest needs an email address, not {email!r}"
    status = seed.get("approval_status", "pending_approval")
    if status not in APPROVAL_STATUSES:
        return f"approval_status must be one of {', '.join(APPROVAL_STATUSES)}"
    name = seed.get("name", email.split("@")[0].replace(".", " ").title())
    return {
        "id": old["id"] if old else _new_id("gst"),
        "event_id": event_id,
        "user_email": email,
        "user_name": str(name),
        "approval_status": status,
        "registered_at": old["registered_at"] if old else _iso(datetime.now(UTC)),
    }


def seed_events(
    state: SandboxState, seeds: list[Any], *, replace: bool = False
) -> list[dict[str, Any]] | str:
    """Add events (or guests to events already held, by id); `[{"id", "guests": [ids]}]` in the order
    given, or what is wrong (nothing is added). A guest whose email the event has is updated."""
    with state.holding() as held:
        calendar = Calendar() if replace else _calendar(held)
        planned: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        batch: dict[tuple[str, str], dict[str, Any]] = {}
        for index, seed in enumerate(seeds):
            if not isinstance(seed, dict):
                return "each event must be an object"
            old = calendar.events.get(seed["id"]) if isinstance(seed.get("id"), str) else None
            event = _event_from_seed(seed, len(calendar.events) + index, old)
            if isinstance(event, str):
                return event
            book = calendar.guests.get(event["id"], GuestBook())
            guest_seeds = seed.get("guests", [])
            if not isinstance(guest_seeds, list):
                return "guests must be a list"
            guests = []
            for guest_seed in guest_seeds:
                email = guest_seed.get("email") if isinstance(guest_seed, dict) else None
                key = (event["id"], email.strip().lower() if isinstance(email, str) else "")
                known = batch.get(key) or (book.find(email) if isinstance(email, str) else None)
                guest = _guest_from_seed(guest_seed, event["id"], known)
                if isinstance(guest, str):
                    return guest
                batch[key] = guest  # the same email again in this request: the same guest
                guests.append(guest)
            planned.append((event, guests))
        created = []
        for event, guests in planned:
            calendar.events[event["id"]] = event
            book = calendar.guests.setdefault(event["id"], GuestBook())
            for guest in guests:
                book.put(guest)
            created.append({"id": event["id"], "guests": [guest["id"] for guest in guests]})
        held[_EVENTS] = calendar
        return created


def guests(state: SandboxState, event_id: str | None = None) -> list[dict[str, Any]] | None:
    """Guests of one event (or of all) in id order with their current status; None: no such event."""
    with state.holding() as held:
        calendar = _calendar(held)
        if event_id is not None and event_id not in calendar.events:
            return None
        event_ids = [event_id] if event_id is not None else list(calendar.events)
        return [
            dict(calendar.guests[eid].by_id[guest_id])
            for eid in event_ids
            for guest_id in calendar.guests[eid].order
        ]


# endpoints ------------------------------------------------------------------------------------------


def _message(status: int, message: str, **headers: str) -> Reply:
    return Reply(status, {"message": message}, dict(headers))


def _auth(call: Incoming) -> Reply | None:
    key = call.headers.get("x-luma-api-key", "").strip()
    if not key:
        return _message(401, "Missing API key: pass it in the x-luma-api-key header.")
    if not key.startswith(API_KEY_PREFIX) or len(key) == len(API_KEY_PREFIX):
        return _message(401, "Invalid API key.")
    return None


def _limit_headers(state: SandboxState, key: tuple[str, str, str]) -> dict[str, str]:
    quota = state.quota(PROVIDER, SHARED)
    left = state.tokens_left(key, burst=quota.burst, per_second=quota.per_second)
    until_full = (quota.burst - left) / quota.per_second
    return {
        "X-RateLimit-Limit": f"{quota.per_minute:g}",
        "X-RateLimit-Remaining": str(max(0, math.floor(left))),
        "X-RateLimit-Reset": str(math.ceil(time.time() + until_full)),
    }


def _with_limits(state: SandboxState, call: Incoming, handler: Handler) -> Reply:
    """Auth, then one request from the key's shared bucket, then the handler; limit headers on all."""
    if (denied := _auth(call)) is not None:
        return denied
    key = (PROVIDER, SHARED, call.headers["x-luma-api-key"].strip())
    quota = state.quota(PROVIDER, SHARED)
    wait = state.take_token(key, burst=quota.burst, per_second=quota.per_second)
    if wait > 0:
        if wait <= 1 / quota.per_second:  # just ran dry: blocked until the bucket is full again
            wait = state.penalize(key, seconds=quota.refill_seconds, per_second=quota.per_second)
        headers = _limit_headers(state, key)
        headers["X-RateLimit-Reset"] = str(math.ceil(time.time() + wait))
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return _message(
            429, "Rate limit exceeded. Please retry after the time in Retry-After.", **headers
        )
    reply = handler(state, call)
    return Reply(
        reply.status,
        reply.body,
        {**_limit_headers(state, key), **reply.headers},
        effect=reply.effect,
    )


def _page_size(value: str | None) -> int | None:
    if value is None or value == "":
        return DEFAULT_PAGE
    return min(int(value), MAX_PAGE) if value.isdigit() and int(value) >= 1 else None


def _encode(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def _decode(cursor: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _starts(event: dict[str, Any]) -> datetime:
    start = _parse_iso(event["start_at"])
    assert start is not None  # written by _event_from_seed
    return start


def _list_events(state: SandboxState, call: Incoming) -> Reply:
    query = call.query
    size = _page_size(query.get("pagination_limit"))
    if size is None:
        return _message(400, "pagination_limit must be a positive integer.")
    bounds: dict[str, datetime] = {}
    for name in ("after", "before"):
        if query.get(name):
            moment = _parse_iso(query[name])
            if moment is None:
                return _message(400, f"{name} must be an ISO 8601 date-time.")
            bounds[name] = moment
    direction = query.get("sort_direction", "asc").split()[0]
    if direction not in ("asc", "desc") or query.get("sort_column", "start_at") != "start_at":
        return _message(400, "Events sort by start_at, asc or desc.")
    with state.holding() as held:
        events = [dict(event) for event in _calendar(held).events.values()]
    chosen = sorted(
        (
            event
            for event in events
            if ("after" not in bounds or _starts(event) > bounds["after"])
            and ("before" not in bounds or _starts(event) < bounds["before"])
        ),
        key=lambda event: (event["start_at"], event["id"]),
        reverse=direction == "desc",
    )
    start = 0
    if query.get("pagination_cursor"):
        last_id = _decode(query["pagination_cursor"])
        ids = [event["id"] for event in chosen]
        if last_id is None or not last_id.startswith("evt-"):
            return _message(400, "Invalid pagination_cursor.")
        # A cursor names the last event of its page; an event deleted since restarts after nothing.
        start = ids.index(last_id) + 1 if last_id in ids else 0
    page = chosen[start : start + size]
    more = start + size < len(chosen)
    return Reply(
        200,
        {
            "entries": page,
            "has_more": more,
            "next_cursor": _encode(page[-1]["id"]) if more else None,
        },
    )


def _list_guests(state: SandboxState, call: Incoming) -> Reply:
    query = call.query
    event_id = query.get("event_id", "")
    if not event_id:
        return _message(400, "event_id is required.")
    size = _page_size(query.get("pagination_limit"))
    if size is None:
        return _message(400, "pagination_limit must be a positive integer.")
    wanted = query.get("approval_status") or None
    if wanted is not None and wanted not in APPROVAL_STATUSES:
        return _message(400, f"approval_status must be one of {', '.join(APPROVAL_STATUSES)}.")
    after = ""
    if query.get("pagination_cursor"):
        decoded = _decode(query["pagination_cursor"])
        if decoded is None or not decoded.startswith("gst-"):
            return _message(400, "Invalid pagination_cursor.")
        after = decoded
    with state.holding() as held:
        calendar = _calendar(held)
        if event_id not in calendar.events:
            return _message(404, f"Event {event_id} not found.")
        book = calendar.guests[event_id]
        position = bisect.bisect_right(book.order, after) if after else 0
        page: list[dict[str, Any]] = []
        while position < len(book.order) and len(page) < size:
            guest = book.by_id[book.order[position]]
            position += 1
            if wanted is None or guest["approval_status"] == wanted:
                page.append(dict(guest))
        more = any(
            wanted is None or book.by_id[guest_id]["approval_status"] == wanted
            for guest_id in book.order[position:]
        )
    next_cursor = _encode(page[-1]["id"]) if more and page else None
    return Reply(200, {"entries": page, "has_more": more, "next_cursor": next_cursor})


def _update_status(state: SandboxState, call: Incoming) -> Reply:
    if call.body_error:
        return _message(400, "The body must be a JSON object.")
    body = call.body
    event_id, guest_id, status = body.get("event_id"), body.get("guest_id"), body.get("status")
    if (
        not isinstance(event_id, str)
        or not isinstance(guest_id, str)
        or not event_id
        or not guest_id
    ):
        return _message(400, "event_id and guest_id are required.")
    if status not in SETTABLE_STATUSES:
        return _message(400, f"status must be one of {', '.join(SETTABLE_STATUSES)}.")
    send_email = body.get("send_email", True)
    if not isinstance(send_email, bool):
        return _message(400, "send_email must be a boolean.")
    with state.holding() as held:
        calendar = _calendar(held)
        if event_id not in calendar.events:
            return _message(404, f"Event {event_id} not found.")
        guest = calendar.guests[event_id].find(guest_id)
        if guest is None:
            return _message(404, f"Guest {guest_id} not found for event {event_id}.")
        changed = guest["approval_status"] != status
        guest["approval_status"] = status
    return Reply(200, {}, effect=changed)


@endpoint(PROVIDER, "list-events")
def list_events(state: SandboxState, call: Incoming) -> Reply:
    return _with_limits(state, call, _list_events)


@endpoint(PROVIDER, "list-guests")
def list_guests(state: SandboxState, call: Incoming) -> Reply:
    return _with_limits(state, call, _list_guests)


@endpoint(PROVIDER, "update-status")
def update_status(state: SandboxState, call: Incoming) -> Reply:
    return _with_limits(state, call, _update_status)


def _unknown_endpoint(_state: SandboxState, _call: Incoming) -> Reply:
    return _message(404, "Not found.")


def _fault_body(status: int) -> dict[str, Any]:
    if status == 429:
        return {"message": "Rate limit exceeded. Please retry after the time in Retry-After."}
    if status >= 500:
        return {"message": "Something went wrong on our end. Please try again."}
    return {"message": f"Request failed ({status})."}


register_provider(ProviderSpec(PROVIDER, _unknown_endpoint, _fault_body))


# routes ---------------------------------------------------------------------------------------------


async def _events_route(request: Request) -> Response:
    return await serve(request, PROVIDER, "list-events")


async def _guests_route(request: Request) -> Response:
    return await serve(request, PROVIDER, "list-guests")


async def _update_status_route(request: Request) -> Response:
    return await serve(request, PROVIDER, "update-status")


async def _unknown_route(request: Request) -> Response:
    return await serve(request, PROVIDER, str(request.path_params["rest"]))


async def _seed_route(request: Request) -> JSONResponse:
    """`{"events": [{"id"?, "name"?, "start_at"?, "guests": [{"email", "approval_status"?, "name"?}]}],
    "replace"?: bool}` -> `{"events": [{"id", "guests": [guest ids in the order given]}]}`."""
    try:
        data = await request.json()
    except ValueError:
        return JSONResponse({"error": "body must be JSON"}, status_code=400)
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        return JSONResponse({"error": 'expected {"events": [...]}'}, status_code=400)
    replace = data.get("replace", False)
    if not isinstance(replace, bool):
        return JSONResponse({"error": "replace must be true or false"}, status_code=400)
    created = seed_events(request.app.state.sandbox, data["events"], replace=replace)
    if isinstance(created, str):
        return JSONResponse({"error": created}, status_code=400)
    return JSONResponse({"events": created}, status_code=201)


async def _read_guests_route(request: Request) -> JSONResponse:
    """`?event_id=` (or every event) -> `{"guests": [guest, ...]}`; 404 for an unknown event."""
    event_id = request.query_params.get("event_id") or None
    found = guests(request.app.state.sandbox, event_id)
    if found is None:
        return JSONResponse({"error": f"no event {event_id}"}, status_code=404)
    return JSONResponse({"guests": found})


ROUTES: list[BaseRoute] = [
    Route("/_sandbox/luma/events", _seed_route, methods=["POST"]),
    Route("/_sandbox/luma/guests", _read_guests_route, methods=["GET"]),
    Route("/luma/v1/calendars/events/list", _events_route, methods=["GET"]),
    Route("/luma/v1/events/guests/list", _guests_route, methods=["GET"]),
    Route("/luma/v1/events/guests/update-status", _update_status_route, methods=["POST"]),
    Route("/luma/{rest:path}", _unknown_route, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
]
