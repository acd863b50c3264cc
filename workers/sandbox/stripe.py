"""Stripe's customers API played by the sandbox (STRIPE_API_BASE = <sandbox>/stripe).

See reference/providers.md section 1.5. Requests are form-encoded (`metadata[plan]=gold`), answers are
Stripe objects or `{"error": {"type", "code", "message", "param"}}`, every answer carries a `Request-Id`.

- Auth: `Authorization: Bearer sk_test_...`; anything else is 401 (a live key never reaches the sandbox).
- Idempotency as Stripe documents it: a POST's `Idempotency-Key` (at most 255 characters) is scoped to
  the account (here: the API key). The first result of a request that got past validation is stored;
  the same key with the same parameters replays it (`Idempotent-Replayed: true`, no new effect; the
  call is recorded with `effect: false`), with other parameters it is a 400 `idempotency_error`.
  Requests refused before the endpoint ran (401, 429, invalid parameters) store nothing.
- Rate limit: 25 requests per second per key (Stripe's sandbox-mode limit), over it 429 `rate_limit`
  with `Retry-After` (whether real Stripe sends the header is unconfirmed; clients must not need it).
- Control: `POST /_sandbox/stripe/customers` seeds a customer, `GET /_sandbox/stripe/customers/{id}`
  reads one as Stripe holds it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import secrets
import string
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
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

PROVIDER = "stripe"
RATE_BURST = 25
RATE_PER_SECOND = 25.0
MAX_IDEMPOTENCY_KEY = 255
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500
# Parameters the played endpoints take (Stripe takes many more; anything else is parameter_unknown).
CUSTOMER_FIELDS = ("email", "name", "description", "phone")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_METADATA_PARAM = re.compile(r"metadata\[([^\]]*)\]")
_ALPHANUMERIC = string.ascii_letters + string.digits
_DOCS = "https://stripe.com/docs/error-codes"


def _token(length: int) -> str:
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def customer_key(customer_id: str) -> tuple[str, str, str]:
    """Where a customer is held in the sandbox state."""
    return (PROVIDER, "customer", customer_id)


def _account(api_key: str) -> str:
    """The sandbox's stand-in for the Stripe account a key belongs to (the key itself is not kept)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def _mask(api_key: str) -> str:
    """As Stripe quotes a key in errors: its prefix and last four characters only."""
    prefix = "_".join(api_key.split("_")[:2]) + "_" if api_key.count("_") >= 2 else ""
    return f"{prefix}{'*' * 12}{api_key[-4:]}"


def _error(
    status: int,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    **headers: str,
) -> Reply:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if code is not None:
        error["code"] = code
        error["doc_url"] = f"{_DOCS}/{code.replace('_', '-')}"
    if param is not None:
        error["param"] = param
    return Reply(status, {"error": error}, {"Request-Id": f"req_{_token(14)}", **headers})


def _auth(call: Incoming) -> str | Reply:
    """The API key, or Stripe's 401."""
    scheme, _, key = call.headers.get("authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return _error(
            401,
            "You did not provide an API key. You need to provide your API key in the Authorization "
            "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
            "https://stripe.com/docs/api#authentication for details, or we can help at "
            "https://support.stripe.com/.",
        )
    if not key.startswith("sk_test_") or len(key) < len("sk_test_") + 4:
        return _error(401, f"Invalid API Key provided: {_mask(key)}")
    return key


def _rate_limit(state: SandboxState, account: str) -> Reply | None:
    wait = state.take_token(
        (PROVIDER, "rate", account), burst=RATE_BURST, per_second=RATE_PER_SECOND
    )
    if wait == 0:
        return None
    return _error(
        429,
        "Request rate limit exceeded. Learn more about rate limits here "
        "https://stripe.com/docs/rate-limits.",
        code="rate_limit",
        **{"Retry-After": str(max(1, math.ceil(wait)))},
    )


def _customer_params(
    params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, str] | None] | Reply:
    """(fields to set, metadata changes or None) from Stripe's form encoding, or a 400."""
    fields: dict[str, Any] = {}
    metadata: dict[str, str] | None = None
    for name, value in params.items():
        if name.startswith("expand"):
            continue
        if name in CUSTOMER_FIELDS:
            fields[name] = str(value) if value != "" else None
            continue
        if name == "metadata" and value == "":  # `metadata=` unsets every key
            metadata = {}
            fields["metadata"] = {}
            continue
        match = _METADATA_PARAM.fullmatch(name)
        if match is None:
            return _error(
                400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )
        key = match.group(1)
        if not key or len(key) > MAX_METADATA_KEY_LENGTH:
            return _error(
                400,
                f"Metadata keys must be 1 to {MAX_METADATA_KEY_LENGTH} characters long.",
                code="parameter_invalid_string",
                param=name,
            )
        if len(str(value)) > MAX_METADATA_VALUE_LENGTH:
            return _error(
                400,
                f"Metadata values can have a maximum length of {MAX_METADATA_VALUE_LENGTH} characters.",
                code="parameter_invalid_string",
                param=name,
            )
        metadata = {} if metadata is None else metadata
        metadata[key] = str(value)
    email = fields.get("email")
    if email is not None and not _EMAIL.fullmatch(email):
        return _error(400, f"Invalid email address: {email}", code="email_invalid", param="email")
    return fields, metadata


