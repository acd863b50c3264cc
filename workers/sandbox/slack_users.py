"""Slack's users.list and users.lookupByEmail, played by the sandbox (SLACK_API_BASE = <sandbox>/slack/api/).

See reference/providers.md section 3.5. The slack-sync job matches members to Slack users in bulk with
the paginated `users.list` (Tier 2, 20 calls a minute) and, for members it did not find, one
`users.lookupByEmail` each (Tier 3, 50 a minute); the sandbox plays both with Slack's shapes so the job
and its benchmark see what the real workspace would answer.

- Auth: `Authorization: Bearer xoxb-...`, as chat.postMessage (`not_authed` / `invalid_auth`, HTTP 200).
- users.list: `cursor` and `limit` (clamped to 1000, as Slack does; absent means 1000) in the query or
  the body; users in a stable order by id, so a cursor ("user:<last id>", base64, like Slack's) stays
  right while users are added. Deleted users and bots are listed, as Slack lists them. The last page
  has `response_metadata.next_cursor == ""`.
- users.lookupByEmail: `email`, matched case-insensitively; a deactivated user is found (with
  `deleted: true`), a bot has no email and is never found; else HTTP 200 `users_not_found`.
- Limits: per method and token, a bucket of the tier's calls a minute (`POST /_sandbox/rate-limits`
  changes them); over it HTTP 429 `ratelimited` with `Retry-After` in whole seconds.
- Control: `POST /_sandbox/slack/users` seeds users (full Slack user objects or the minimal
  `{"email", "deleted"?, "is_restricted"?, "is_ultra_restricted"?, "is_bot"?, "real_name"?}`),
  `GET /_sandbox/slack/users` reads them back.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import math
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from workers.sandbox.server import (
    SLACK_TEAM,
    Incoming,
    Reply,
    SandboxState,
    declare_rate_limit,
    endpoint,
)

PROVIDER = "slack"
USERS_LIST = "users.list"
LOOKUP_BY_EMAIL = "users.lookupByEmail"
TIER2_PER_MINUTE = 20.0
TIER3_PER_MINUTE = 50.0
MAX_PAGE = 1000
_DIRECTORY = ("slack", "users")
_FIRST_USER_NUMBER = (
    0x10000000  # ids "U10000000", "U10000001", ...: fixed width, so sorted = created
)

declare_rate_limit(PROVIDER, USERS_LIST, TIER2_PER_MINUTE)
declare_rate_limit(PROVIDER, LOOKUP_BY_EMAIL, TIER3_PER_MINUTE)


@dataclass
class Directory:
    """The workspace's users: by id, in id order (for cursors), and by lower-cased email."""

    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    by_email: dict[str, str] = field(default_factory=dict)
    next_number: int = _FIRST_USER_NUMBER

    def new_id(self) -> str:
        while (user_id := f"U{self.next_number:X}") in self.by_id:
            self.next_number += 1
        self.next_number += 1
        return user_id

    def put(self, user: dict[str, Any]) -> None:
        """Add or replace the user; a user with an email already held replaces that user."""
        email = _email_of(user)
        if email is not None and (holder := self.by_email.get(email)) not in (None, user["id"]):
            self.remove(str(holder))
        old = self.by_id.get(user["id"])
        if old is None:
            bisect.insort(self.order, user["id"])
        elif (old_email := _email_of(old)) is not None:
            self.by_email.pop(old_email, None)
        self.by_id[user["id"]] = user
        if email is not None:
            self.by_email[email] = user["id"]

    def remove(self, user_id: str) -> None:
        user = self.by_id.pop(user_id)
        self.order.remove(user_id)
        if (email := _email_of(user)) is not None:
            self.by_email.pop(email, None)


def _email_of(user: dict[str, Any]) -> str | None:
    profile = user.get("profile")
    email = profile.get("email") if isinstance(profile, dict) else None
    return email.strip().lower() if isinstance(email, str) and email.strip() else None


def _directory(held: dict[Any, Any]) -> Directory:
    directory = held.get(_DIRECTORY)
    if not isinstance(directory, Directory):
        directory = held[_DIRECTORY] = Directory()
    return directory


