"""The provider sandbox as a real process on a free port, with helpers for its control API."""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.support.processes import Service, free_port, wait_for_http


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

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.url}{path}", timeout=5, **kwargs)
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
    ) -> None:
        """The next `count` calls (-1: all until cleared) wait `latency` s, then get `status` (0: none)."""
        fault: dict[str, Any] = {
            "provider": provider,
            "endpoint": endpoint,
            "status": status,
            "count": count,
            "latency": latency,
        }
        if retry_after is not None:
            fault["retry_after"] = retry_after
        if body is not None:
            fault["body"] = body
        self._request("POST", "/_sandbox/faults", json=fault)

    def clear_faults(self) -> None:
        self._request("DELETE", "/_sandbox/faults")

    def reset(self) -> None:
        """Clear faults, recorded calls and rate-limit state (between tests)."""
        self.clear_faults()
        self._request("DELETE", "/_sandbox/calls")
