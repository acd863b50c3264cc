"""Hookfleet's one outbound Slack client: slack_sdk's WebClient with its errors sorted into workers.errors.

The client never retries by itself (`retry_handlers=[]`): the task-level retry policy is the single
retry policy, so a 429's `Retry-After` travels up in a `TransientError` instead of a sleep in here.

`SlackUsers` (the Slack sync job's reads) is the exception: a run makes hundreds of calls, so each one
waits for the fleet-wide limiter of its tier first (`users.list` Tier 2, `users.lookupByEmail` Tier
3), and a 429 or 5xx is retried inside the run (bounded, `workers.outbound_limits`) instead of
failing the whole run.
"""

from __future__ import annotations

import http.client
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from schemas.settings import Settings
from workers.errors import (
    ConfigurationError,
    PermanentError,
    TransientError,
    error_for_status,
    parse_retry_after,
)
from workers.outbound_limits import (
    DEFAULT_RETRY_AFTER_SECONDS,
    Limit,
    OutboundLimiter,
    RetryPolicy,
    call_with_limits,
)
from workers.provider_calls import record_provider_call

T = TypeVar("T")

# `ok: false` codes that Slack documents as "try again later" (all others are the caller's fault).
TRANSIENT_SLACK_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
DEFAULT_TIMEOUT_SECONDS = 10


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    """slack_sdk keeps header names as the server sent them (it only aliases Retry-After on 429)."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return str(value)
    return None


def error_for_response(method: str, response: SlackResponse) -> Exception:
    """Sort a failed Slack answer: HTTP status first (429, 5xx), then the `error` code of `ok: false`."""
    status = response.status_code
    data = response.data
    code = str(data.get("error") or "unknown") if isinstance(data, dict) else "non-JSON body"
    detail = f"slack {method}: {code[:200]}"
    if status >= 500:
        retry_after = parse_retry_after(_header(response.headers, "Retry-After"))
        return TransientError(f"slack answered {status}: {detail}", retry_after=retry_after)
    if status != 200:
        header = _header(response.headers, "Retry-After")
        if status == 429 and header is None:
            header = str(DEFAULT_RETRY_AFTER_SECONDS)
        return error_for_status("slack", status, header, detail)
    if code in TRANSIENT_SLACK_ERRORS:
        return TransientError(detail)
    return PermanentError(detail)


class SlackClient:
    """Built per use from Settings; the token is read only when a call needs it, and never logged."""

    def __init__(self, settings: Settings, *, timeout: int = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._token = settings.slack_bot_token
        self._base_url = settings.slack_api_base
        self._timeout = timeout

    def _web_client(self) -> WebClient:
        if self._token is None or not self._token.get_secret_value().strip():
            raise ConfigurationError("SLACK_BOT_TOKEN is not set; Slack calls are disabled")
        client = WebClient(
            token=self._token.get_secret_value(),
            base_url=self._base_url,
            timeout=self._timeout,
            retry_handlers=[],
        )
        # slack_sdk turns HTTP(S)_PROXY into an explicit proxy and then ignores NO_PROXY; honour it,
        # so a local sandbox is reached directly even where a proxy is configured.
        host = urlsplit(client.base_url).hostname or ""
        if client.proxy and urllib.request.proxy_bypass(host):
            client.proxy = None
        return client

    def post_message(
        self, channel: str, text: str, *, blocks: list[dict[str, Any]] | None = None
    ) -> str:
        """Post to `channel` (id or #name) and return the message's `ts` (its id in that channel)."""
        client = self._web_client()
        try:
            response = client.chat_postMessage(channel=channel, text=text, blocks=blocks)
        except SlackApiError as exc:
            record_provider_call("slack", exc.response.status_code)
            raise error_for_response("chat.postMessage", exc.response) from exc
        except (OSError, http.client.HTTPException) as exc:
            record_provider_call("slack", None)
            # urllib's URLError, socket timeouts, resets and half-read answers: Slack may come back.
            raise TransientError(f"slack unreachable: {type(exc).__name__}: {exc}") from exc
        record_provider_call("slack", response.status_code)
        ts = response.get("ts")
        if not isinstance(ts, str):
            raise PermanentError("slack chat.postMessage answered ok without a ts")
        return ts


USERS_PAGE_LIMIT = 200  # what Slack recommends for users.list (it clamps larger asks to 1000)
USERS_NOT_FOUND = frozenset({"users_not_found", "user_not_found"})


class SlackUsers:
    """The workspace's users, read under the fleet's Slack limits; `calls` counts HTTP requests."""

    def __init__(
        self,
        settings: Settings,
        limiter: OutboundLimiter,
        *,
        policy: RetryPolicy | None = None,
        timeout: int = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._client = SlackClient(settings, timeout=timeout)
        self._web = self._client._web_client()
        self._limiter = limiter
        self._tier2 = Limit("tier2", settings.slack_tier2_per_minute)
        self._tier3 = Limit("tier3", settings.slack_tier3_per_minute)
        self._policy = policy or RetryPolicy(
            attempts=settings.job_call_attempts,
            rate_limited_attempts=settings.job_rate_limited_attempts,
            backoff_seconds=settings.retry_backoff_seconds,
        )
        self.calls = 0

    def _call(self, method: str, limit: Limit, call: Callable[[], T]) -> T:
        def once() -> T:
            self.calls += 1
            try:
                result = call()
            except SlackApiError as exc:
                record_provider_call("slack", exc.response.status_code)
                raise
            except (OSError, http.client.HTTPException) as exc:
                record_provider_call("slack", None)
                raise TransientError(f"slack unreachable: {type(exc).__name__}: {exc}") from exc
            record_provider_call("slack", 200)
            return result

        def sorted_errors() -> T:
            try:
                return once()
            except SlackApiError as exc:
                raise error_for_response(method, exc.response) from exc

        return call_with_limits(
            self._limiter, limit, sorted_errors, policy=self._policy, what=method
        )

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        """Every user of the workspace (bots and deleted users included), one `users.list` page of
        at most 200 at a time."""
        cursor = ""
        while True:
            response = self._call(
                "users.list",
                self._tier2,
                partial(self._web.users_list, cursor=cursor or None, limit=USERS_PAGE_LIMIT),
            )
            members = response.get("members")
            if not isinstance(members, list):
                raise PermanentError("slack users.list answered ok without members")
            yield [member for member in members if isinstance(member, dict)]
            metadata = response.get("response_metadata") or {}
            cursor = str(metadata.get("next_cursor") or "") if isinstance(metadata, dict) else ""
            if not cursor:
                return

    def lookup_by_email(self, email: str) -> dict[str, Any] | None:
        """The user with this email (Slack matches it case-insensitively), or None."""

        def lookup() -> dict[str, Any] | None:
            try:
                response = self._web.users_lookupByEmail(email=email)
            except SlackApiError as exc:
                data = exc.response.data
                if (
                    exc.response.status_code == 200
                    and isinstance(data, dict)
                    and data.get("error") in USERS_NOT_FOUND
                ):
                    return None  # an answer (HTTP 200), counted as one by `_call`
                raise
            user = response.get("user")
            if not isinstance(user, dict):
                raise PermanentError("slack users.lookupByEmail answered ok without a user")
            return user

        return self._call("users.lookupByEmail", self._tier3, lookup)
