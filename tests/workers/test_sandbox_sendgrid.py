"""The sandbox's SendGrid in process: Mail Send's 202 and X-Message-Id, its error lists, auth, the rate
limit, and the record of which template went to whom."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.workers.conftest import FakeClock
from workers.sandbox import sendgrid

AUTH = {"Authorization": "Bearer SG.sandbox-test.0123456789"}
SEND = "/sendgrid/v3/mail/send"
WELCOME = "d-" + "0" * 31 + "1"


def mail(to: str = "ada@example.com", **extra: Any) -> dict[str, Any]:
    return {
        "from": {"email": "hello@hookfleet.example", "name": "Hookfleet"},
        "personalizations": [
            {
                "to": [{"email": to, "name": "Ada"}],
                "dynamic_template_data": {"first_name": "Ada"},
                "custom_args": {"member_id": "m_1"},
            }
        ],
        "template_id": WELCOME,
        **extra,
    }


def calls(client: TestClient) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = client.get(
        "/_sandbox/calls", params={"provider": "sendgrid"}
    ).json()["calls"]
    return result


def test_a_valid_send_is_accepted_with_202_and_a_message_id(client: TestClient) -> None:
    response = client.post(SEND, json=mail(), headers=AUTH)

    assert response.status_code == 202
    assert response.content == b""
    assert len(response.headers["X-Message-Id"]) == 22
    assert response.headers["X-RateLimit-Limit"] == str(sendgrid.RATE_BURST)
    assert int(response.headers["X-RateLimit-Remaining"]) == sendgrid.RATE_BURST - 1


@pytest.mark.parametrize(
    "template_id",
    [
        "d-0123456789abcdef0123456789abcdef",
        "d-sandbox-welcome",
        "8f2b1a3c-1d2e-4f5a-9b8c-7d6e5f4a3b2c",
    ],
)
def test_dynamic_and_legacy_template_ids_are_accepted(client: TestClient, template_id: str) -> None:
    assert client.post(SEND, json=mail(template_id=template_id), headers=AUTH).status_code == 202


def test_the_record_tells_which_template_went_to_whom(client: TestClient) -> None:
    message_id = client.post(SEND, json=mail("ada@example.com"), headers=AUTH).headers[
        "X-Message-Id"
    ]
    client.post(SEND, json=mail("not-an-address"), headers=AUTH)  # refused: not sent

    recorded = calls(client)

    assert recorded[0]["body"] == mail("ada@example.com")
    assert sendgrid.recipients(recorded) == [
        {
            "to": "ada@example.com",
            "name": "Ada",
            "from": "hello@hookfleet.example",
            "template_id": WELCOME,
            "data": {"first_name": "Ada"},
            "custom_args": {"member_id": "m_1"},
            "message_id": message_id,
        }
    ]


def test_an_invalid_body_answers_every_problem_with_its_field(client: TestClient) -> None:
    response = client.post(
        SEND,
        json={"personalizations": [{"to": [{"email": "nope"}]}]},
        headers=AUTH,
    )

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [error["field"] for error in errors] == [
        "from",
        "personalizations.0.to.0.email",
        "content",
    ]
    assert all(set(error) == {"message", "field", "help"} for error in errors)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"template_id": "welcome"}, "template_id"),
        ({"personalizations": []}, "personalizations"),
        ({"personalizations": [{"to": []}]}, "personalizations.0.to"),
        ({"from": {"email": "x"}}, "from.email"),
        ({"custom_args": {"n": 1}}, "custom_args"),
    ],
)
def test_each_invalid_part_is_named(client: TestClient, change: dict[str, Any], field: str) -> None:
    response = client.post(SEND, json={**mail(), **change}, headers=AUTH)

    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == [field]


def test_a_body_that_is_not_a_json_object_is_400(client: TestClient) -> None:
    response = client.post(
        SEND, content=b"[1]", headers={**AUTH, "Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["message"].startswith("Bad Request")


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "authorization required"),
        ({"Authorization": "Bearer not-a-sendgrid-key"}, "invalid, expired, or revoked"),
    ],
)
def test_without_a_sendgrid_key_the_answer_is_401(
    client: TestClient, headers: dict[str, str], message: str
) -> None:
    response = client.post(SEND, json=mail(), headers=headers)

    assert response.status_code == 401
    assert message in response.json()["errors"][0]["message"]
    assert calls(client)[0]["effect"] is False


def test_over_the_rate_limit_the_answer_is_429_with_retry_after(
    client: TestClient, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sendgrid, "RATE_BURST", 3)

    statuses = [client.post(SEND, json=mail(), headers=AUTH).status_code for _ in range(4)]

    assert statuses == [202, 202, 202, 429]
    limited = client.post(SEND, json=mail(), headers=AUTH)
    assert limited.headers["Retry-After"] == "1"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.json() == {
        "errors": [{"message": "too many requests", "field": None, "help": None}]
    }
    clock.now += 1.0
    assert client.post(SEND, json=mail(), headers=AUTH).status_code == 202


def test_an_injected_fault_answers_sendgrids_error_shape(client: TestClient) -> None:
    client.post(
        "/_sandbox/faults", json={"provider": "sendgrid", "endpoint": "mail-send", "status": 503}
    )

    response = client.post(SEND, json=mail(), headers=AUTH)

    assert response.status_code == 503
    assert response.json()["errors"][0]["message"] == "internal server error"
    assert sendgrid.recipients(calls(client)) == []


def test_an_unknown_path_is_404(client: TestClient) -> None:
    assert client.get("/sendgrid/v3/templates", headers=AUTH).status_code == 404
