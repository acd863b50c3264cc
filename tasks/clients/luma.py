"""Hookfleet's one outbound Luma client: calendar events, guests pending approval, guest status.

Luma allows 200 requests a minute per API key, reads and writes together
(https://docs.luma.com/reference/rate-limits), and answers 429 with `Retry-After` past it. Every call
here takes a token from the fleet-wide bucket of that limit first (`workers.outbound_limits`), so all
worker processes together stay under it; a 429 that still comes blocks the key for every process for
`Retry-After` seconds and the call is tried again. 5xx answers and connection errors are retried
with backoff a bounded number of times; then the `TransientError` goes up to the job, which records
what it did. Other 4xx are `PermanentError`s. Each HTTP answer (or failure to get one) is counted
with `record_provider_call`.

LUMA_API_BASE points the client at the provider sandbox (`<sandbox>/luma`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx

from schemas.settings import Settings
from workers.errors import ConfigurationError, PermanentError, TransientError, error_for_status
from workers.outbound_limits import (
    DEFAULT_RETRY_AFTER_SECONDS,
    Limit,
    OutboundLimiter,
    RetryPolicy,
    call_with_limits,
)
from workers.provider_calls import record_provider_call

PROVIDER = "luma"
PAGE_LIMIT = 100  # Luma's largest page
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


@dataclass(frozen=True)
class LumaEvent:
    id: str
    name: str
    start_at: str


@dataclass(frozen=True)
class LumaGuest:
    id: str
    event_id: str
    email: str
    name: str
    approval_status: str


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "non-JSON error body"
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:200]
    return "error"


def error_for_response(what: str, response: httpx.Response) -> Exception:
    """429 and 5xx transient (a 429 always carries a wait, 1 s when Luma sends none), others permanent."""
    retry_after = response.headers.get("Retry-After")
    if response.status_code == 429 and retry_after is None:
        retry_after = str(DEFAULT_RETRY_AFTER_SECONDS)
    return error_for_status(
        PROVIDER, response.status_code, retry_after, f"{what}: {_message(response)}"
    )


class LumaClient:
    """Built from Settings and the fleet's limiter; close it (or use it as a context manager)."""

    def __init__(
        self,
        settings: Settings,
        limiter: OutboundLimiter,
        *,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if settings.luma_api_key is None or not settings.luma_api_key.get_secret_value().strip():
            raise ConfigurationError("LUMA_API_KEY is not set; Luma calls are disabled")
        self._limit = Limit("requests", settings.luma_requests_per_minute)
        self._limiter = limiter
        self._policy = policy or RetryPolicy(
            attempts=settings.job_call_attempts,
            rate_limited_attempts=settings.job_rate_limited_attempts,
            backoff_seconds=settings.retry_backoff_seconds,
        )
        self._http = httpx.Client(
            base_url=settings.luma_api_base.rstrip("/"),
            headers={"x-luma-api-key": settings.luma_api_key.get_secret_value()},
            timeout=DEFAULT_TIMEOUT,
            transport=transport,
        )
        self.calls = 0

    def __enter__(self) -> LumaClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        what = f"{method} {path}"

        def once() -> dict[str, Any]:
            self.calls += 1
            try:
                response = self._http.request(method, path, params=params, json=json)
            except httpx.TransportError as exc:
                record_provider_call(PROVIDER, None)
                raise TransientError(f"luma unreachable: {type(exc).__name__}: {exc}") from exc
            record_provider_call(PROVIDER, response.status_code)
            if response.status_code >= 300:
                raise error_for_response(what, response)
            try:
                body = response.json()
            except ValueError as exc:
                raise PermanentError(f"luma {what}: answered with a non-JSON body") from exc
            if not isinstance(body, dict):
                raise PermanentError(f"luma {what}: answered with a non-object body")
            return body

        return call_with_limits(self._limiter, self._limit, once, policy=self._policy, what=what)

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        cursor: str | None = None
        while True:
            page_params = {**params, "pagination_limit": PAGE_LIMIT}
            if cursor:
                page_params["pagination_cursor"] = cursor
            body = self._request("GET", path, params=page_params)
            entries = body.get("entries")
            if not isinstance(entries, list):
                raise PermanentError(f"luma GET {path}: answered without entries")
            yield [entry for entry in entries if isinstance(entry, dict)]
            cursor = body.get("next_cursor")
            if not body.get("has_more") or not cursor:
                return

    def upcoming_events(self, after: datetime) -> Iterator[LumaEvent]:
        """The calendar's events starting after `after`, soonest first."""
        params = {"after": after.isoformat(), "sort_column": "start_at", "sort_direction": "asc"}
        for page in self._pages("/v1/calendars/events/list", params):
            for entry in page:
                # The real API wraps each entry as {"api_id", "event": {...}}; the agreed shape is flat.
                event: dict[str, Any] = (
                    entry["event"] if isinstance(entry.get("event"), dict) else entry
                )
                yield LumaEvent(
                    id=str(event.get("id") or event.get("api_id")),
                    name=str(event.get("name") or ""),
                    start_at=str(event.get("start_at") or ""),
                )

    def pending_guests(self, event_id: str) -> Iterator[list[LumaGuest]]:
        """The event's guests pending approval, one page (at most 100) at a time."""
        params = {"event_id": event_id, "approval_status": "pending_approval"}
        for page in self._pages("/v1/events/guests/list", params):
            guests = []
            for entry in page:
                guest: dict[str, Any] = (
                    entry["guest"] if isinstance(entry.get("guest"), dict) else entry
                )
                guests.append(
                    LumaGuest(
                        id=str(guest.get("id") or guest.get("api_id")),
                        event_id=str(guest.get("event_id") or event_id),
                        email=str(guest.get("user_email") or guest.get("email") or ""),
                        name=str(guest.get("user_name") or guest.get("name") or ""),
                        approval_status=str(guest.get("approval_status") or ""),
                    )
                )
            yield guests

    def update_guest_status(
        self,
        event_id: str,
        guest_id: str,
        status: Literal["approved", "declined"],
        *,
        send_email: bool = True,
    ) -> None:
        """Approve or decline one guest (setting the status it already has is harmless)."""
        self._request(
            "POST",
            "/v1/events/guests/update-status",
            json={
                "event_id": event_id,
                "guest_id": guest_id,
                "status": status,
                "send_email": send_email,
            },
        )
