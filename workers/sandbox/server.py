"""The provider sandbox: provider APIs played over real HTTP, so no test and no demo reaches the internet.

Each provider endpoint is a handler registered under (provider, endpoint); the shared pipeline parses
the request, applies injected faults (latency, then a canned status), runs the handler and records the
call. Hookfleet's outbound clients point here through settings (SLACK_API_BASE = <sandbox>/slack/api/,
AIRTABLE_API_BASE = <sandbox>/airtable, STRIPE_API_BASE = <sandbox>/stripe, MAILCHIMP_API_BASE =
<sandbox>/mailchimp/3.0, SENDGRID_API_BASE = <sandbox>/sendgrid). The control API under `/_sandbox/`
injects faults, lists what was received, reports the most simultaneous calls seen per provider, changes
a provider's per-minute limits at run time (`/_sandbox/rate-limits`, so a benchmark can raise the
provider's limit and hookfleet's by the same factor) and seeds or reads what a provider holds
(`POST /_sandbox/airtable/payloads`, `/_sandbox/stripe/...`, `/_sandbox/mailchimp/...`,
`/_sandbox/slack/users`, `/_sandbox/luma/...`).

Slack's chat.postMessage and Airtable are played here; Slack's users.list and users.lookupByEmail, Luma,
Stripe, Mailchimp and SendGrid in their own modules (workers.sandbox.slack_users, .luma, .stripe,
.mailchimp, .sendgrid), which register their endpoints and routes with this one.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from workers.logging import get_logger

log = get_logger(__name__)


# ---------------------------------------------------------------------------------------------------
# Shapes shared by every provider


@dataclass(frozen=True)
class Incoming:
    """One request as a handler sees it: headers lower-cased, query and body already parsed."""

    provider: str
    endpoint: str
    method: str
    headers: dict[str, str]
    query: dict[str, str]
    body: dict[str, Any]
    # A provider-flavoured error code when the body could not be parsed ("invalid_json", ...).
    body_error: str | None = None
    # Ids the provider takes in the URL path (Airtable's base and webhook ids).
    path: dict[str, str] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, Any]:
        """Query and body together (Slack, like many APIs, takes arguments in either)."""
        return {**self.query, **self.body}


@dataclass(frozen=True)
class Reply:
    """A body of None answers with no content at all (SendGrid's 202, Mailchimp's 204)."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    # None: the call took effect when it succeeded; False for a success that changed nothing (a Stripe
    # idempotent replay answers the first response again).
    effect: bool | None = None
    media_type: str | None = None  # default application/json


Handler = Callable[["SandboxState", Incoming], Reply]


@dataclass(frozen=True)
class ConcurrencyLimit:
    """At most `limit` calls in flight under `key` at once; the call over it gets `refusal`."""

    key: Hashable
    limit: int
    refusal: Reply


@dataclass(frozen=True)
class ProviderSpec:
    """What a provider answers when no endpoint matches, and the body of an injected fault."""

    name: str
    unknown_endpoint: Handler
    fault_body: Callable[[int], Any]
    # Content type of injected faults (Mailchimp answers errors as application/problem+json).
    fault_media_type: str | None = None
    # A limit on simultaneous calls (Mailchimp: 10 connections per API key), held while a call is served.
    concurrency: Callable[[Incoming], ConcurrencyLimit | None] | None = None


_ENDPOINTS: dict[tuple[str, str], Handler] = {}
_PROVIDERS: dict[str, ProviderSpec] = {}
# Per-minute limits a provider documents, by (provider, endpoint or "*" for a limit every endpoint of one
# key shares); `POST /_sandbox/rate-limits` overrides them per sandbox.
_RATE_LIMITS: dict[tuple[str, str], float] = {}


def register_provider(spec: ProviderSpec) -> ProviderSpec:
    _PROVIDERS[spec.name] = spec
    return spec


def endpoint(provider: str, name: str) -> Callable[[Handler], Handler]:
    """Register the handler playing `name` of `provider` (the key faults and recorded calls use)."""

    def register(handler: Handler) -> Handler:
        _ENDPOINTS[(provider, name)] = handler
        return handler

    return register


def registered_endpoints() -> list[tuple[str, str]]:
    return sorted(_ENDPOINTS)


def declare_rate_limit(provider: str, name: str, per_minute: float) -> None:
    """The documented per-minute limit of `name` ("*": shared by every endpoint) of `provider`."""
    _RATE_LIMITS[(provider, name)] = per_minute


