"""SendGrid's Mail Send v3 played by the sandbox (SENDGRID_API_BASE = <sandbox>/sendgrid).

See reference/providers.md section 8.5. `POST /v3/mail/send` takes `from`, `personalizations[]` (`to`,
`dynamic_template_data`, `custom_args`, ...) and a `template_id` or `content`; it answers 202 with an
empty body and `X-Message-Id` (queued, not delivered). Real dynamic template ids are `d-` and 32 hex
digits; the sandbox holds no templates and takes any `d-...` id (`d-sandbox-welcome`), or a legacy GUID.
Invalid requests get 400 `{"errors": [{"message", "field", "help"}]}` listing every problem found.

- Auth: `Authorization: Bearer SG....`, else 401.
- Rate limit per key (SendGrid does not publish mail/send's number; the sandbox allows bursts of 600 and
  10 a second): every answer carries `X-RateLimit-Limit`, `-Remaining` and `-Reset` (epoch seconds), and
  a 429 also `Retry-After`.
- The call record keeps the whole body, so tests read which template went to whom (its `reply_headers`
  hold the `X-Message-Id`); `recipients(calls)` lists them one recipient at a time.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from workers.sandbox.server import (
    Incoming,
    ProviderSpec,
    Reply,
    SandboxState,
    endpoint,
    register_provider,
    serve,
)

PROVIDER = "sendgrid"
RATE_BURST = 600
RATE_PER_SECOND = 10.0
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
_EMAIL = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")
_DYNAMIC_TEMPLATE = re.compile(r"d-[A-Za-z0-9_-]+")
_LEGACY_TEMPLATE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
)
_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"

Problem = dict[str, Any]


def _problem(message: str, field: str | None = None, help_anchor: str | None = None) -> Problem:
    return {
        "message": message,
        "field": field,
        "help": f"{_HELP}#{help_anchor}" if help_anchor else None,
    }


def _errors(status: int, problems: list[Problem], headers: dict[str, str]) -> Reply:
    return Reply(status, {"errors": problems}, headers)


def _api_key(call: Incoming) -> str | Reply:
    scheme, _, key = call.headers.get("authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return _errors(401, [_problem("authorization required")], {})
    if not key.startswith("SG.") or len(key) < 8:
        return _errors(
            401,
            [_problem("The provided authorization grant is invalid, expired, or revoked")],
            {},
        )
    return key


def _rate_limit(state: SandboxState, key: str) -> tuple[float, dict[str, str]]:
    """(seconds to wait, or 0 when a token was taken; the X-RateLimit headers to answer with)."""
    bucket = (PROVIDER, "mail-send", hashlib.sha256(key.encode()).hexdigest()[:16])
    wait = state.take_token(bucket, burst=RATE_BURST, per_second=RATE_PER_SECOND)
    left = state.tokens_left(bucket, burst=RATE_BURST, per_second=RATE_PER_SECOND)
    refill = (RATE_BURST - left) / RATE_PER_SECOND
    headers = {
        "X-RateLimit-Limit": str(RATE_BURST),
        "X-RateLimit-Remaining": str(math.floor(left)),
        "X-RateLimit-Reset": str(math.ceil(time.time() + refill)),
    }
    return wait, headers


def _email_problems(value: Any, field: str, anchor: str) -> list[Problem]:
    if not isinstance(value, dict) or not isinstance(value.get("email"), str):
        return [_problem("The email parameter is required.", f"{field}.email", anchor)]
    if not _EMAIL.fullmatch(value["email"].strip()):
        return [_problem("Does not contain a valid address.", f"{field}.email", anchor)]
    name = value.get("name")
    if name is not None and not isinstance(name, str):
        return [_problem("The name must be a string.", f"{field}.name", anchor)]
    return []


def _custom_args_problems(value: Any, field: str) -> list[Problem]:
    if value is None:
        return []
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return [
            _problem(
                "Invalid type. Expected: object of strings, given: other.",
                field,
                "message.custom_args",
            )
        ]
    return []


def _personalization_problems(index: int, value: Any) -> list[Problem]:
    field = f"personalizations.{index}"
    if not isinstance(value, dict):
        return [_problem("Invalid type. Expected: object.", field, "message.personalizations")]
    to = value.get("to")
    if not isinstance(to, list) or not to:
        return [
            _problem(
                "The to array is required for all personalization objects, and must have at "
                "least one email object with a valid email address.",
                f"{field}.to",
                "message.personalizations.to",
            )
        ]
    problems: list[Problem] = []
    if len(to) > MAX_RECIPIENTS:
        problems.append(
            _problem(
                f"The to array can have at most {MAX_RECIPIENTS} recipients.",
                f"{field}.to",
                "message.personalizations.to",
            )
        )
    for number, recipient in enumerate(to):
        problems += _email_problems(
            recipient, f"{field}.to.{number}", "message.personalizations.to"
        )
    data = value.get("dynamic_template_data")
    if data is not None and not isinstance(data, dict):
        problems.append(
            _problem(
                "Invalid type. Expected: object.",
                f"{field}.dynamic_template_data",
                "message.personalizations.dynamic_template_data",
            )
        )
    problems += _custom_args_problems(value.get("custom_args"), f"{field}.custom_args")
    return problems


def _template_problems(body: dict[str, Any]) -> list[Problem]:
    template_id = body.get("template_id")
    if template_id is None:
        if not isinstance(body.get("content"), list) or not body["content"]:
            return [
                _problem(
                    "Unless a valid template_id is provided, the content parameter is required. "
                    "There must be at least one defined content block.",
                    "content",
                    "message.content",
                )
            ]
        return []
    if not isinstance(template_id, str) or not (
        _DYNAMIC_TEMPLATE.fullmatch(template_id) or _LEGACY_TEMPLATE.fullmatch(template_id)
    ):
        return [
            _problem(
                f"The template_id must be a valid GUID, you provided '{template_id}'.",
                "template_id",
                "message.template_id",
            )
        ]
    return []


def validate(body: dict[str, Any]) -> list[Problem]:
    """Every problem SendGrid would list for this mail/send body (empty: it would be accepted)."""
    problems = _email_problems(body.get("from"), "from", "message.from")
    if body.get("from") is None:
        problems = [
            _problem(
                "The from object must be provided for every email send. It is an object that "
                "requires the email parameter, but may also contain a name parameter.",
                "from",
                "message.from",
            )
        ]
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(
            _problem(
                "The personalizations field is required and must have at least one "
                "personalization.",
                "personalizations",
                "message.personalizations",
            )
        )
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        problems.append(
            _problem(
                f"The personalizations field can have at most {MAX_PERSONALIZATIONS} objects.",
                "personalizations",
                "message.personalizations",
            )
        )
    else:
        for index, personalization in enumerate(personalizations):
            problems += _personalization_problems(index, personalization)
    problems += _template_problems(body)
    problems += _custom_args_problems(body.get("custom_args"), "custom_args")
    return problems


@endpoint(PROVIDER, "mail-send")
def mail_send(state: SandboxState, call: Incoming) -> Reply:
    """POST /v3/mail/send."""
    key = _api_key(call)
    if isinstance(key, Reply):
        return key
    wait, headers = _rate_limit(state, key)
    if wait > 0:
        return _errors(
            429,
            [_problem("too many requests")],
            {**headers, "Retry-After": str(max(1, math.ceil(wait)))},
        )
    if call.body_error:
        return _errors(
            400,
            [
                _problem(
                    "Bad Request: the request body must be a JSON object.",
                    None,
                    "-Request-Body-Parameters",
                )
            ],
            headers,
        )
    problems = validate(call.body)
    if problems:
        return _errors(400, problems, headers)
    message_id = secrets.token_urlsafe(16)[:22]
    return Reply(202, None, {**headers, "X-Message-Id": message_id})


def recipients(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per recipient of the mail/send calls that took effect, oldest first:
    `{"to", "name", "from", "template_id", "data", "custom_args", "message_id"}`."""
    sent: list[dict[str, Any]] = []
    for call in calls:
        if call.get("provider") != PROVIDER or call.get("endpoint") != "mail-send":
            continue
        if not call.get("effect"):
            continue
        body = call["body"]
        for personalization in body.get("personalizations", []):
            for recipient in personalization.get("to", []):
                sent.append(
                    {
                        "to": recipient["email"],
                        "name": recipient.get("name"),
                        "from": body["from"]["email"],
                        "template_id": body.get("template_id"),
                        "data": personalization.get("dynamic_template_data", {}),
                        "custom_args": {
                            **body.get("custom_args", {}),
                            **personalization.get("custom_args", {}),
                        },
                        "message_id": call.get("reply_headers", {}).get("X-Message-Id"),
                    }
                )
    return sent


def _unknown_endpoint(_state: SandboxState, _call: Incoming) -> Reply:
    return _errors(404, [_problem("resource not found")], {})


def _fault_body(status: int) -> dict[str, Any]:
    if status == 429:
        message = "too many requests"
    elif status >= 500:
        message = "internal server error"
    elif status == 401:
        message = "The provided authorization grant is invalid, expired, or revoked"
    else:
        message = "Bad Request"
    return {"errors": [_problem(message)]}


register_provider(ProviderSpec(PROVIDER, _unknown_endpoint, _fault_body))


async def _mail_send_route(request: Request) -> Response:
    return await serve(request, PROVIDER, "mail-send")


async def _unknown_route(request: Request) -> Response:
    return await serve(request, PROVIDER, str(request.path_params["rest"]))


ROUTES: list[BaseRoute] = [
    Route("/sendgrid/v3/mail/send", _mail_send_route, methods=["POST"]),
    Route(
        "/sendgrid/{rest:path}", _unknown_route, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]
    ),
]
