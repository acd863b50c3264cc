"""Property: whatever arrives at any provider's route, the gateway never answers 5xx and never
stores a row that no valid signature vouches for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import create_engine, func, select
from starlette.testclient import TestClient

from schemas.migrate import upgrade
from schemas.settings import Settings
from schemas.tables import WebhookEvent
from tests.conftest import make_settings
from tests.support.provider_secrets import PROVIDER_SECRETS
from webhooks_gateway.app import create_app
from webhooks_gateway.providers import PROVIDERS

# Every header a provider reads, so generated requests reach past the "missing header" checks.
SIGNATURE_HEADERS = [
    "stripe-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "x-twilio-signature",
    "x-twilio-email-event-webhook-signature",
    "x-twilio-email-event-webhook-timestamp",
    "x-cal-signature-256",
    "x-webhook-signature",
    "x-webhook-timestamp",
    "x-airtable-content-mac",
    "intuit-signature",
    "authorization",
    "x-hookfleet-secret",
    "content-type",
]
header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=120),
    st.sampled_from(["t=1,v1=00", "v0=abc", "v1,AAAA", "hmac-sha256=00", "Bearer x", "1"]),
)
bodies = st.one_of(
    st.binary(max_size=600),
    st.text(max_size=300).map(str.encode),
    st.sampled_from([b"{}", b"[]", b'{"type": "x", "id": "evt_1"}', b"a=b&c[d]=e", b"null"]),
)


async def _never_enqueue(inbox_id: int) -> bool:
    raise AssertionError(f"an unverified request was stored and enqueued as {inbox_id}")


@pytest.fixture(scope="module")
def all_providers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, Settings]]:
    path: Path = tmp_path_factory.mktemp("any-request") / "inbox.db"
    secrets = {
        variable.lower(): tuple(SecretStr(value) for value in pair)
        for variable, pair in PROVIDER_SECRETS.items()
    }
    current = make_settings(database_url=f"sqlite:///{path}", **secrets)
    upgrade(current)
    with TestClient(create_app(current, enqueue=_never_enqueue)) as client:
        yield client, current


def _stored(settings_: Settings) -> int:
    engine = create_engine(settings_.database_url)
    with engine.connect() as connection:
        count = connection.scalar(select(func.count()).select_from(WebhookEvent)) or 0
    engine.dispose()
    return count


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=bodies,
    headers=st.dictionaries(st.sampled_from(SIGNATURE_HEADERS), header_values, max_size=6),
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
    token=st.one_of(st.none(), st.text(alphabet="abcdefghij0123456789", max_size=40)),
)
def test_arbitrary_requests_never_5xx_and_never_store(
    all_providers: tuple[TestClient, Settings],
    provider: str,
    body: bytes,
    headers: dict[str, str],
    method: str,
    token: str | None,
) -> None:
    client, current = all_providers
    params: dict[str, Any] = {"token": token} if token is not None else {}

    response = client.request(
        method, f"/webhooks/{provider}", content=body, headers=headers, params=params
    )

    assert response.status_code < 500, response.text
    assert _stored(current) == 0
