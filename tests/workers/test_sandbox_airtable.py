"""The sandbox's Airtable in process: list-webhook-payloads by cursor, seeding, auth, the per-base limit."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.workers.conftest import FakeClock

BASE = "appSandboxBase001"
WEBHOOK = "achSandboxHook001"
TOKEN = {"Authorization": "Bearer patSandbox.0123456789abcdef"}


def payload(number: int) -> dict[str, Any]:
    """A payload in Airtable's documented shape (v0), one record changed."""
    return {
        "timestamp": f"2025-11-03T16:42:{number:02d}.000Z",
        "baseTransactionNumber": 100 + number,
        "payloadFormat": "v0",
        "actionMetadata": {
            "source": "client",
            "sourceMetadata": {"user": {"id": "usrSandboxUser01", "permissionLevel": "create"}},
        },
        "changedTablesById": {
            "tblSandboxTable01": {
                "changedRecordsById": {
                    f"recSandbox{number:07d}": {
                        "current": {"cellValuesByFieldId": {"fldSandboxField1": f"v{number}"}}
                    }
                }
            }
        },
    }


def seed(
    client: TestClient,
    count: int,
    *,
    base: str = BASE,
    webhook: str = WEBHOOK,
    page_size: int | None = 2,
) -> Any:
    body: dict[str, Any] = {
        "base_id": base,
        "webhook_id": webhook,
        "payloads": [payload(n) for n in range(1, count + 1)],
    }
    if page_size is not None:
        body["page_size"] = page_size
    response = client.post("/_sandbox/airtable/payloads", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def list_payloads(
    client: TestClient,
    *,
    base: str = BASE,
    webhook: str = WEBHOOK,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    return client.get(
        f"/airtable/v0/bases/{base}/webhooks/{webhook}/payloads",
        params=params,
        headers=TOKEN if headers is None else headers,
    )


def test_seeding_answers_how_many_payloads_the_webhook_holds(client: TestClient) -> None:
    assert seed(client, 3) == {"base_id": BASE, "webhook_id": WEBHOOK, "payloads": 3}
    assert seed(client, 2)["payloads"] == 5


def test_payloads_page_by_cursor_in_transaction_order(client: TestClient) -> None:
    seed(client, 5)

    pages = [list_payloads(client, params={"cursor": cursor}).json() for cursor in (1, 3, 5, 6)]

    assert [[p["baseTransactionNumber"] for p in page["payloads"]] for page in pages] == [
        [101, 102],
        [103, 104],
        [105],
        [],
    ]
    assert [(page["cursor"], page["mightHaveMore"]) for page in pages] == [
        (3, True),
        (5, True),
        (6, False),
        (6, False),
    ]


def test_the_first_page_starts_at_cursor_one_and_limit_shortens_it(client: TestClient) -> None:
    seed(client, 3, page_size=None)

    whole = list_payloads(client).json()
    short = list_payloads(client, params={"limit": 1}).json()

    assert (len(whole["payloads"]), whole["cursor"], whole["mightHaveMore"]) == (3, 4, False)
    assert (len(short["payloads"]), short["cursor"], short["mightHaveMore"]) == (1, 2, True)
    assert whole["payloads"][0] == payload(1)


def test_a_missing_token_is_refused_with_airtables_error_shape(client: TestClient) -> None:
    seed(client, 1)

    response = list_payloads(client, headers={})

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "AUTHENTICATION_REQUIRED"
    [call] = client.get("/_sandbox/calls", params={"provider": "airtable"}).json()["calls"]
    assert (call["endpoint"], call["effect"]) == ("list-webhook-payloads", False)


def test_calls_are_recorded_with_their_path_ids_and_without_the_token(client: TestClient) -> None:
    seed(client, 1)

    list_payloads(client, params={"cursor": 1})

    [call] = client.get("/_sandbox/calls", params={"provider": "airtable"}).json()["calls"]
    assert call["path"] == {"base_id": BASE, "webhook_id": WEBHOOK}
    assert call["query"] == {"cursor": "1"}
    assert call["effect"] is True
    assert "authorization" not in call["headers"]


def test_a_webhook_never_seeded_is_not_found(client: TestClient) -> None:
    response = list_payloads(client, webhook="achNeverSeeded001")

    assert response.status_code == 404
    assert response.json()["error"]["type"] == "NOT_FOUND"


@pytest.mark.parametrize("params", [{"cursor": "0"}, {"cursor": "x"}, {"limit": "0"}])
def test_a_cursor_or_limit_that_is_not_a_positive_integer_is_refused(
    client: TestClient, params: dict[str, str]
) -> None:
    seed(client, 1)

    assert list_payloads(client, params=params).status_code == 422


def test_over_five_calls_a_second_per_base_gets_429_and_a_30_second_penalty(
    client: TestClient, clock: FakeClock
) -> None:
    seed(client, 1)
    seed(client, 1, base="appSandboxBase002")

    statuses = [list_payloads(client).status_code for _ in range(5)]
    limited = list_payloads(client)
    other_base = list_payloads(client, base="appSandboxBase002")
    clock.now += 10
    still_limited = list_payloads(client)
    clock.now += 20
    after_penalty = list_payloads(client)

    assert statuses == [200] * 5
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "30"
    assert limited.json()["error"]["type"] == "TOO_MANY_REQUESTS"
    assert other_base.status_code == 200
    assert (still_limited.status_code, still_limited.headers["Retry-After"]) == (429, "20")
    assert after_penalty.status_code == 200


def test_calls_spaced_at_five_a_second_are_never_limited(
    client: TestClient, clock: FakeClock
) -> None:
    seed(client, 1)
    statuses = []
    for _ in range(20):
        statuses.append(list_payloads(client).status_code)
        clock.now += 0.2

    assert set(statuses) == {200}


def test_an_injected_fault_answers_in_airtables_error_shape(client: TestClient) -> None:
    seed(client, 1)
    fault = {"provider": "airtable", "endpoint": "list-webhook-payloads", "status": 503}
    assert client.post("/_sandbox/faults", json=fault).status_code == 201

    failed = list_payloads(client)

    assert failed.status_code == 503
    assert failed.json()["error"]["type"] == "SERVER_ERROR"
    assert list_payloads(client).status_code == 200


def test_an_unknown_airtable_path_is_not_found(client: TestClient) -> None:
    response = client.get(f"/airtable/v0/bases/{BASE}/tables", headers=TOKEN)

    assert response.status_code == 404
    assert response.json() == {"error": "NOT_FOUND"}


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"webhook_id": WEBHOOK, "payloads": []},
        {"base_id": BASE, "webhook_id": WEBHOOK, "payloads": "nope"},
        {"base_id": BASE, "webhook_id": WEBHOOK, "payloads": [1]},
        {"base_id": BASE, "webhook_id": WEBHOOK, "payloads": [], "page_size": 0},
    ],
    ids=["not-an-object", "no-base", "payloads-not-a-list", "payload-not-an-object", "page-0"],
)
def test_seeding_refuses_what_it_cannot_hold(client: TestClient, body: Any) -> None:
    response = client.post("/_sandbox/airtable/payloads", json=body)

    assert response.status_code == 400
    assert list_payloads(client).status_code == 404
