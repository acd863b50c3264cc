"""Hookfleet's one outbound Mailchimp client: the Marketing API v3 list members over `requests`, its
errors sorted into workers.errors.

Mailchimp limits each API key to 10 simultaneous connections (a concurrency limit, not a rate) and
answers the 11th with 429 (https://mailchimp.com/developer/marketing/docs/fundamentals/). So calls from
one process share a `BoundedSemaphore(10)` per API key, held only while a request is in flight, and the
session's connection pool keeps at most 10 connections. Workers in other processes are not coordinated
here: their 429s are waited out. A 429 whose `Retry-After` is at most 5 s (no header: 1 s, since
connections free up quickly) is slept through and retried up to 3 times inside the call; a longer wait,
or a 4th 429, raises TransientError(retry_after) so the task retries later. No other answer is retried
in here: the task-level retry policy is the single one.

The official `mailchimp_marketing` SDK is not used: it cannot share a connection pool or a semaphore,
its default timeout is 120 s and it is untyped. MAILCHIMP_API_BASE points the client elsewhere (the
provider sandbox: `<sandbox>/mailchimp/3.0`); unset, it is `https://<dc>.api.mailchimp.com/3.0` from the
key's `-<dc>` suffix.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from schemas.settings import Settings
from workers.errors import (
    ConfigurationError,
    PermanentError,
    TransientError,
    error_for_status,
)
from workers.metrics import RATE_LIMIT_WAIT_SECONDS, RATE_LIMIT_WAITS
from workers.provider_calls import record_provider_call

MAX_CONNECTIONS = 10  # per API key, Mailchimp's limit
SHORT_WAIT_MAX_SECONDS = 5.0  # a 429 asking for at most this long is waited out in the call
SHORT_WAIT_RETRIES = 3
DEFAULT_RETRY_AFTER_SECONDS = 1.0  # Mailchimp documents no Retry-After on its 429
# How long a call waits for one of the process's 10 connections before giving up for a task retry.
SLOT_TIMEOUT_SECONDS = 30.0
DEFAULT_TIMEOUT_SECONDS = (5.0, 30.0)  # (connect, read); the official SDK waits 120 s
_DATACENTER = re.compile(r"-([a-z]+[0-9]+)$")

_SLOTS_LOCK = threading.Lock()
_SLOTS: dict[str, threading.BoundedSemaphore] = {}


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id in a list: the MD5 hex of the lower-cased, stripped email."""
    return hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()


def connection_slots(api_key: str) -> threading.BoundedSemaphore:
    """The process-wide semaphore of one API key's 10 simultaneous connections."""
    fingerprint = hashlib.sha256(api_key.encode()).hexdigest()
    with _SLOTS_LOCK:
        slots = _SLOTS.get(fingerprint)
        if slots is None:
            slots = _SLOTS[fingerprint] = threading.BoundedSemaphore(MAX_CONNECTIONS)
        return slots


def api_base_for(api_key: str, api_base: str | None) -> str:
    """MAILCHIMP_API_BASE, or the key's data center: `...-us21` -> https://us21.api.mailchimp.com/3.0."""
    if api_base:
        return api_base.rstrip("/")
    match = _DATACENTER.search(api_key)
    if match is None:
        raise ConfigurationError(
            "MAILCHIMP_API_KEY has no -<dc> suffix and MAILCHIMP_API_BASE is not set"
        )
    return f"https://{match.group(1)}.api.mailchimp.com/3.0"


class _ShortWait(Exception):
    """A 429 worth waiting out inside the call; carries the error raised once the retries run out."""

    def __init__(self, error: TransientError | PermanentError, wait: float) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait = wait


def _wait_as_told(retry_state: RetryCallState) -> float:
    outcome = retry_state.outcome
    exc = outcome.exception() if outcome is not None else None
    wait = exc.wait if isinstance(exc, _ShortWait) else DEFAULT_RETRY_AFTER_SECONDS
    RATE_LIMIT_WAITS.labels(provider="mailchimp").inc()
    RATE_LIMIT_WAIT_SECONDS.labels(provider="mailchimp").inc(wait)
    return wait


def _problem_detail(response: requests.Response) -> str:
    """`title: detail` of Mailchimp's problem document (field errors named), never the request."""
    try:
        body = response.json()
    except ValueError:
        return response.reason or "non-JSON error body"
    if not isinstance(body, dict):
        return "unexpected error body"
    detail = f"{body.get('title', 'error')}: {body.get('detail', '')}".strip()
    errors = body.get("errors")
    if isinstance(errors, list):
        fields = [str(e.get("field")) for e in errors if isinstance(e, dict) and e.get("field")]
        if fields:
            detail += f" (fields: {', '.join(fields)})"
    return detail


def error_for_response(what: str, response: requests.Response) -> TransientError | PermanentError:
    """429 and 5xx transient (with Retry-After), other 4xx permanent."""
    retry_after = response.headers.get("Retry-After")
    if response.status_code == 429 and retry_after is None:
        retry_after = str(DEFAULT_RETRY_AFTER_SECONDS)
    error = error_for_status(
        "mailchimp", response.status_code, retry_after, f"{what}: {_problem_detail(response)}"
    )
    return (
        error if isinstance(error, TransientError | PermanentError) else PermanentError(str(error))
    )


