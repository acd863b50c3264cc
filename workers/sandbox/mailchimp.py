"""Mailchimp's Marketing API v3 list members, played by the sandbox (MAILCHIMP_API_BASE =
<sandbox>/mailchimp/3.0).

See reference/providers.md section 5.5. Members live under `/lists/{list_id}/members/{subscriber_hash}`
where the hash is the MD5 hex of the lower-cased email. Errors are problem documents
(`application/problem+json`: `type`, `title`, `status`, `detail`, `instance`, and `errors` for 400s).

- Auth: HTTP Basic with any user name and the API key as password, else 401. Real keys are 32 hex
  digits and a data center (`...-us21`); the sandbox takes any key with a data-center suffix
  (`sandbox-us1`, as `make run` configures it).
- Limit: 10 simultaneous connections per API key (a concurrency limit, not a rate): the 11th call in
  flight gets 429 "Too Many Requests" with `Retry-After: 1`. `GET /_sandbox/concurrency?provider=mailchimp`
  tells the most calls it saw in flight at once.
- Lists exist as soon as they are used. A permanently deleted member cannot be re-added through the API
  except as `pending` (Mailchimp's "Forgotten Email Not Subscribed").
- Control: `GET /_sandbox/mailchimp/lists/{list_id}/members` reads a list as Mailchimp holds it.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import itertools
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from workers.sandbox.server import (
    ConcurrencyLimit,
    Incoming,
    ProviderSpec,
    Reply,
    SandboxState,
    endpoint,
    register_provider,
    serve,
)

PROVIDER = "mailchimp"
MAX_CONNECTIONS = 10
CONCURRENCY_RETRY_AFTER = "1"
STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
TAG_STATUSES = ("active", "inactive")
MAX_TAG_LENGTH = 100
PROBLEM_TYPE = "https://mailchimp.com/developer/marketing/docs/errors/"
PROBLEM_MEDIA_TYPE = "application/problem+json; charset=utf-8"
_API_KEY = re.compile(r"\S+-[a-z]+[0-9]+")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_web_ids = itertools.count(100_000_001)
_tag_ids = itertools.count(1001)


def subscriber_hash(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()


def member_key(list_id: str, member_hash: str) -> tuple[str, str, str, str]:
    return (PROVIDER, "member", list_id, member_hash)


def _forgotten_key(list_id: str, member_hash: str) -> tuple[str, str, str, str]:
    return (PROVIDER, "forgotten", list_id, member_hash)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": str(uuid.uuid4()),
    }
    if errors is not None:
        body["errors"] = errors
    return Reply(status, body, dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE)


def _not_found() -> Reply:
    return problem(404, "Resource Not Found", "The requested resource could not be found.")


def _invalid(field: str, message: str) -> Reply:
    return problem(
        400,
        "Invalid Resource",
        "The resource submitted could not be validated. For field-specific details, see the "
        "'errors' array.",
        errors=[{"field": field, "message": message}],
    )


def _api_key(call: Incoming) -> str | None:
    scheme, _, encoded = call.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, _, key = decoded.partition(":")
    return key


def _auth(call: Incoming) -> Reply | None:
    key = _api_key(call)
    if not key:
        return problem(401, "API Key Missing", "Your request did not include an API key.")
    if not _API_KEY.fullmatch(key):
        return problem(
            401,
            "API Key Invalid",
            "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
        )
    return None


def _concurrency(call: Incoming) -> ConcurrencyLimit | None:
    key = _api_key(call)
    if not key:
        return None  # refused as unauthenticated anyway
    return ConcurrencyLimit(
        key=(PROVIDER, "connections", hashlib.sha256(key.encode()).hexdigest()[:16]),
        limit=MAX_CONNECTIONS,
        refusal=problem(
            429,
            "Too Many Requests",
            f"You have exceeded the limit of {MAX_CONNECTIONS} simultaneous connections.",
            headers={"Retry-After": CONCURRENCY_RETRY_AFTER},
        ),
    )


def _member_json(list_id: str, member_hash: str, member: dict[str, Any]) -> dict[str, Any]:
    merge_fields = member["merge_fields"]
    full_name = " ".join(
        str(merge_fields[name]) for name in ("FNAME", "LNAME") if merge_fields.get(name)
    )
    return {
        "id": member_hash,
        "email_address": member["email_address"],
        "unique_email_id": member["unique_email_id"],
        "contact_id": member["contact_id"],
        "full_name": full_name,
        "web_id": member["web_id"],
        "email_type": "html",
        "status": member["status"],
        "consents_to_one_to_one_messaging": True,
        "merge_fields": copy.deepcopy(merge_fields),
        "interests": {},
        "stats": {"avg_open_rate": 0, "avg_click_rate": 0},
        "ip_signup": "",
        "timestamp_signup": "",
        "ip_opt": "",
        "timestamp_opt": member["timestamp_opt"],
        "member_rating": 2,
        "last_changed": member["last_changed"],
        "language": "",
        "vip": False,
        "email_client": "",
        "location": {"latitude": 0, "longitude": 0, "gmtoff": 0, "dstoff": 0, "country_code": ""},
        "source": "API - Generic",
        "tags_count": len(member["tags"]),
        "tags": [{"id": tag_id, "name": name} for name, tag_id in member["tags"].items()],
        "list_id": list_id,
        "_links": [],
    }


def _check_email(value: Any) -> str | Reply:
    if not isinstance(value, str) or not value.strip():
        return _invalid("email_address", "This value should not be blank.")
    if not _EMAIL.fullmatch(value.strip()):
        return problem(400, "Invalid Resource", "Please provide a valid email address.")
    return value.strip()


def _check_status(body: dict[str, Any], field: str) -> str | Reply | None:
    value = body.get(field)
    if value is None:
        return None
    if value not in STATUSES:
        return _invalid(
            field, f"Data presented is not one of the accepted values: {', '.join(STATUSES)}."
        )
    return str(value)


def _check_merge_fields(body: dict[str, Any]) -> dict[str, Any] | Reply:
    merge_fields = body.get("merge_fields", {})
    if not isinstance(merge_fields, dict):
        return problem(400, "Invalid Resource", "Your merge fields were invalid.")
    for name, value in merge_fields.items():
        if not isinstance(value, str | int | float | dict) or isinstance(value, bool):
            return problem(
                400,
                "Invalid Resource",
                "Your merge fields were invalid.",
                errors=[{"field": name, "message": "Please enter a valid value."}],
            )
    return merge_fields


def _body(call: Incoming) -> dict[str, Any] | Reply:
    if call.body_error:
        return problem(
            400,
            "JSON Schema Validation Failed",
            "The request body is not valid JSON or does not match the schema.",
        )
    return call.body


@endpoint(PROVIDER, "set-list-member")
def set_list_member(state: SandboxState, call: Incoming) -> Reply:
    """PUT /lists/{list_id}/members/{subscriber_hash}: add or update ("upsert") a member."""
    if (denied := _auth(call)) is not None:
        return denied
    body = _body(call)
    if isinstance(body, Reply):
        return body
    list_id, member_hash = call.path["list_id"], call.path["subscriber_hash"]
    email = _check_email(body.get("email_address"))
    if isinstance(email, Reply):
        return email
    if subscriber_hash(email) != member_hash:
        return problem(
            400,
            "Invalid Resource",
            f"The subscriber hash in the URL ({member_hash}) does not match the email address "
            f"{email}: it must be the MD5 hash of the lower-cased address.",
        )
    status = _check_status(body, "status")
    if isinstance(status, Reply):
        return status
    status_if_new = _check_status(body, "status_if_new")
    if isinstance(status_if_new, Reply):
        return status_if_new
    merge_fields = _check_merge_fields(body)
    if isinstance(merge_fields, Reply):
        return merge_fields
    now = _now()
    with state.holding() as held:
        member = held.get(member_key(list_id, member_hash))
        if member is None:
            new_status = status or status_if_new
            if new_status is None:
                return _invalid("status_if_new", "This value should not be blank.")
            if held.get(_forgotten_key(list_id, member_hash)) and new_status != "pending":
                return problem(
                    400,
                    "Forgotten Email Not Subscribed",
                    f"{email} was permanently deleted and cannot be re-imported. The contact must "
                    "re-subscribe to get back on the list.",
                )
            member = {
                "email_address": email,
                "status": new_status,
                "merge_fields": {},
                "tags": {},
                "unique_email_id": uuid.uuid4().hex[:10],
                "contact_id": uuid.uuid4().hex,
                "web_id": next(_web_ids),
                "timestamp_opt": now,
            }
            held.pop(_forgotten_key(list_id, member_hash), None)
        member["email_address"] = email
        if status is not None:
            member["status"] = status
        member["merge_fields"] = {**member["merge_fields"], **copy.deepcopy(merge_fields)}
        member["last_changed"] = now
        held[member_key(list_id, member_hash)] = member
        return Reply(200, _member_json(list_id, member_hash, member))


@endpoint(PROVIDER, "update-list-member")
def update_list_member(state: SandboxState, call: Incoming) -> Reply:
    """PATCH /lists/{list_id}/members/{subscriber_hash}: a new email_address moves it to a new hash."""
    if (denied := _auth(call)) is not None:
        return denied
    body = _body(call)
    if isinstance(body, Reply):
        return body
    list_id, member_hash = call.path["list_id"], call.path["subscriber_hash"]
    email: str | None = None
    if "email_address" in body:
        checked_email = _check_email(body["email_address"])
        if isinstance(checked_email, Reply):
            return checked_email
        email = checked_email
    status = _check_status(body, "status")
    merge_fields = _check_merge_fields(body)
    if isinstance(status, Reply):
        return status
    if isinstance(merge_fields, Reply):
        return merge_fields
    with state.holding() as held:
        member = held.get(member_key(list_id, member_hash))
        if member is None:
            return _not_found()
        new_hash = member_hash if email is None else subscriber_hash(email)
        if new_hash != member_hash and member_key(list_id, new_hash) in held:
            return problem(
                400,
                "Member Exists",
                f"{email} is already a list member. Use PUT to insert or update list members.",
            )
        member = copy.deepcopy(member)
        if email is not None:
            member["email_address"] = email
        if status is not None:
            member["status"] = status
        member["merge_fields"] = {**member["merge_fields"], **copy.deepcopy(merge_fields)}
        member["last_changed"] = _now()
        del held[member_key(list_id, member_hash)]
        held[member_key(list_id, new_hash)] = member
        return Reply(200, _member_json(list_id, new_hash, member))


@endpoint(PROVIDER, "get-list-member")
def get_list_member(state: SandboxState, call: Incoming) -> Reply:
    """GET /lists/{list_id}/members/{subscriber_hash}."""
    if (denied := _auth(call)) is not None:
        return denied
    list_id, member_hash = call.path["list_id"], call.path["subscriber_hash"]
    with state.holding() as held:
        member = held.get(member_key(list_id, member_hash))
        if member is None:
            return _not_found()
        return Reply(200, _member_json(list_id, member_hash, member))


@endpoint(PROVIDER, "update-list-member-tags")
def update_list_member_tags(state: SandboxState, call: Incoming) -> Reply:
    """POST /lists/{list_id}/members/{subscriber_hash}/tags: `active` adds a tag, `inactive` removes it."""
    if (denied := _auth(call)) is not None:
        return denied
    body = _body(call)
    if isinstance(body, Reply):
        return body
    tags = body.get("tags")
    if not isinstance(tags, list):
        return _invalid("tags", "This value should be of type array.")
    for index, tag in enumerate(tags):
        if not isinstance(tag, dict):
            return _invalid(f"tags.{index}", "This value should be of type object.")
        name = tag.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_TAG_LENGTH:
            return _invalid(
                f"tags.{index}.name", f"Tag names are 1 to {MAX_TAG_LENGTH} characters long."
            )
        if tag.get("status") not in TAG_STATUSES:
            return _invalid(
                f"tags.{index}.status",
                f"Data presented is not one of the accepted values: {', '.join(TAG_STATUSES)}.",
            )
    list_id, member_hash = call.path["list_id"], call.path["subscriber_hash"]
    with state.holding() as held:
        member = held.get(member_key(list_id, member_hash))
        if member is None:
            return _not_found()
        for tag in tags:
            name = tag["name"].strip()
            if tag["status"] == "active":
                tag_id = held.setdefault((PROVIDER, "tag", list_id, name), next(_tag_ids))
                member["tags"][name] = tag_id
            else:
                member["tags"].pop(name, None)
        member["last_changed"] = _now()
    return Reply(204, None)


@endpoint(PROVIDER, "delete-list-member-permanent")
def delete_list_member_permanent(state: SandboxState, call: Incoming) -> Reply:
    """POST /lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent: erase the member."""
    if (denied := _auth(call)) is not None:
        return denied
    list_id, member_hash = call.path["list_id"], call.path["subscriber_hash"]
    with state.holding() as held:
        if held.pop(member_key(list_id, member_hash), None) is None:
            return _not_found()
        held[_forgotten_key(list_id, member_hash)] = True
    return Reply(204, None)


def _unknown_endpoint(_state: SandboxState, _call: Incoming) -> Reply:
    return _not_found()


_FAULT_TITLES = {
    400: "Bad Request",
    401: "API Key Invalid",
    403: "Forbidden",
    404: "Resource Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _fault_body(status: int) -> dict[str, Any]:
    title = _FAULT_TITLES.get(status, "Internal Server Error" if status >= 500 else "Bad Request")
    body: dict[str, Any] = problem(status, title, f"Injected by the sandbox ({status}).").body
    return body


register_provider(
    ProviderSpec(
        PROVIDER,
        _unknown_endpoint,
        _fault_body,
        fault_media_type=PROBLEM_MEDIA_TYPE,
        concurrency=_concurrency,
    )
)


# routes ---------------------------------------------------------------------------------------------

_MEMBER_ENDPOINTS = {
    "PUT": "set-list-member",
    "PATCH": "update-list-member",
    "GET": "get-list-member",
}


def _path(request: Request) -> dict[str, str]:
    return {key: str(value) for key, value in request.path_params.items()}


async def _member_route(request: Request) -> Response:
    return await serve(request, PROVIDER, _MEMBER_ENDPOINTS[request.method], path=_path(request))


async def _tags_route(request: Request) -> Response:
    return await serve(request, PROVIDER, "update-list-member-tags", path=_path(request))


async def _delete_permanent_route(request: Request) -> Response:
    return await serve(request, PROVIDER, "delete-list-member-permanent", path=_path(request))


async def _unknown_route(request: Request) -> Response:
    return await serve(request, PROVIDER, str(request.path_params["rest"]))


async def _list_members(request: Request) -> JSONResponse:
    """`{"list_id", "members": [{"id", "email_address", "status", "merge_fields", "tags"}],
    "permanently_deleted": [hash, ...]}`, members in the order they were added (moved ones last)."""
    list_id = str(request.path_params["list_id"])
    state: SandboxState = request.app.state.sandbox
    with state.holding() as held:
        members = [
            {
                "id": key[3],
                "email_address": member["email_address"],
                "status": member["status"],
                "merge_fields": copy.deepcopy(member["merge_fields"]),
                "tags": sorted(member["tags"]),
                "last_changed": member["last_changed"],
            }
            for key, member in held.items()
            if isinstance(key, tuple) and key[:3] == (PROVIDER, "member", list_id)
        ]
        deleted = [
            key[3]
            for key in held
            if isinstance(key, tuple) and key[:3] == (PROVIDER, "forgotten", list_id)
        ]
    return JSONResponse({"list_id": list_id, "members": members, "permanently_deleted": deleted})


_MEMBER = "/mailchimp/3.0/lists/{list_id}/members/{subscriber_hash}"

ROUTES: list[BaseRoute] = [
    Route("/_sandbox/mailchimp/lists/{list_id}/members", _list_members, methods=["GET"]),
    Route(_MEMBER, _member_route, methods=["GET", "PUT", "PATCH"]),
    Route(f"{_MEMBER}/tags", _tags_route, methods=["POST"]),
    Route(f"{_MEMBER}/actions/delete-permanent", _delete_permanent_route, methods=["POST"]),
    Route(
        "/mailchimp/{rest:path}",
        _unknown_route,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    ),
]