def declared_rate_limits() -> dict[tuple[str, str], float]:
    return dict(_RATE_LIMITS)


@dataclass(frozen=True)
class Quota:
    """A per-minute limit as a token bucket: a full bucket holds `burst` calls (the documented limit,
    or the lower limit set) and refills at `per_minute` / 60 a second. At the documented limit, a
    bucket that ran dry is full again a minute later; raised by a factor, that minute shrinks by it."""

    per_minute: float
    burst: int

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0

    @property
    def refill_seconds(self) -> float:
        """How long an empty bucket takes to fill (Luma's "blocked for the rest of the minute")."""
        return self.burst / self.per_second


@dataclass
class Fault:
    """After `after` more calls served normally, the next `count` calls (-1: all until cleared) wait
    `latency` s, then get `status` if non-zero (`after` stages an outage in the middle of a run)."""

    provider: str
    endpoint: str
    status: int = 500
    count: int = 1
    retry_after: str | None = None
    latency: float = 0.0
    body: Any = None
    after: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "endpoint": self.endpoint,
            "status": self.status,
            "count": self.count,
            "retry_after": self.retry_after,
            "latency": self.latency,
            "body": self.body,
            "after": self.after,
        }


@dataclass
class _TokenBucket:
    tokens: float
    updated_at: float


