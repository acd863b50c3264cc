"""The provider sandbox as a real process on a free port, with helpers for its control API."""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.support.processes import Service, free_port, wait_for_http
from workers.sandbox.sendgrid import recipients


class SandboxServer:
    """`python -m workers.sandbox.cli serve` on 127.0.0.1; use as a context manager or start/stop."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "workers.sandbox.cli", "serve", "--port", str(self.port)]
        self.service = Service("sandbox", argv, {}, workdir / f"sandbox-{self.port}.log")

    @property
    def slack_api_base(self) -> str:
        """What SLACK_API_BASE (Settings.slack_api_base) should be to reach this sandbox."""
        return f"{self.url}/slack/api/"

    @property
    def stripe_api_base(self) -> str:
        """STRIPE_API_BASE (Settings.stripe_api_base) for this sandbox."""
        return f"{self.url}/stripe"

    @property
    def mailchimp_api_base(self) -> str:
        """MAILCHIMP_API_BASE (Settings.mailchimp_api_base) for this sandbox."""
        return f"{self.url}/mailchimp/3.0"

    @property
    def sendgrid_api_base(self) -> str:
        """SENDGRID_API_BASE (Settings.sendgrid_api_base) for this sandbox."""
        return f"{self.url}/sendgrid"

    @property
    def luma_api_base(self) -> str:
        """LUMA_API_BASE (Settings.luma_api_base) for this sandbox; LUMA_API_KEY must look like
        Luma's keys (`secret-...`, e.g. workers.sandbox.luma.SANDBOX_API_KEY)."""
        return f"{self.url}/luma"

    def start(self) -> SandboxServer:
        self.service.start()
        wait_for_http(f"{self.url}/_sandbox/health", self.service)
        return self

    def stop(self) -> None:
        self.service.stop()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _request(self, method: str, path: str, *, timeout: float = 5, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.url}{path}", timeout=timeout, **kwargs)
        response.raise_for_status()
        return response.json()

    def calls(
        self, provider: str | None = None, endpoint: str | None = None
    ) -> list[dict[str, Any]]:
        """Recorded calls, oldest first (see workers.sandbox.server for the fields)."""
        params = {k: v for k, v in (("provider", provider), ("endpoint", endpoint)) if v}
        calls: list[dict[str, Any]] = self._request("GET", "/_sandbox/calls", params=params)[
            "calls"
        ]
        return calls

    def effects(self, provider: str, endpoint: str) -> list[dict[str, Any]]:
        """The calls that really took effect (served by the endpoint, 2xx, not `ok: false`)."""
        return [call for call in self.calls(provider, endpoint) if call["effect"]]

    def fault(
        self,
        provider: str,
        endpoint: str,
        *,
        status: int = 500,
        count: int = 1,
        retry_after: float | None = None,
        latency: float = 0.0,
        body: Any = None,
        after: int = 0,
    ) -> None:
        """After `after` more calls served normally, the next `count` calls (-1: all until cleared)
        wait `latency` s, then get `status` (0: none)."""
        fault: dict[str, Any] = {
            "provider": provider,
            "endpoint": endpoint,
            "status": status,
            "count": count,
            "latency": latency,
            "after": after,
        }
        if retry_after is not None:
            fault["retry_after"] = retry_after
        if body is not None:
            fault["body"] = body
        self._request("POST", "/_sandbox/faults", json=fault)

    def faults(self) -> list[dict[str, Any]]:
        """The faults not yet used up: a call takes its fault as it arrives, before any latency."""
        faults: list[dict[str, Any]] = self._request("GET", "/_sandbox/faults")["faults"]
        return faults

    def clear_faults(self) -> None:
        self._request("DELETE", "/_sandbox/faults")

    def reset(self) -> None:
        """Clear faults, recorded calls and rate-limit state, and put limits back to the documented
        ones (between tests). What providers hold (Stripe customers, Mailchimp members, idempotency
        keys, Slack users, Luma guests) stays, as at the provider: tests keep apart with ids of their
        own, or seed with `replace=True`."""
        self.clear_faults()
        self._request("DELETE", "/_sandbox/calls")
        self.reset_rate_limits()

    def forget_calls(self) -> None:
        """Forget recorded calls and rate-limit buckets only (faults and limits set stay)."""
        self._request("DELETE", "/_sandbox/calls")

    def call_counts(
        self, provider: str | None = None, endpoint: str | None = None
    ) -> dict[str, Any]:
        """`{"calls": n, "by_endpoint": {name: n}, "by_status": {"200": n, "429": n}}`."""
        params = {k: v for k, v in (("provider", provider), ("endpoint", endpoint)) if v}
        counts: dict[str, Any] = self._request("GET", "/_sandbox/calls/count", params=params)
        return counts

    # rate limits ----------------------------------------------------------------------------------

    def set_rate_limit(self, provider: str, endpoint: str, per_minute: float) -> None:
        """Change a provider's limit (a Slack method, or "*" for Luma's per-key limit) at run time."""
        self._request(
            "POST",
            "/_sandbox/rate-limits",
            json={"provider": provider, "endpoint": endpoint, "per_minute": per_minute},
        )

    def rate_limits(self) -> dict[tuple[str, str], float]:
        """The per-minute limit of every limited endpoint now, by (provider, endpoint)."""
        limits = self._request("GET", "/_sandbox/rate-limits")["rate_limits"]
        return {(limit["provider"], limit["endpoint"]): limit["per_minute"] for limit in limits}

    def reset_rate_limits(self) -> None:
        """Back to the providers' documented limits."""
        self._request("DELETE", "/_sandbox/rate-limits")

    def concurrency(self, provider: str) -> dict[str, int]:
        """`{"in_flight", "max_in_flight"}`: the most calls to `provider` under one key seen at once."""
        result: dict[str, int] = self._request(
            "GET", "/_sandbox/concurrency", params={"provider": provider}
        )
        return result

    # Stripe ---------------------------------------------------------------------------------------

    def seed_stripe_customer(
        self,
        customer_id: str | None = None,
        *,
        email: str | None = None,
        name: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A customer Stripe holds (replacing one with that id); returns the customer object."""
        seed: dict[str, Any] = {"email": email, "name": name, "metadata": metadata or {}}
        if customer_id is not None:
            seed["id"] = customer_id
        customer: dict[str, Any] = self._request("POST", "/_sandbox/stripe/customers", json=seed)
        return customer

    def stripe_customer(self, customer_id: str) -> dict[str, Any] | None:
        """The customer as Stripe holds it now, or None when there is no such customer."""
        response = httpx.get(f"{self.url}/_sandbox/stripe/customers/{customer_id}", timeout=5)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        customer: dict[str, Any] = response.json()
        return customer

    # Slack users -----------------------------------------------------------------------------------

    def seed_slack_users(self, users: list[dict[str, Any]], *, replace: bool = False) -> list[str]:
        """Users the workspace holds: full Slack user objects or `{"email", "deleted"?,
        "is_restricted"?, "is_ultra_restricted"?, "is_bot"?, "real_name"?}`; returns their ids."""
        ids: list[str] = self._request(
            "POST", "/_sandbox/slack/users", json={"users": users, "replace": replace}, timeout=60
        )["ids"]
        return ids

    def slack_users(self) -> list[dict[str, Any]]:
        """Every user the workspace holds, in id order."""
        users: list[dict[str, Any]] = self._request("GET", "/_sandbox/slack/users", timeout=60)[
            "users"
        ]
        return users

    # Luma -----------------------------------------------------------------------------------------

    def seed_luma_events(
        self, events: list[dict[str, Any]], *, replace: bool = False
    ) -> list[dict[str, Any]]:
        """Events (`{"id"?, "name"?, "start_at"?, "guests": [{"email", "approval_status"?, "name"?}]}`)
        the calendar holds; returns `[{"id", "guests": [guest ids in the order given]}]`."""
        created: list[dict[str, Any]] = self._request(
            "POST", "/_sandbox/luma/events", json={"events": events, "replace": replace}, timeout=60
        )["events"]
        return created

    def luma_guests(self, event_id: str | None = None) -> list[dict[str, Any]]:
        """The event's guests (or every event's) with their current `approval_status`."""
        params = {"event_id": event_id} if event_id else {}
        guests: list[dict[str, Any]] = self._request(
            "GET", "/_sandbox/luma/guests", params=params, timeout=60
        )["guests"]
        return guests

    # Mailchimp ------------------------------------------------------------------------------------

    def mailchimp_members(self, list_id: str) -> list[dict[str, Any]]:
        """The list's members: `{"id", "email_address", "status", "merge_fields", "tags", ...}`."""
        members: list[dict[str, Any]] = self._request(
            "GET", f"/_sandbox/mailchimp/lists/{list_id}/members"
        )["members"]
        return members

    def mailchimp_member(self, list_id: str, email: str) -> dict[str, Any] | None:
        """The member with this email (any case), or None."""
        wanted = email.strip().lower()
        for member in self.mailchimp_members(list_id):
            if str(member["email_address"]).lower() == wanted:
                return member
        return None

    # SendGrid -------------------------------------------------------------------------------------

    def sent_emails(self) -> list[dict[str, Any]]:
        """The mail/send calls SendGrid accepted (202), oldest first; each call's `body` is the whole
        request (`template_id`, `personalizations[].to`, `dynamic_template_data`, ...) and its
        `reply_headers` hold the `X-Message-Id`."""
        return self.effects("sendgrid", "mail-send")

    def email_recipients(self) -> list[dict[str, Any]]:
        """The accepted emails one recipient at a time, oldest first:
        `{"to", "name", "from", "template_id", "data", "custom_args", "message_id"}`."""
        return recipients(self.calls("sendgrid", "mail-send"))
