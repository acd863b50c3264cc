"""One real gateway (uvicorn over HTTP) with every provider enabled, for the per-provider tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from schemas.tables import InboxStatus, WebhookEvent
from tests.support.processes import (
    Service,
    free_port,
    gateway_service,
    redis_service,
    redis_url_of,
    wait_for_http,
    wait_until,
)
from tests.support.provider_secrets import gateway_env


@dataclass
class Gateway:
    """The running gateway and the inbox it writes to."""

    url: str
    engine: Engine
    service: Service

    def post(
        self,
        provider: str,
        content: bytes,
        headers: dict[str, str] | None = None,
        *,
        params: dict[str, str] | None = None,
        method: str = "POST",
        path_suffix: str = "",
    ) -> httpx.Response:
        """Deliver, and once accepted wait for the relay to publish, as the fleet would see it.

        The gateway answers after the commit and publishes afterwards (webhooks_gateway.relay).
        """
        response = httpx.request(
            method,
            f"{self.url}/webhooks/{provider}{path_suffix}",
            content=content,
            headers=headers or {},
            params=params,
            timeout=10,
        )
        accepted = response.status_code == 200 and "inbox_ids" in response.text
        if accepted:
            self.wait_relayed(response.json()["inbox_ids"])
        return response

    def wait_relayed(self, inbox_ids: list[int]) -> None:
        def relayed() -> bool:
            with Session(self.engine) as session:
                statuses = session.scalars(
                    select(WebhookEvent.status).where(WebhookEvent.id.in_(inbox_ids))
                )
                return InboxStatus.RECEIVED not in set(statuses)

        wait_until(relayed, interval=0.01, what=f"the relay to publish inbox rows {inbox_ids}")

    def rows(self, provider: str, event_id: str | None = None) -> list[WebhookEvent]:
        """Inbox rows of `provider` (one event id, or all)."""
        with Session(self.engine) as session:
            query = select(WebhookEvent).where(WebhookEvent.provider == provider)
            if event_id is not None:
                query = query.where(WebhookEvent.event_id == event_id)
            return list(session.scalars(query.order_by(WebhookEvent.id)))

    def count(self, provider: str) -> int:
        return len(self.rows(provider))


@pytest.fixture(scope="session")
def gateway(
    database_url: str, pg_engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """PUBLIC_BASE_URL is the gateway's own address, as Twilio would be configured to call it."""
    workdir = tmp_path_factory.mktemp("providers")
    redis = redis_service(free_port(), workdir)
    redis.start()
    port = free_port()
    env = {
        **gateway_env(),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url_of(redis),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "LOG_JSON": "true",
    }
    service = gateway_service(port, env, workdir)
    service.start()
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", service)
        yield Gateway(f"http://127.0.0.1:{port}", pg_engine, service)
    finally:
        service.stop()
        redis.stop()


__all__ = ["Gateway", "wait_until"]