# users ----------------------------------------------------------------------------------------------


def _flag(seed: dict[str, Any], name: str) -> bool | str:
    value = seed.get(name, False)
    return value if isinstance(value, bool) else f"{name} must be true or false"


def user_from_seed(seed: Any, user_id: str) -> dict[str, Any] | str:
    """A Slack user object from a full or minimal seed, or what is wrong with the seed."""
    if not isinstance(seed, dict):
        return "each user must be an object"
    given_profile = seed.get("profile")
    profile: dict[str, Any] = given_profile if isinstance(given_profile, dict) else {}
    email = seed.get("email", profile.get("email"))
    flags: dict[str, bool] = {}
    for flag_name in ("deleted", "is_bot", "is_restricted", "is_ultra_restricted"):
        flag = _flag(seed, flag_name)
        if isinstance(flag, str):
            return flag
        flags[flag_name] = flag
    if email is not None and (not isinstance(email, str) or "@" not in email):
        return f"email must be an address, not {email!r}"
    if email is None and not flags["is_bot"]:
        return "a user other than a bot needs an email"
    local = email.split("@")[0] if email else f"bot{user_id[-4:].lower()}"
    real_name: Any = seed.get("real_name", profile.get("real_name"))
    if not isinstance(real_name, str):
        real_name = local.replace(".", " ").replace("_", " ").title()
    name: Any = seed.get("name")
    user_profile: dict[str, Any] = {
        "real_name": real_name,
        "display_name": str(profile.get("display_name", local)),
    }
    if email is not None and not flags["is_bot"]:
        user_profile["email"] = email
    return {
        "id": user_id,
        "team_id": SLACK_TEAM,
        "name": name if isinstance(name, str) and name else local.lower(),
        "real_name": real_name,
        **flags,
        "is_app_user": False,
        "updated": int(seed["updated"])
        if isinstance(seed.get("updated"), int)
        else int(time.time()),
        "profile": user_profile,
    }


def _seed_email(seed: Any) -> str | None:
    """The lower-cased email a seed gives (at the top, or in a full user's profile)."""
    if not isinstance(seed, dict):
        return None
    given_profile = seed.get("profile")
    profile: dict[str, Any] = given_profile if isinstance(given_profile, dict) else {}
    return _email_of({"profile": {"email": seed.get("email", profile.get("email"))}})


def seed_users(state: SandboxState, seeds: list[Any], *, replace: bool = False) -> list[str] | str:
    """Add (or replace) users; their ids in the order given, or what is wrong (nothing is added)."""
    with state.holding() as held:
        directory = Directory() if replace else _directory(held)
        users: list[dict[str, Any]] = []
        batch: dict[str, str] = {}  # email -> id given earlier in this batch
        for seed in seeds:
            given = seed.get("id") if isinstance(seed, dict) else None
            if given is not None and (
                not isinstance(given, str) or not given.startswith(("U", "W"))
            ):
                return f"a user id starts with U or W, not {given!r}"
            email = _seed_email(seed)
            user_id = (
                given
                or batch.get(email or "")
                or directory.by_email.get(email or "")
                or directory.new_id()
            )
            user = user_from_seed(seed, user_id)
            if isinstance(user, str):
                return user
            if email is not None:
                batch[email] = user_id
            users.append(user)
        for user in users:
            directory.put(user)
        held[_DIRECTORY] = directory
        return [user["id"] for user in users]


def users(state: SandboxState) -> list[dict[str, Any]]:
    """Every user the workspace holds, in id order (copies)."""
    with state.holding() as held:
        directory = _directory(held)
        return [dict(directory.by_id[user_id]) for user_id in directory.order]


# endpoints ------------------------------------------------------------------------------------------


def _error(error: str, status: int = 200, **headers: str) -> Reply:
    return Reply(status, {"ok": False, "error": error}, dict(headers))


def _auth(call: Incoming) -> Reply | None:
    scheme, _, token = call.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _error("not_authed")
    if not token.strip().startswith("xoxb-"):
        return _error("invalid_auth")
    return None


