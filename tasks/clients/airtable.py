"""Hookfleet's one outbound Airtable client: pyairtable's `Api` with its errors sorted into workers.errors.

pyairtable builds the URLs under AIRTABLE_API_BASE (`endpoint_url`, so the sandbox can stand in) and
holds the authenticated session. Its `Webhook.payloads()` iterator is not used: it needs a list-webhooks
call first to build the `Webhook`, turns payloads into models (we store Airtable's JSON as sent) and runs
through every page in one go, where the sync task wants one page at a time so the cursor it stores
advances with what it has stored.

The client never retries by itself (`retry_strategy=False`): the task-level retry policy is the single
one, so a 429 travels up as a `TransientError` carrying the wait. Airtable allows 5 requests per second
per base, the webhooks API included, and over it answers 429 and refuses the base for 30 seconds
(https://airtable.com/developers/web/api/webhooks-overview, "Rate limits";
https://support.airtable.com/docs/managing-api-call-limits-in-airtable). A 429 without `Retry-After`
(the docs do not promise one) is therefore retried after those 30 s, and calls from one process are
spaced to stay under the limit. Workers in other processes are not coordinated here: the 429 path covers them.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from pyairtable import Api

from schemas.settings import Settings
from workers.errors import ConfigurationError, PermanentError, TransientError, error_for_status
from workers.metrics import RATE_LIMIT_WAIT_SECONDS, RATE_LIMIT_WAITS
from workers.provider_calls import record_provider_call

# (connect, read) seconds; well inside the task's soft time limit.
DEFAULT_TIMEOUT_SECONDS = (5, 20)
REQUESTS_PER_SECOND_PER_BASE = 5
# How long Airtable refuses a base after a 429, per its rate-limit docs.
RATE_LIMIT_PENALTY_SECONDS = 30
# Airtable ids are a three-letter prefix and 14 letters or digits; anything else never reaches a URL.
_AIRTABLE_ID = re.compile(r"[A-Za-z]{3}[A-Za-z0-9]{14}")


@dataclass(frozen=True)
class PayloadPage:
    """One answer of list-webhook-payloads: the payloads as Airtable sent them, and where to go next."""

    payloads: list[dict[str, Any]]
    cursor: int  # the number of the next payload (unchanged when no payload came back)
    might_have_more: bool


class BasePacer:
    """Spaces this process's calls to one base so they stay under Airtable's per-base rate."""

    def __init__(
        self,
        per_second: float = REQUESTS_PER_SECOND_PER_BASE,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_at: dict[str, float] = {}

    def wait(self, base_id: str) -> float:
        """Sleep until a call to `base_id` is due; return the seconds slept."""
        with self._lock:
            now = self._clock()
            due = max(now, self._next_at.get(base_id, now))
            self._next_at[base_id] = due + self._interval
        delay = due - now
        if delay > 0:
            self._sleep(delay)
        return delay


_PACER = BasePacer()


def _record_answer(response: requests.Response, *_: Any, **__: Any) -> None:
    record_provider_call("airtable", response.status_code)


def _error_detail(response: requests.Response) -> str:
    """Airtable's `{"error": {"type", "message"}}` (or `{"error": "NOT_FOUND"}`), never the request."""
    try:
        body = response.json()
    except ValueError:
        return response.reason or "non-JSON error body"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"{error.get('type', 'UNKNOWN')}: {error.get('message', '')}".strip()
    return str(error or body)[:300]


def error_for_response(response: requests.Response) -> Exception:
    """429 and 5xx are transient (429 waits Airtable's 30 s unless told otherwise); other 4xx permanent."""
    retry_after = response.headers.get("Retry-After")
    if response.status_code == 429 and retry_after is None:
        retry_after = str(RATE_LIMIT_PENALTY_SECONDS)
    return error_for_status("airtable", response.status_code, retry_after, _error_detail(response))


def _page(data: Any) -> PayloadPage:
    if not isinstance(data, dict):
        raise PermanentError("airtable list-webhook-payloads answered a non-object")
    payloads, cursor, more = data.get("payloads"), data.get("cursor"), data.get("mightHaveMore")
    if (
        not isinstance(payloads, list)
        or not all(isinstance(payload, dict) for payload in payloads)
        or not isinstance(cursor, int)
        or isinstance(cursor, bool)
        or not isinstance(more, bool)
    ):
        raise PermanentError("airtable list-webhook-payloads answered an unexpected shape")
    return PayloadPage(payloads=payloads, cursor=cursor, might_have_more=more)


class AirtableClient:
    """Built per use from Settings; the token is read only when a call needs it, and never logged."""

    def __init__(
        self,
        settings: Settings,
        *,
        timeout: tuple[int, int] = DEFAULT_TIMEOUT_SECONDS,
        pacer: BasePacer = _PACER,
    ) -> None:
        self._token = settings.airtable_api_key
        self._endpoint_url = settings.airtable_api_base.rstrip("/")
        self._timeout = timeout
        self._pacer = pacer

    def _api(self) -> Api:
        if self._token is None or not self._token.get_secret_value().strip():
            raise ConfigurationError("AIRTABLE_API_KEY is not set; Airtable calls are disabled")
        api = Api(
            self._token.get_secret_value(),
            timeout=self._timeout,
            retry_strategy=False,
            endpoint_url=self._endpoint_url,
        )
        # Every HTTP answer counts, whatever pyairtable then makes of it.
        api.session.hooks["response"].append(_record_answer)
        return api

    def list_webhook_payloads(
        self, base_id: str, webhook_id: str, *, cursor: int, limit: int | None = None
    ) -> PayloadPage:
        """`GET /v0/bases/{baseId}/webhooks/{webhookId}/payloads?cursor=N`: one page from `cursor`."""
        for value in (base_id, webhook_id):
            if not _AIRTABLE_ID.fullmatch(value):
                raise PermanentError(f"not an Airtable id: {value[:40]!r}")
        api = self._api()
        url = api.build_url("bases", base_id, "webhooks", webhook_id, "payloads")
        params: dict[str, Any] = {"cursor": cursor}
        if limit is not None:
            params["limit"] = limit
        waited = self._pacer.wait(base_id)
        if waited > 0:
            RATE_LIMIT_WAITS.labels(provider="airtable").inc()
            RATE_LIMIT_WAIT_SECONDS.labels(provider="airtable").inc(waited)
        try:
            data = api.request("GET", url, params=params)
        except requests.HTTPError as exc:
            if exc.response is None:
                raise TransientError(f"airtable answered no response: {exc}") from exc
            raise error_for_response(exc.response) from exc
        except requests.exceptions.InvalidJSONError as exc:
            raise PermanentError("airtable list-webhook-payloads answered non-JSON") from exc
        except requests.RequestException as exc:
            record_provider_call("airtable", None)
            # Connection refused or reset, timeouts: Airtable may well answer the next attempt.
            raise TransientError(
                f"airtable unreachable: {type(exc).__name__}: {str(exc)[:200]}"
            ) from exc
        finally:
            api.session.close()
        return _page(data)