class SandboxState:
    """Calls, faults, rate-limit buckets and what providers hold; every method is safe from any thread
    (one lock, re-entrant so a handler may take tokens while it holds the providers' records)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._calls: list[dict[str, Any]] = []
        self._faults: dict[tuple[str, str], list[Fault]] = {}
        self._buckets: dict[Hashable, _TokenBucket] = {}
        self._seeded: dict[Hashable, tuple[list[Any], dict[str, Any]]] = {}
        self._held: dict[Hashable, Any] = {}
        self._in_flight: dict[Hashable, int] = {}
        self._max_in_flight: dict[Hashable, int] = {}
        self._rate_limits: dict[tuple[str, str], float] = {}
        self._last_ts_micros = 0

    # faults -----------------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        """Faults for one endpoint queue up in the order they were added."""
        with self._lock:
            self._faults.setdefault((fault.provider, fault.endpoint), []).append(fault)

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [fault.as_dict() for queue in self._faults.values() for fault in queue]

    def clear_faults(self) -> int:
        with self._lock:
            cleared = sum(len(queue) for queue in self._faults.values())
            self._faults.clear()
            return cleared

    def take_fault(self, provider: str, name: str) -> Fault | None:
        """The fault this call gets, used up atomically so concurrent calls never share one."""
        with self._lock:
            queue = self._faults.get((provider, name))
            if not queue:
                return None
            fault = queue[0]
            if fault.after > 0:  # not yet: this call is served normally
                fault.after -= 1
                return None
            if fault.count > 0:
                fault.count -= 1
                if fault.count == 0:
                    queue.pop(0)
            return Fault(**fault.as_dict())

    # calls ------------------------------------------------------------------------------------------

    def record(self, call: dict[str, Any]) -> None:
        with self._lock:
            self._calls.append(call)

    def call_counts(self, provider: str | None = None, name: str | None = None) -> dict[str, Any]:
        """`{"calls": n, "by_endpoint": {name: n}, "by_status": {"200": n, ...}}` without the calls
        themselves (a benchmark's 50,000 calls are too many to list just to count them)."""
        by_endpoint: dict[str, int] = {}
        by_status: dict[str, int] = {}
        with self._lock:
            chosen = [
                call
                for call in self._calls
                if (provider is None or call["provider"] == provider)
                and (name is None or call["endpoint"] == name)
            ]
            for call in chosen:
                by_endpoint[call["endpoint"]] = by_endpoint.get(call["endpoint"], 0) + 1
                status = str(call["status"])
                by_status[status] = by_status.get(status, 0) + 1
        return {"calls": len(chosen), "by_endpoint": by_endpoint, "by_status": by_status}

    def calls(self, provider: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        """Oldest first, in the order the calls were answered (a delayed call lands when it ends)."""
        with self._lock:
            return [
                call
                for call in self._calls
                if (provider is None or call["provider"] == provider)
                and (name is None or call["endpoint"] == name)
            ]

    def reset_calls(self) -> int:
        """Forget recorded calls, rate-limit state and the most simultaneous calls seen (faults stay:
        they have their own reset; calls in flight stay counted until they end)."""
        with self._lock:
            cleared = len(self._calls)
            self._calls.clear()
            self._buckets.clear()
            self._max_in_flight = {key: n for key, n in self._in_flight.items() if n}
            return cleared

    # concurrency ------------------------------------------------------------------------------------

    def enter(self, key: Hashable) -> int:
        """Count one more call in flight under `key`; return how many are in flight now."""
        with self._lock:
            now = self._in_flight.get(key, 0) + 1
            self._in_flight[key] = now
            self._max_in_flight[key] = max(now, self._max_in_flight.get(key, 0))
            return now

    def leave(self, key: Hashable) -> None:
        with self._lock:
            self._in_flight[key] = max(0, self._in_flight.get(key, 0) - 1)

    def concurrency(self, provider: str | None = None) -> dict[str, int]:
        """Calls in flight now and the most seen at once (since the last reset), for the busiest key
        of `provider` (concurrency keys are tuples that start with the provider's name)."""

        def ours(key: Hashable) -> bool:
            return provider is None or (isinstance(key, tuple) and key[:1] == (provider,))

        with self._lock:
            return {
                "in_flight": max((n for k, n in self._in_flight.items() if ours(k)), default=0),
                "max_in_flight": max(
                    (n for k, n in self._max_in_flight.items() if ours(k)), default=0
                ),
            }

    # rate limits and ids ----------------------------------------------------------------------------

    def take_token(self, key: Hashable, *, burst: int, per_second: float) -> float:
        """0.0 when a token was taken from `key`'s bucket, else the seconds until one is available."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.setdefault(key, _TokenBucket(float(burst), now))
            bucket.tokens = min(
                float(burst), bucket.tokens + (now - bucket.updated_at) * per_second
            )
            bucket.updated_at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / per_second

    def tokens_left(self, key: Hashable, *, burst: int, per_second: float) -> float:
        """The tokens in `key`'s bucket now, without taking one (for X-RateLimit-Remaining headers)."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return float(burst)
            elapsed = self._clock() - bucket.updated_at
            return max(0.0, min(float(burst), bucket.tokens + elapsed * per_second))

    def penalize(self, key: Hashable, *, seconds: float, per_second: float) -> float:
        """Empty `key`'s bucket so its next token is `seconds` away (a provider's penalty box)."""
        with self._lock:
            self._buckets[key] = _TokenBucket(1.0 - seconds * per_second, self._clock())
        return seconds

    def quota(self, provider: str, name: str) -> Quota:
        """The per-minute limit `name` of `provider` has now (documented, unless set at run time)."""
        documented = _RATE_LIMITS[(provider, name)]
        with self._lock:
            per_minute = self._rate_limits.get((provider, name), documented)
        return Quota(per_minute, max(1, math.floor(min(per_minute, documented))))

    def set_rate_limit(self, provider: str, name: str, per_minute: float) -> Quota:
        """Change a limit; the buckets it fills start again full (keys begin with (provider, name))."""
        with self._lock:
            self._rate_limits[(provider, name)] = per_minute
            for key in [
                k for k in self._buckets if isinstance(k, tuple) and k[:2] == (provider, name)
            ]:
                del self._buckets[key]
        return self.quota(provider, name)

    def rate_limits(self) -> list[dict[str, Any]]:
        """Every declared limit as `{"provider", "endpoint", "per_minute", "documented"}`."""
        with self._lock:
            overrides = dict(self._rate_limits)
        return [
            {
                "provider": provider,
                "endpoint": name,
                "per_minute": overrides.get((provider, name), documented),
                "documented": documented,
            }
            for (provider, name), documented in sorted(_RATE_LIMITS.items())
        ]

    def reset_rate_limits(self) -> int:
        """Back to the documented limits, with full buckets; return how many limits had been changed."""
        with self._lock:
            changed = list(self._rate_limits)
            self._rate_limits.clear()
            for key in [
                k for k in self._buckets if isinstance(k, tuple) and tuple(k[:2]) in changed
            ]:
                del self._buckets[key]
            return len(changed)

    # provider-held data -----------------------------------------------------------------------------

    def seed(self, key: Hashable, items: list[Any], **options: Any) -> int:
        """Append `items` to what the provider holds under `key` (options replace earlier ones given);
        return how many items it holds now. Seeded data survives `reset_calls`, as at the provider."""
        with self._lock:
            held, held_options = self._seeded.setdefault(key, ([], {}))
            held.extend(items)
            held_options.update(options)
            return len(held)

    def seeded(self, key: Hashable) -> tuple[list[Any], dict[str, Any]] | None:
        """A copy of the items and options held under `key`, or None when nothing was ever seeded."""
        with self._lock:
            if key not in self._seeded:
                return None
            items, options = self._seeded[key]
            return list(items), dict(options)

    @contextmanager
    def holding(self) -> Iterator[dict[Hashable, Any]]:
        """The records providers keep and change (Stripe customers, Mailchimp members, idempotency
        results), under the state's lock for the whole block. Like seeded data they survive
        `reset_calls`; each provider keys its own records with tuples that start with its name."""
        with self._lock:
            yield self._held

    def next_ts(self) -> str:
        """A Slack-style message timestamp, "<unix>.<6 digits>", unique and increasing."""
        with self._lock:
            micros = max(time.time_ns() // 1000, self._last_ts_micros + 1)
            self._last_ts_micros = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


# ---------------------------------------------------------------------------------------------------
# Slack Web API (https://slack.com/api/{method}); see reference/providers.md section 3.5

SLACK_BOT_USER = "U0SANDBOXBOT"
SLACK_BOT_ID = "B0SANDBOXBOT"
SLACK_TEAM = "T0SANDBOX"
# chat.postMessage: about one message per second per channel, short bursts allowed.
SLACK_POST_BURST = 5
SLACK_POST_PER_SECOND = 1.0
_SLACK_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{8,}")


def _slack_error(error: str, status: int = 200, **headers: str) -> Reply:
    """Slack answers most errors with HTTP 200 and `ok: false`."""
    return Reply(status, {"ok": False, "error": error}, dict(headers))


def _slack_auth(call: Incoming) -> Reply | None:
    scheme, _, token = call.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _slack_error("not_authed")
    if not token.strip().startswith("xoxb-"):
        return _slack_error("invalid_auth")
    return None


def slack_channel_id(channel: str) -> str:
    """Channel ids pass through; a name ("#ops") maps to a stable made-up id, as Slack answers ids."""
    if _SLACK_CHANNEL_ID.fullmatch(channel):
        return channel
    digest = hashlib.sha256(channel.lstrip("#").encode()).hexdigest()[:10].upper()
    return f"C{digest}"


@endpoint("slack", "chat.postMessage")
def slack_chat_post_message(state: SandboxState, call: Incoming) -> Reply:
    if call.body_error:
        return _slack_error(call.body_error)
    if (denied := _slack_auth(call)) is not None:
        return denied
    params = call.params
    channel = str(params.get("channel") or "").strip()
    if not channel:
        return _slack_error("channel_not_found")
    text = params.get("text")
    blocks = params.get("blocks")
    if isinstance(blocks, str):  # form-encoded requests carry blocks as a JSON string
        try:
            blocks = json.loads(blocks)
        except ValueError:
            return _slack_error("invalid_blocks_format")
    if blocks is not None and not isinstance(blocks, list):
        return _slack_error("invalid_blocks_format")
    if not text and not blocks:
        return _slack_error("no_text")
    channel_id = slack_channel_id(channel)
    wait = state.take_token(
        ("slack", "chat.postMessage", channel_id),
        burst=SLACK_POST_BURST,
        per_second=SLACK_POST_PER_SECOND,
    )
    if wait > 0:
        return _slack_error("ratelimited", 429, **{"Retry-After": str(max(1, math.ceil(wait)))})
    ts = state.next_ts()
    message: dict[str, Any] = {
        "type": "message",
        "text": text or "",
        "user": SLACK_BOT_USER,
        "bot_id": SLACK_BOT_ID,
        "team": SLACK_TEAM,
        "ts": ts,
    }
    if blocks:
        message["blocks"] = blocks
    if params.get("thread_ts"):
        message["thread_ts"] = str(params["thread_ts"])
    return Reply(200, {"ok": True, "channel": channel_id, "ts": ts, "message": message})


def _slack_unknown_method(_state: SandboxState, _call: Incoming) -> Reply:
    return _slack_error("unknown_method")


def _slack_fault_body(status: int) -> dict[str, Any]:
    return {"ok": False, "error": "ratelimited" if status == 429 else "fatal_error"}


_PROVIDERS["slack"] = ProviderSpec("slack", _slack_unknown_method, _slack_fault_body)


async def _slack_route(request: Request) -> Response:
    return await serve(request, "slack", request.path_params["method"])


# ---------------------------------------------------------------------------------------------------
# Airtable Web API (https://api.airtable.com/v0/...); see reference/providers.md section 6

# 5 requests per second per base, the webhooks API included; over it Airtable answers 429 and "you will
# need to wait 30 seconds before subsequent requests will succeed" (its rate-limit docs). Whether a
# Retry-After header comes with it is not documented: the sandbox sends the seconds left, and the client
# assumes the 30 s when it is absent.
AIRTABLE_BURST = 5
AIRTABLE_PER_SECOND = 5.0
AIRTABLE_PENALTY_SECONDS = 30.0
# Payloads per list-webhook-payloads page (Airtable's maximum is unconfirmed; 50 is commonly cited). A
# seeded webhook may set a smaller `page_size`, so tests page with a handful of payloads.
AIRTABLE_MAX_PAGE = 50


def _airtable_error(status: int, error_type: str, message: str, **headers: str) -> Reply:
    """Airtable's error shape: `{"error": {"type": ..., "message": ...}}`."""
    return Reply(status, {"error": {"type": error_type, "message": message}}, dict(headers))


def _airtable_auth(call: Incoming) -> Reply | None:
    scheme, _, token = call.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _airtable_error(401, "AUTHENTICATION_REQUIRED", "Authentication required")
    return None


def _airtable_rate_limit(state: SandboxState, base_id: str) -> Reply | None:
    """Take one of the base's 5 per second; the first call over the limit starts the 30 s penalty."""
    key = ("airtable", "base", base_id)
    wait = state.take_token(key, burst=AIRTABLE_BURST, per_second=AIRTABLE_PER_SECOND)
    if wait == 0:
        return None
    if wait <= 1 / AIRTABLE_PER_SECOND:  # just ran dry, not already in the penalty box
        wait = state.penalize(key, seconds=AIRTABLE_PENALTY_SECONDS, per_second=AIRTABLE_PER_SECOND)
    return _airtable_error(
        429,
        "TOO_MANY_REQUESTS",
        "You have made too many requests in a short period of time. Please retry your request later",
        **{"Retry-After": str(max(1, math.ceil(wait)))},
    )


def airtable_webhook_key(base_id: str, webhook_id: str) -> tuple[str, str, str, str]:
    """Where a webhook's payloads are held in the sandbox state."""
    return ("airtable", "webhook", base_id, webhook_id)


def _positive_int(value: str | None, default: int) -> int | None:
    if value is None:
        return default
    return int(value) if value.isdigit() and int(value) >= 1 else None


@endpoint("airtable", "list-webhook-payloads")
def airtable_list_webhook_payloads(state: SandboxState, call: Incoming) -> Reply:
    """GET /v0/bases/{baseId}/webhooks/{webhookId}/payloads?cursor=N&limit=M.

    Payloads are numbered from 1 in transaction order; the answer's `cursor` is the number of the next
    payload (unchanged when nothing is returned) and `mightHaveMore` says whether to ask again.
    """
    if (denied := _airtable_auth(call)) is not None:
        return denied
    base_id, webhook_id = call.path.get("base_id", ""), call.path.get("webhook_id", "")
    if (limited := _airtable_rate_limit(state, base_id)) is not None:
        return limited
    held = state.seeded(airtable_webhook_key(base_id, webhook_id))
    if held is None:
        return _airtable_error(404, "NOT_FOUND", "Could not find what you are looking for")
    payloads, options = held
    cursor = _positive_int(call.query.get("cursor"), 1)
    limit = _positive_int(call.query.get("limit"), AIRTABLE_MAX_PAGE)
    if cursor is None or limit is None or limit > AIRTABLE_MAX_PAGE:
        return _airtable_error(
            422, "INVALID_REQUEST_UNKNOWN", "cursor and limit must be positive integers"
        )
    size = min(limit, int(options.get("page_size", AIRTABLE_MAX_PAGE)))
    page = payloads[cursor - 1 : cursor - 1 + size]
    next_cursor = cursor + len(page)
    return Reply(
        200,
        {"payloads": page, "cursor": next_cursor, "mightHaveMore": next_cursor <= len(payloads)},
    )


def _airtable_unknown_endpoint(_state: SandboxState, _call: Incoming) -> Reply:
    return Reply(404, {"error": "NOT_FOUND"})


def _airtable_fault_body(status: int) -> dict[str, Any]:
    if status == 429:
        return {"error": {"type": "TOO_MANY_REQUESTS", "message": "Rate limit exceeded"}}
    if status >= 500:
        return {
            "error": {
                "type": "SERVER_ERROR",
                "message": "Try again. If the problem persists, contact support.",
            }
        }
    return {"error": {"type": "INVALID_REQUEST_UNKNOWN", "message": "Invalid request"}}


_PROVIDERS["airtable"] = ProviderSpec("airtable", _airtable_unknown_endpoint, _airtable_fault_body)


async def _airtable_payloads_route(request: Request) -> Response:
    path = {key: str(value) for key, value in request.path_params.items()}
    return await serve(request, "airtable", "list-webhook-payloads", path=path)


async def _airtable_unknown_route(request: Request) -> Response:
    return await serve(request, "airtable", str(request.path_params["rest"]))


# ---------------------------------------------------------------------------------------------------
# The pipeline every provider endpoint goes through


async def _read_body(request: Request) -> tuple[dict[str, Any], str | None]:
    """The body as a dict (JSON object or form fields), or a Slack-style error code naming the fault."""
    raw = await request.body()
    if not raw:
        return {}, None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    text = raw.decode("utf-8", errors="replace")
    if content_type == "application/json":
        try:
            data = json.loads(raw)
        except ValueError:
            return {"_raw": text[:2000]}, "invalid_json"
        if not isinstance(data, dict):
            return {"_json": data}, "invalid_json"
        return data, None
    if content_type in ("application/x-www-form-urlencoded", ""):
        return dict(parse_qsl(text, keep_blank_values=True)), None
    # multipart (file uploads) is not played yet: python-multipart is not a dependency
    return {"_raw": text[:2000]}, "invalid_form_data"


def _took_effect(reply: Reply) -> bool:
    if not 200 <= reply.status < 300:
        return False
    if reply.effect is not None:
        return reply.effect
    return not (isinstance(reply.body, dict) and reply.body.get("ok") is False)


def _run_handler(state: SandboxState, call: Incoming) -> Reply:
    handler = _ENDPOINTS.get((call.provider, call.endpoint))
    if handler is None:
        return _PROVIDERS[call.provider].unknown_endpoint(state, call)
    try:
        return handler(state, call)
    except Exception:  # a sandbox bug: answer and record it rather than drop the call
        log.exception("sandbox handler failed", provider=call.provider, endpoint=call.endpoint)
        return Reply(500, {"ok": False, "error": "sandbox_handler_failed"})


async def _answer(state: SandboxState, call: Incoming) -> tuple[Reply, bool, bool]:
    """(reply, served by the real handler, a fault was applied)."""
    fault = state.take_fault(call.provider, call.endpoint)
    if fault is None:
        return _run_handler(state, call), True, False
    if fault.latency > 0:
        await anyio.sleep(fault.latency)
    if not fault.status:
        return _run_handler(state, call), True, True
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
    spec = _PROVIDERS[call.provider]
    body = fault.body if fault.body is not None else spec.fault_body(fault.status)
    return Reply(fault.status, body, headers, media_type=spec.fault_media_type), False, True


async def _answer_within_limit(state: SandboxState, call: Incoming) -> tuple[Reply, bool, bool]:
    """`_answer`, counted among the calls in flight when the provider limits simultaneous calls."""
    spec = _PROVIDERS[call.provider]
    limit = spec.concurrency(call) if spec.concurrency is not None else None
    if limit is None:
        return await _answer(state, call)
    try:
        if state.enter(limit.key) > limit.limit:
            return limit.refusal, False, False
        return await _answer(state, call)
    finally:
        state.leave(limit.key)


def _response(reply: Reply) -> Response:
    if reply.body is None:
        return Response(status_code=reply.status, headers=reply.headers)
    return JSONResponse(
        reply.body,
        status_code=reply.status,
        headers=reply.headers,
        media_type=reply.media_type or "application/json",
    )


async def serve(
    request: Request, provider: str, name: str, *, path: dict[str, str] | None = None
) -> Response:
    """Parse, fault, answer and record one call to `name` of `provider` (every provider route ends here)."""
    state: SandboxState = request.app.state.sandbox
    received_at = time.time()
    body, body_error = await _read_body(request)
    call = Incoming(
        provider=provider,
        endpoint=name,
        method=request.method,
        headers={key.lower(): value for key, value in request.headers.items()},
        query=dict(request.query_params),
        body=body,
        body_error=body_error,
        path=path or {},
    )
    # Shielded: a client that gives up during injected latency must not stop the work or its record
    # (a SIGKILLed worker's call still takes effect once, as it would at the real provider).
    with anyio.CancelScope(shield=True):
        reply, by_handler, faulted = await _answer_within_limit(state, call)
        effect = by_handler and _took_effect(reply)
        state.record(
            {
                "provider": provider,
                "endpoint": name,
                "method": call.method,
                "path": call.path,
                "query": call.query,
                "body": call.body,
                "headers": {k: v for k, v in call.headers.items() if k != "authorization"},
                "status": reply.status,
                "reply_headers": dict(reply.headers),
                "effect": effect,
                "fault": faulted,
                "received_at": received_at,
            }
        )
    log.info(
        "sandbox call",
        provider=provider,
        endpoint=name,
        status=reply.status,
        effect=effect,
        fault=faulted,
    )
    return _response(reply)


# ---------------------------------------------------------------------------------------------------
# Control API


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


def _fault_from_json(data: Any) -> Fault | str:
    """A validated fault, or what is wrong with the request (typos must not silently do nothing)."""
    if not isinstance(data, dict):
        return "expected a JSON object"
    provider, name = data.get("provider"), data.get("endpoint")
    if not isinstance(provider, str) or not isinstance(name, str):
        return "provider and endpoint are required strings"
    if (provider, name) not in _ENDPOINTS:
        known = ", ".join(f"{p}/{e}" for p, e in registered_endpoints())
        return f"unknown endpoint {provider}/{name}; known: {known}"
    status = data.get("status", 500)
    if (
        not isinstance(status, int)
        or isinstance(status, bool)
        or not (status == 0 or 100 <= status <= 599)
    ):
        return "status must be 0 (latency only) or an HTTP status"
    count = data.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not (count >= 1 or count == -1):
        return "count must be a positive integer, or -1 for every call until cleared"
    latency = data.get("latency", 0.0)
    if not isinstance(latency, int | float) or isinstance(latency, bool) or latency < 0:
        return "latency must be a non-negative number of seconds"
    after = data.get("after", 0)
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        return "after must be a non-negative number of calls served normally first"
    retry_after = data.get("retry_after")
    if isinstance(retry_after, bool) or not isinstance(retry_after, int | float | str | None):
        return "retry_after must be a number of seconds"
    if isinstance(retry_after, float) and retry_after.is_integer():
        retry_after = int(retry_after)
    return Fault(
        provider=provider,
        endpoint=name,
        status=status,
        count=count,
        retry_after=None if retry_after is None else str(retry_after),
        latency=float(latency),
        body=data.get("body"),
        after=after,
    )


async def _post_fault(request: Request) -> JSONResponse:
    try:
        data = await request.json()
    except ValueError:
        return _bad_request("body must be JSON")
    fault = _fault_from_json(data)
    if isinstance(fault, str):
        return _bad_request(fault)
    request.app.state.sandbox.add_fault(fault)
    return JSONResponse({"fault": fault.as_dict()}, status_code=201)


async def _list_faults(request: Request) -> JSONResponse:
    return JSONResponse({"faults": request.app.state.sandbox.faults()})


async def _clear_faults(request: Request) -> JSONResponse:
    return JSONResponse({"cleared": request.app.state.sandbox.clear_faults()})


async def _list_calls(request: Request) -> JSONResponse:
    state: SandboxState = request.app.state.sandbox
    calls = state.calls(request.query_params.get("provider"), request.query_params.get("endpoint"))
    return JSONResponse({"calls": calls})


async def _reset_calls(request: Request) -> JSONResponse:
    return JSONResponse({"cleared": request.app.state.sandbox.reset_calls()})


async def _count_calls(request: Request) -> JSONResponse:
    """`{"calls", "by_endpoint", "by_status"}` for `?provider=&endpoint=`."""
    state: SandboxState = request.app.state.sandbox
    query = request.query_params
    return JSONResponse(state.call_counts(query.get("provider"), query.get("endpoint")))


def _rate_limit_from_json(data: Any) -> tuple[str, str, float] | str:
    if not isinstance(data, dict):
        return "expected a JSON object"
    provider, name, per_minute = data.get("provider"), data.get("endpoint"), data.get("per_minute")
    if not isinstance(provider, str) or not isinstance(name, str):
        return "provider and endpoint are required strings"
    if (provider, name) not in _RATE_LIMITS:
        known = ", ".join(f"{p}/{e}" for p, e in sorted(_RATE_LIMITS))
        return f"no rate limit {provider}/{name}; known: {known}"
    if (
        not isinstance(per_minute, int | float)
        or isinstance(per_minute, bool)
        or not math.isfinite(per_minute)
        or per_minute <= 0
    ):
        return "per_minute must be a positive number"
    return provider, name, float(per_minute)


async def _set_rate_limit(request: Request) -> JSONResponse:
    """`{"provider", "endpoint", "per_minute"}`: the limit until changed again or reset."""
    try:
        data = await request.json()
    except ValueError:
        return _bad_request("body must be JSON")
    parsed = _rate_limit_from_json(data)
    if isinstance(parsed, str):
        return _bad_request(parsed)
    provider, name, per_minute = parsed
    state: SandboxState = request.app.state.sandbox
    quota = state.set_rate_limit(provider, name, per_minute)
    body = {"provider": provider, "endpoint": name, "per_minute": quota.per_minute}
    return JSONResponse({**body, "burst": quota.burst})


async def _list_rate_limits(request: Request) -> JSONResponse:
    return JSONResponse({"rate_limits": request.app.state.sandbox.rate_limits()})


async def _reset_rate_limits(request: Request) -> JSONResponse:
    return JSONResponse({"reset": request.app.state.sandbox.reset_rate_limits()})


async def _concurrency(request: Request) -> JSONResponse:
    """`{"in_flight", "max_in_flight"}` for `?provider=` (Mailchimp counts calls per API key)."""
    state: SandboxState = request.app.state.sandbox
    return JSONResponse(state.concurrency(request.query_params.get("provider")))


async def _seed_airtable_payloads(request: Request) -> JSONResponse:
    """`{"base_id", "webhook_id", "payloads": [...], "page_size"?: N}`: payloads the webhook will list."""
    try:
        data = await request.json()
    except ValueError:
        return _bad_request("body must be JSON")
    if not isinstance(data, dict):
        return _bad_request("expected a JSON object")
    base_id, webhook_id, payloads = (
        data.get("base_id"),
        data.get("webhook_id"),
        data.get("payloads"),
    )
    if (
        not isinstance(base_id, str)
        or not base_id
        or not isinstance(webhook_id, str)
        or not webhook_id
    ):
        return _bad_request("base_id and webhook_id are required strings")
    if not isinstance(payloads, list) or not all(isinstance(p, dict) for p in payloads):
        return _bad_request("payloads must be a list of objects")
    options: dict[str, Any] = {}
    if "page_size" in data:
        page_size = data["page_size"]
        if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size < 1:
            return _bad_request("page_size must be a positive integer")
        options["page_size"] = page_size
    state: SandboxState = request.app.state.sandbox
    count = state.seed(airtable_webhook_key(base_id, webhook_id), payloads, **options)
    return JSONResponse(
        {"base_id": base_id, "webhook_id": webhook_id, "payloads": count}, status_code=201
    )


async def _health(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_sandbox_app() -> Starlette:
    """A fresh sandbox with its own state (tests may run several side by side)."""
    app = Starlette(
        routes=[
            Route("/_sandbox/health", _health, methods=["GET"]),
            Route("/_sandbox/faults", _post_fault, methods=["POST"]),
            Route("/_sandbox/faults", _list_faults, methods=["GET"]),
            Route("/_sandbox/faults", _clear_faults, methods=["DELETE"]),
            Route("/_sandbox/calls", _list_calls, methods=["GET"]),
            Route("/_sandbox/calls", _reset_calls, methods=["DELETE"]),
            Route("/_sandbox/calls/count", _count_calls, methods=["GET"]),
            Route("/_sandbox/concurrency", _concurrency, methods=["GET"]),
            Route("/_sandbox/rate-limits", _set_rate_limit, methods=["POST"]),
            Route("/_sandbox/rate-limits", _list_rate_limits, methods=["GET"]),
            Route("/_sandbox/rate-limits", _reset_rate_limits, methods=["DELETE"]),
            Route("/_sandbox/airtable/payloads", _seed_airtable_payloads, methods=["POST"]),
            Route("/slack/api/{method}", _slack_route, methods=["GET", "POST"]),
            Route(
                "/airtable/v0/bases/{base_id}/webhooks/{webhook_id}/payloads",
                _airtable_payloads_route,
                methods=["GET"],
            ),
            Route(
                "/airtable/{rest:path}",
                _airtable_unknown_route,
                methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            ),
            *_provider_module_routes(),
        ]
    )
    app.state.sandbox = SandboxState()
    return app


def _provider_module_routes() -> list[BaseRoute]:
    return [*stripe.ROUTES, *mailchimp.ROUTES, *sendgrid.ROUTES, *slack_users.ROUTES, *luma.ROUTES]


# The providers played in modules of their own register their endpoints when imported; they import this
# module's shapes, so they come last.
from workers.sandbox import luma, mailchimp, sendgrid, slack_users, stripe  # noqa: E402