def _rate_limit(state: SandboxState, call: Incoming) -> Reply | None:
    """One call from the method's per-minute bucket for this token, else 429 until the next token."""
    quota = state.quota(PROVIDER, call.endpoint)
    token = call.headers.get("authorization", "").partition(" ")[2].strip()
    wait = state.take_token(
        (PROVIDER, call.endpoint, token), burst=quota.burst, per_second=quota.per_second
    )
    if wait == 0:
        return None
    return _error("ratelimited", 429, **{"Retry-After": str(max(1, math.ceil(wait)))})


def _cursor(user_id: str) -> str:
    return base64.b64encode(f"user:{user_id}".encode()).decode()


def _after(cursor: str) -> str | None:
    """The last user id the cursor's page held, or None for a cursor Slack would not have given."""
    try:
        kind, _, user_id = base64.b64decode(cursor, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user_id if kind == "user" and user_id else None


@endpoint(PROVIDER, USERS_LIST)
def users_list(state: SandboxState, call: Incoming) -> Reply:
    if call.body_error:
        return _error(call.body_error)
    if (denied := _auth(call)) is not None:
        return denied
    params = call.params
    raw_limit = str(params.get("limit") or "0").strip()
    if not raw_limit.isdigit():
        return _error("invalid_limit")
    limit = min(int(raw_limit), MAX_PAGE) or MAX_PAGE
    cursor = str(params.get("cursor") or "")
    after = _after(cursor) if cursor else ""
    if after is None:
        return _error("invalid_cursor")
    if (limited := _rate_limit(state, call)) is not None:
        return limited
    with state.holding() as held:
        directory = _directory(held)
        start = bisect.bisect_right(directory.order, after) if after else 0
        page_ids = directory.order[start : start + limit]
        members = [dict(directory.by_id[user_id]) for user_id in page_ids]
        more = start + limit < len(directory.order)
    next_cursor = _cursor(page_ids[-1]) if more and page_ids else ""
    return Reply(
        200,
        {
            "ok": True,
            "members": members,
            "cache_ts": int(time.time()),
            "response_metadata": {"next_cursor": next_cursor},
        },
    )


@endpoint(PROVIDER, LOOKUP_BY_EMAIL)
def users_lookup_by_email(state: SandboxState, call: Incoming) -> Reply:
    if call.body_error:
        return _error(call.body_error)
    if (denied := _auth(call)) is not None:
        return denied
    email = str(call.params.get("email") or "").strip().lower()
    if not email:
        return _error("invalid_arguments")
    if (limited := _rate_limit(state, call)) is not None:
        return limited
    with state.holding() as held:
        directory = _directory(held)
        user_id = directory.by_email.get(email)
        user = dict(directory.by_id[user_id]) if user_id is not None else None
    if user is None:
        return _error("users_not_found")
    return Reply(200, {"ok": True, "user": user})


# control --------------------------------------------------------------------------------------------


async def _seed_route(request: Request) -> JSONResponse:
    """`{"users": [...], "replace"?: bool}` -> `{"ids": [...], "users": <how many the workspace holds>}`."""
    try:
        data = await request.json()
    except ValueError:
        return JSONResponse({"error": "body must be JSON"}, status_code=400)
    if not isinstance(data, dict) or not isinstance(data.get("users"), list):
        return JSONResponse({"error": 'expected {"users": [...]}'}, status_code=400)
    replace = data.get("replace", False)
    if not isinstance(replace, bool):
        return JSONResponse({"error": "replace must be true or false"}, status_code=400)
    state: SandboxState = request.app.state.sandbox
    ids = seed_users(state, data["users"], replace=replace)
    if isinstance(ids, str):
        return JSONResponse({"error": ids}, status_code=400)
    with state.holding() as held:
        total = len(_directory(held).order)
    return JSONResponse({"ids": ids, "users": total}, status_code=201)


async def _users_route(request: Request) -> JSONResponse:
    return JSONResponse({"users": users(request.app.state.sandbox)})


ROUTES: list[BaseRoute] = [
    Route("/_sandbox/slack/users", _seed_route, methods=["POST"]),
    Route("/_sandbox/slack/users", _users_route, methods=["GET"]),
]
