"""The sandbox's Stripe in process: customers, Bearer auth, idempotent replays, the 25/s limit, faults."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.workers.conftest import FakeClock
from workers.sandbox.server import SandboxState, create_sandbox_app

KEY = "sk_test_sandbox0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
CUSTOMER = "cus_SandboxTest001"


@pytest.fixture
def client(clock: FakeClock) -> Iterator[TestClient]:
    app = create_sandbox_app()
    app.state.sandbox = SandboxState(clock=clock)  # the rate limit on a clock the test moves
    with TestClient(app) as test_client:
        response = test_client.post(
            "/_sandbox/stripe/customers",
            json={
                "id": CUSTOMER,
                "email": "ada@example.com",
                "name": "Ada",
                "metadata": {"a": "1"},
            },
        )
        assert response.status_code == 201, response.text
        yield test_client


def update(client: TestClient, data: dict[str, str], key: str | None = None) -> Any:
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    return client.post(f"/stripe/v1/customers/{CUSTOMER}", data=data, headers=headers)


def held(client: TestClient, customer_id: str = CUSTOMER) -> dict[str, Any]:
    response = client.get(f"/_sandbox/stripe/customers/{customer_id}")
    assert response.status_code == 200, response.text
    customer: dict[str, Any] = response.json()
    return customer


def calls(client: TestClient, endpoint: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = client.get(
        "/_sandbox/calls", params={"provider": "stripe", "endpoint": endpoint}
    ).json()["calls"]
    return result


def test_retrieve_answers_a_customer_object(client: TestClient) -> None:
    response = client.get(f"/stripe/v1/customers/{CUSTOMER}", headers=AUTH)

    assert response.status_code == 200
    assert response.headers["Request-Id"].startswith("req_")
    customer = response.json()
    assert customer["object"] == "customer"
    assert (customer["id"], customer["email"], customer["name"]) == (
        CUSTOMER,
        "ada@example.com",
        "Ada",
    )
    assert customer["metadata"] == {"a": "1"}
    assert customer["livemode"] is False
    assert isinstance(customer["created"], int)


def test_update_takes_form_encoded_fields_and_metadata(client: TestClient) -> None:
    response = update(
        client,
        {"email": "ada@lovelace.org", "metadata[tier]": "patron", "metadata[a]": ""},
    )

    assert response.status_code == 200
    assert response.json()["email"] == "ada@lovelace.org"
    customer = held(client)
    assert customer["email"] == "ada@lovelace.org"
    assert customer["name"] == "Ada"  # parameters not sent stay as they were
    assert customer["metadata"] == {"tier": "patron"}  # an empty value unsets a key
    assert calls(client, "update-customer")[0]["body"]["metadata[tier]"] == "patron"


def test_create_makes_a_new_customer(client: TestClient) -> None:
    response = client.post(
        "/stripe/v1/customers", data={"email": "grace@example.com", "name": "Grace"}, headers=AUTH
    )

    assert response.status_code == 200
    customer_id = response.json()["id"]
    assert re.fullmatch(r"cus_[A-Za-z0-9]{14}", customer_id)
    assert held(client, customer_id)["email"] == "grace@example.com"


def test_the_same_idempotency_key_and_parameters_replay_without_a_new_effect(
    client: TestClient,
) -> None:
    first = update(client, {"name": "Ada L."}, key="evt_1-update")
    update(client, {"name": "Countess"})  # someone else changes the customer in between
    replay = update(client, {"name": "Ada L."}, key="evt_1-update")

    assert replay.status_code == 200
    assert replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert held(client)["name"] == "Countess"  # the replay changed nothing
    assert [call["effect"] for call in calls(client, "update-customer")] == [True, True, False]


def test_a_replayed_create_answers_the_same_customer_once(client: TestClient) -> None:
    headers = {**AUTH, "Idempotency-Key": "evt_2-create"}
    data = {"email": "linus@example.com"}

    ids = {
        client.post("/stripe/v1/customers", data=data, headers=headers).json()["id"] for _ in "ab"
    }

    assert len(ids) == 1
    assert [call["effect"] for call in calls(client, "create-customer")] == [True, False]


def test_the_same_key_with_other_parameters_is_an_idempotency_error(client: TestClient) -> None:
    update(client, {"name": "One"}, key="evt_3")

    response = update(client, {"name": "Two"}, key="evt_3")

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "idempotency_error"
    assert held(client)["name"] == "One"


def test_a_request_that_fails_validation_does_not_use_up_its_key(client: TestClient) -> None:
    refused = update(client, {"nickname": "x"}, key="evt_4")

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "parameter_unknown"
    assert refused.json()["error"]["param"] == "nickname"
    assert update(client, {"name": "Fixed"}, key="evt_4").status_code == 200


def test_an_invalid_email_is_refused(client: TestClient) -> None:
    response = update(client, {"email": "not-an-address"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "email_invalid"


def test_an_unknown_customer_is_resource_missing(client: TestClient) -> None:
    response = client.get("/stripe/v1/customers/cus_Nobody", headers=AUTH)

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "resource_missing"
    assert error["param"] == "id"
    assert "cus_Nobody" in error["message"]


def test_without_a_key_the_answer_is_401(client: TestClient) -> None:
    response = client.get(f"/stripe/v1/customers/{CUSTOMER}")

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "did not provide an API key" in response.json()["error"]["message"]


def test_a_key_that_is_not_a_test_secret_key_is_refused_and_masked(client: TestClient) -> None:
    live = "sk_live_0123456789abcdefWXYZ"

    response = client.get(
        f"/stripe/v1/customers/{CUSTOMER}", headers={"Authorization": f"Bearer {live}"}
    )

    assert response.status_code == 401
    message = response.json()["error"]["message"]
    assert live not in message
    assert message.endswith("WXYZ")


def test_over_25_requests_a_second_answers_429_rate_limit(
    client: TestClient, clock: FakeClock
) -> None:
    statuses = [
        client.get(f"/stripe/v1/customers/{CUSTOMER}", headers=AUTH).status_code for _ in range(26)
    ]

    assert statuses == [200] * 25 + [429]
    limited = update(client, {"name": "x"})
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit"
    assert limited.headers["Retry-After"] == "1"
    clock.now += 1.0
    assert update(client, {"name": "x"}).status_code == 200


def test_an_unknown_url_is_unrecognized(client: TestClient) -> None:
    response = client.get("/stripe/v1/teleports/tp_1", headers=AUTH)

    assert response.status_code == 404
    assert (
        "Unrecognized request URL (GET: /v1/teleports/tp_1)" in response.json()["error"]["message"]
    )


@pytest.mark.parametrize(
    ("status", "error_type"), [(500, "api_error"), (429, "invalid_request_error")]
)
def test_injected_faults_answer_stripe_error_bodies(
    client: TestClient, status: int, error_type: str
) -> None:
    client.post(
        "/_sandbox/faults",
        json={
            "provider": "stripe",
            "endpoint": "update-customer",
            "status": status,
            "retry_after": 3,
        },
    )

    response = update(client, {"name": "Faulty"}, key="evt_5")

    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type
    assert response.headers["Retry-After"] == "3"
    assert held(client)["name"] == "Ada"
    # an injected failure never reached the endpoint: the key is still free
    assert update(client, {"name": "Faulty"}, key="evt_5").status_code == 200


def test_the_control_api_answers_404_for_an_unknown_customer(client: TestClient) -> None:
    assert client.get("/_sandbox/stripe/customers/cus_Nobody").status_code == 404
