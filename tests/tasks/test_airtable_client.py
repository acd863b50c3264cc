"""AirtableClient against the real sandbox over HTTP: answers sorted into transient and permanent errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from schemas.settings import Settings
from tasks.clients.airtable import AirtableClient, BasePacer
from tests.support.processes import free_port
from tests.support.sandbox import SandboxServer
from workers.errors import PermanentError, TransientError

BASE = "appClientTests001"
WEBHOOK = "achClientTests001"
TOKEN = "patClientTest.0123456789abcdef"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path_factory.mktemp("sandbox")) as server:
        httpx.post(
            f"{server.url}/_sandbox/airtable/payloads",
            json={
                "base_id": BASE,
                "webhook_id": WEBHOOK,
                "payloads": [{"baseTransactionNumber": 1}],
            },
            timeout=5,
        ).raise_for_status()
        yield server


@pytest.fixture(autouse=True)
def fresh_sandbox(sandbox: SandboxServer) -> None:
    sandbox.reset()


def client_for(api_base: str, **overrides: Any) -> AirtableClient:
    values: dict[str, Any] = {
        "airtable_api_key": SecretStr(TOKEN),
        "airtable_api_base": api_base,
        **overrides,
    }
    return AirtableClient(Settings(_env_file=None, **values), pacer=BasePacer(per_second=1000))


@pytest.fixture
def airtable(sandbox: SandboxServer) -> AirtableClient:
    return client_for(f"{sandbox.url}/airtable")


def test_a_page_comes_back_as_airtable_sent_it(airtable: AirtableClient) -> None:
    page = airtable.list_webhook_payloads(BASE, WEBHOOK, cursor=1, limit=10)

    assert (page.payloads, page.cursor, page.might_have_more) == (
        [{"baseTransactionNumber": 1}],
        2,
        False,
    )


def test_the_token_travels_as_a_bearer_and_never_in_errors(
    airtable: AirtableClient, sandbox: SandboxServer
) -> None:
    sandbox.fault("airtable", "list-webhook-payloads", status=500)

    with pytest.raises(TransientError) as caught:
        airtable.list_webhook_payloads(BASE, WEBHOOK, cursor=1)

    assert TOKEN not in str(caught.value)
    assert len(sandbox.calls("airtable", "list-webhook-payloads")) == 1  # no retry in the client


@pytest.mark.parametrize(("status", "retry_after"), [(503, 7), (429, 3)])
def test_retryable_answers_raise_transient_error_carrying_retry_after(
    airtable: AirtableClient, sandbox: SandboxServer, status: int, retry_after: int
) -> None:
    sandbox.fault("airtable", "list-webhook-payloads", status=status, retry_after=retry_after)

    with pytest.raises(TransientError) as caught:
        airtable.list_webhook_payloads(BASE, WEBHOOK, cursor=1)

    assert caught.value.retry_after == float(retry_after)


def test_a_429_without_retry_after_waits_airtables_30_seconds(
    airtable: AirtableClient, sandbox: SandboxServer
) -> None:
    sandbox.fault("airtable", "list-webhook-payloads", status=429)

    with pytest.raises(TransientError) as caught:
        airtable.list_webhook_payloads(BASE, WEBHOOK, cursor=1)

    assert caught.value.retry_after == 30.0


@pytest.mark.parametrize("status", [401, 403, 404, 422])
def test_other_4xx_raise_permanent_error(
    airtable: AirtableClient, sandbox: SandboxServer, status: int
) -> None:
    sandbox.fault("airtable", "list-webhook-payloads", status=status)

    with pytest.raises(PermanentError) as caught:
        airtable.list_webhook_payloads(BASE, WEBHOOK, cursor=1)

    assert not isinstance(caught.value, TransientError)
    assert str(status) in str(caught.value)


def test_a_token_airtable_does_not_get_is_refused_permanently(sandbox: SandboxServer) -> None:
    blank = client_for(f"{sandbox.url}/airtable", airtable_api_key=SecretStr("   "))

    with pytest.raises(PermanentError, match="AIRTABLE_API_KEY"):
        blank.list_webhook_payloads(BASE, WEBHOOK, cursor=1)


def test_an_answer_of_the_wrong_shape_is_permanent(
    airtable: AirtableClient, sandbox: SandboxServer
) -> None:
    sandbox.fault("airtable", "list-webhook-payloads", status=200, body={"records": []})

    with pytest.raises(PermanentError, match="unexpected shape"):
        airtable.list_webhook_payloads(BASE, WEBHOOK, cursor=1)


def test_an_unreachable_airtable_is_transient() -> None:
    gone = client_for(f"http://127.0.0.1:{free_port()}/airtable")

    with pytest.raises(TransientError, match="unreachable"):
        gone.list_webhook_payloads(BASE, WEBHOOK, cursor=1)


@pytest.mark.parametrize("bad", ["app/../x", "", "appShort", "app" + "x" * 20])
def test_an_id_that_is_not_airtables_never_reaches_a_url(
    airtable: AirtableClient, sandbox: SandboxServer, bad: str
) -> None:
    with pytest.raises(PermanentError, match="not an Airtable id"):
        airtable.list_webhook_payloads(bad, WEBHOOK, cursor=1)

    assert sandbox.calls("airtable") == []


def test_the_pacer_spaces_calls_to_one_base_at_five_a_second() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)

    pacer = BasePacer(5, clock=lambda: now[0], sleep=sleep)

    waits = [pacer.wait("appA") for _ in range(3)] + [pacer.wait("appB")]
    now[0] += 1.0
    later = pacer.wait("appA")

    assert waits == pytest.approx([0.0, 0.2, 0.4, 0.0])
    assert slept == pytest.approx([0.2, 0.4])
    assert later == 0.0