class MailchimpClient:
    """Built from Settings; the API key is read only when a call needs it, and never logged.

    Holds one `requests.Session` (close it, or use the client as a context manager)."""

    def __init__(
        self,
        settings: Settings,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api_key = settings.mailchimp_api_key
        self._api_base = settings.mailchimp_api_base
        self._list_id = settings.mailchimp_list_id
        self._timeout = timeout
        self._sleep = sleep
        self._session: requests.Session | None = None

    def __enter__(self) -> MailchimpClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # plumbing ---------------------------------------------------------------------------------------

    def _key(self) -> str:
        if self._api_key is None or not self._api_key.get_secret_value().strip():
            raise ConfigurationError("MAILCHIMP_API_KEY is not set; Mailchimp calls are disabled")
        return self._api_key.get_secret_value().strip()

    def _member_url(self, email: str, suffix: str = "") -> str:
        key = self._key()
        if not self._list_id or not self._list_id.strip():
            raise ConfigurationError("MAILCHIMP_LIST_ID is not set; Mailchimp calls are disabled")
        base = api_base_for(key, self._api_base)
        return f"{base}/lists/{self._list_id.strip()}/members/{subscriber_hash(email)}{suffix}"

    def _http(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=MAX_CONNECTIONS)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.auth = ("hookfleet", self._key())
            self._session = session
        return self._session

    def _send_once(
        self, what: str, method: str, url: str, body: Mapping[str, Any] | None
    ) -> requests.Response:
        """One request in one of the key's 10 slots; a short 429 raises _ShortWait."""
        slots = connection_slots(self._key())
        if not slots.acquire(timeout=SLOT_TIMEOUT_SECONDS):
            raise TransientError(
                f"mailchimp {what}: all {MAX_CONNECTIONS} connections of this process stayed busy",
                retry_after=DEFAULT_RETRY_AFTER_SECONDS,
            )
        try:
            response = self._http().request(
                method, url, json=None if body is None else dict(body), timeout=self._timeout
            )
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
            raise ConfigurationError(f"MAILCHIMP_API_BASE is not a usable URL: {exc}") from exc
        except requests.RequestException as exc:
            record_provider_call("mailchimp", None)
            # Connection refused or reset, timeouts: Mailchimp may well answer the next attempt.
            raise TransientError(
                f"mailchimp unreachable: {type(exc).__name__}: {str(exc)[:200]}"
            ) from exc
        finally:
            slots.release()
        record_provider_call("mailchimp", response.status_code)
        if response.status_code == 429:
            error = error_for_response(what, response)  # a 429 without Retry-After waits 1 s
            wait = error.retry_after if isinstance(error, TransientError) else None
            if wait is not None and wait <= SHORT_WAIT_MAX_SECONDS:
                raise _ShortWait(error, wait)
        return response

    def _request(
        self, what: str, method: str, url: str, body: Mapping[str, Any] | None = None
    ) -> requests.Response:
        """The answer to one call, short 429s waited out; non-2xx answers come back to the caller."""
        retrying = Retrying(
            retry=retry_if_exception_type(_ShortWait),
            wait=_wait_as_told,
            stop=stop_after_attempt(1 + SHORT_WAIT_RETRIES),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(self._send_once, what, method, url, body)
        except _ShortWait as exc:
            raise exc.error from None

    def _expect_success(self, what: str, response: requests.Response) -> None:
        if not 200 <= response.status_code < 300:
            raise error_for_response(what, response)

    # calls ------------------------------------------------------------------------------------------

    def upsert_member(
        self,
        email: str,
        *,
        merge_fields: Mapping[str, Any],
        status_if_new: str = "subscribed",
    ) -> None:
        """`PUT /lists/{list}/members/{hash}`: add the member, or update its merge fields."""
        body = {
            "email_address": email.strip(),
            "status_if_new": status_if_new,
            "merge_fields": dict(merge_fields),
        }
        url = self._member_url(email)
        self._expect_success("set-list-member", self._request("set-list-member", "PUT", url, body))

    def set_tags(self, email: str, tags: Mapping[str, bool]) -> None:
        """`POST .../tags`: True adds (activates) a tag, False removes it; no tags, no call."""
        if not tags:
            return
        body = {
            "tags": [
                {"name": name, "status": "active" if active else "inactive"}
                for name, active in tags.items()
            ]
        }
        url = self._member_url(email, "/tags")
        self._expect_success(
            "update-list-member-tags", self._request("update-list-member-tags", "POST", url, body)
        )

    def change_email(self, old_email: str, new_email: str) -> None:
        """`PATCH` the member's email_address (it moves to the new hash). A retry after the change
        went through finds the old member gone and the new one there: that counts as done."""
        url = self._member_url(old_email)
        response = self._request(
            "update-list-member", "PATCH", url, {"email_address": new_email.strip()}
        )
        if response.status_code == 404:
            moved = self._request("get-list-member", "GET", self._member_url(new_email))
            if moved.status_code == 200:
                return
        self._expect_success("update-list-member", response)

    def delete_member(self, email: str) -> None:
        """`POST .../actions/delete-permanent`: erase the member (GDPR); already gone counts as done."""
        url = self._member_url(email, "/actions/delete-permanent")
        response = self._request("delete-list-member-permanent", "POST", url)
        if response.status_code == 404:
            return
        self._expect_success("delete-list-member-permanent", response)
