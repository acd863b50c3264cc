"""Hookfleet's one outbound Slack client: slack_sdk's WebClient with its errors sorted into workers.errors.

The client never retries by itself (`retry_handlers=[]`): the task-level retry policy is the single
retry policy, so a 429's `Retry-After` travels up in a `TransientError` instead of a sleep in here.
"""

from __future__ import annotations

import http.client
import urllib.request
from collections.abc import Mapping
from typing import Any
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
        return error_for_status("slack", status, _header(response.headers, "Retry-After"), detail)
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
            raise error_for_response("chat.postMessage", exc.response) from exc
        except (OSError, http.client.HTTPException) as exc:
            # urllib's URLError, socket timeouts, resets and half-read answers: Slack may come back.
            raise TransientError(f"slack unreachable: {type(exc).__name__}: {exc}") from exc
        ts = response.get("ts")
        if not isinstance(ts, str):
            raise PermanentError("slack chat.postMessage answered ok without a ts")
        return ts