def new_customer(
    customer_id: str | None = None,
    *,
    email: str | None = None,
    name: str | None = None,
    metadata: dict[str, str] | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A customer object as the API answers it (API version 2025-03-31.basil and later)."""
    return {
        "id": customer_id or f"cus_{_token(14)}",
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": created or int(time.time()),
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": email,
        "invoice_prefix": _token(8).upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": dict(metadata or {}),
        "name": name,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def _apply(
    customer: dict[str, Any], fields: dict[str, Any], metadata: dict[str, str] | None
) -> None:
    for name, value in fields.items():
        if name != "metadata":
            customer[name] = value
    if "metadata" in fields:
        customer["metadata"] = {}
    for key, value in (metadata or {}).items():
        if value == "":  # `metadata[key]=` unsets that key
            customer["metadata"].pop(key, None)
        else:
            customer["metadata"][key] = value
    if len(customer["metadata"]) > MAX_METADATA_KEYS:
        raise ValueError(f"Metadata can have at most {MAX_METADATA_KEYS} keys.")


# idempotency ----------------------------------------------------------------------------------------


def _fingerprint(call: Incoming) -> str:
    """What "the same parameters" means: the endpoint, the object in the path and the parameters."""
    return json.dumps(
        [call.endpoint, sorted(call.path.items()), sorted(call.body.items())], default=str
    )


def _idempotent(
    state: SandboxState, call: Incoming, account: str, run: Callable[[], Reply]
) -> Reply:
    """Run `run()` once per Idempotency-Key: replay its stored result, or refuse other parameters."""
    key = call.headers.get("idempotency-key")
    if call.method != "POST" or key is None:
        return run()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        return _error(
            400,
            f"Invalid idempotency key: keys must be 1 to {MAX_IDEMPOTENCY_KEY} characters long.",
            param="Idempotency-Key",
        )
    fingerprint = _fingerprint(call)
    with state.holding() as held:
        stored = held.get((PROVIDER, "idempotency", account, key))
        if stored is not None:
            stored_fingerprint, stored_reply = stored
            if stored_fingerprint != fingerprint:
                return _error(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters they "
                    f"were first used with. Try using a key other than '{key}' if you meant to "
                    "execute a different request.",
                    error_type="idempotency_error",
                )
            return Reply(
                stored_reply.status,
                stored_reply.body,
                {
                    **stored_reply.headers,
                    "Request-Id": f"req_{_token(14)}",
                    "Original-Request": stored_reply.headers.get("Request-Id", ""),
                    "Idempotent-Replayed": "true",
                },
                effect=False,
            )
        reply = run()
        # Stripe keeps only results of requests the endpoint began to execute: not a failed validation.
        if reply.status != 400:
            reply.headers["Idempotency-Key"] = key
            held[(PROVIDER, "idempotency", account, key)] = (fingerprint, reply)
        return reply


# endpoints ------------------------------------------------------------------------------------------


def _admit(state: SandboxState, call: Incoming) -> str | Reply:
    """The caller's account when authenticated and under the rate limit, else the refusal."""
    key = _auth(call)
    if isinstance(key, Reply):
        return key
    account = _account(key)
    if (limited := _rate_limit(state, account)) is not None:
        return limited
    if call.body_error:
        return _error(
            400,
            "Invalid request: the body must be form-encoded (application/x-www-form-urlencoded).",
        )
    return account


def _ok(call: Incoming, body: dict[str, Any]) -> Reply:
    headers = {"Request-Id": f"req_{_token(14)}"}
    if version := call.headers.get("stripe-version"):
        headers["Stripe-Version"] = version
    return Reply(200, body, headers)


def _no_such_customer(customer_id: str) -> Reply:
    return _error(404, f"No such customer: '{customer_id}'", code="resource_missing", param="id")


@endpoint(PROVIDER, "create-customer")
def create_customer(state: SandboxState, call: Incoming) -> Reply:
    """POST /v1/customers."""
    account = _admit(state, call)
    if isinstance(account, Reply):
        return account

    def run() -> Reply:
        parsed = _customer_params(call.body)
        if isinstance(parsed, Reply):
            return parsed
        fields, metadata = parsed
        customer = new_customer()
        try:
            _apply(customer, fields, metadata)
        except ValueError as exc:
            return _error(400, str(exc), param="metadata")
        with state.holding() as held:
            held[customer_key(customer["id"])] = customer
        return _ok(call, copy.deepcopy(customer))

    return _idempotent(state, call, account, run)


@endpoint(PROVIDER, "update-customer")
def update_customer(state: SandboxState, call: Incoming) -> Reply:
    """POST /v1/customers/{customer}: only the parameters given change."""
    account = _admit(state, call)
    if isinstance(account, Reply):
        return account
    customer_id = call.path.get("customer", "")

    def run() -> Reply:
        parsed = _customer_params(call.body)
        if isinstance(parsed, Reply):
            return parsed
        fields, metadata = parsed
        with state.holding() as held:
            customer = held.get(customer_key(customer_id))
            if customer is None:
                return _no_such_customer(customer_id)
            updated = copy.deepcopy(customer)
            try:
                _apply(updated, fields, metadata)
            except ValueError as exc:
                return _error(400, str(exc), param="metadata")
            held[customer_key(customer_id)] = updated
        return _ok(call, copy.deepcopy(updated))

    return _idempotent(state, call, account, run)


@endpoint(PROVIDER, "retrieve-customer")
def retrieve_customer(state: SandboxState, call: Incoming) -> Reply:
    """GET /v1/customers/{customer}."""
    account = _admit(state, call)
    if isinstance(account, Reply):
        return account
    customer_id = call.path.get("customer", "")
    with state.holding() as held:
        customer = held.get(customer_key(customer_id))
        if customer is None:
            return _no_such_customer(customer_id)
        return _ok(call, copy.deepcopy(customer))


def _unknown_endpoint(_state: SandboxState, call: Incoming) -> Reply:
    return _error(
        404,
        f"Unrecognized request URL ({call.method}: /{call.endpoint}). Please see "
        "https://stripe.com/docs or we can help at https://support.stripe.com/.",
    )


def _fault_body(status: int) -> dict[str, Any]:
    if status == 429:
        return {
            "error": {
                "type": "invalid_request_error",
                "code": "rate_limit",
                "message": "Request rate limit exceeded.",
            }
        }
    if status >= 500:
        return {"error": {"type": "api_error", "message": "An unknown error occurred"}}
    if status == 401:
        return {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}
    if status == 404:
        return {
            "error": {
                "type": "invalid_request_error",
                "code": "resource_missing",
                "message": "No such customer",
                "param": "id",
            }
        }
    return {"error": {"type": "invalid_request_error", "message": "Invalid request"}}


register_provider(ProviderSpec(PROVIDER, _unknown_endpoint, _fault_body))


# routes ---------------------------------------------------------------------------------------------


async def _customers_route(request: Request) -> Response:
    return await serve(request, PROVIDER, "create-customer")


async def _customer_route(request: Request) -> Response:
    name = "retrieve-customer" if request.method == "GET" else "update-customer"
    return await serve(
        request, PROVIDER, name, path={"customer": str(request.path_params["customer"])}
    )


async def _unknown_route(request: Request) -> Response:
    return await serve(request, PROVIDER, str(request.path_params["rest"]))


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


async def _seed_customer(request: Request) -> JSONResponse:
    """`{"id"?, "email"?, "name"?, "metadata"?}`: a customer Stripe holds (replacing one with that id)."""
    try:
        data = await request.json()
    except ValueError:
        return _bad_request("body must be JSON")
    if not isinstance(data, dict):
        return _bad_request("expected a JSON object")
    customer_id = data.get("id")
    if customer_id is not None and (
        not isinstance(customer_id, str) or not customer_id.startswith("cus_")
    ):
        return _bad_request("id must be a string starting with cus_")
    for name in ("email", "name"):
        if data.get(name) is not None and not isinstance(data[name], str):
            return _bad_request(f"{name} must be a string")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        return _bad_request("metadata must be an object of strings")
    customer = new_customer(
        customer_id, email=data.get("email"), name=data.get("name"), metadata=metadata
    )
    state: SandboxState = request.app.state.sandbox
    with state.holding() as held:
        held[customer_key(customer["id"])] = customer
    return JSONResponse(customer, status_code=201)


async def _read_customer(request: Request) -> JSONResponse:
    state: SandboxState = request.app.state.sandbox
    customer_id = str(request.path_params["customer"])
    with state.holding() as held:
        customer = held.get(customer_key(customer_id))
        if customer is None:
            return JSONResponse({"error": f"no customer {customer_id}"}, status_code=404)
        return JSONResponse(customer)


ROUTES: list[BaseRoute] = [
    Route("/_sandbox/stripe/customers", _seed_customer, methods=["POST"]),
    Route("/_sandbox/stripe/customers/{customer}", _read_customer, methods=["GET"]),
    Route("/stripe/v1/customers", _customers_route, methods=["POST"]),
    Route("/stripe/v1/customers/{customer}", _customer_route, methods=["GET", "POST"]),
    Route("/stripe/{rest:path}", _unknown_route, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
]
