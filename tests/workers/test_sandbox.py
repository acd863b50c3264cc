"""The provider sandbox in process: Slack's chat.postMessage, fault injection, call records, rate limits."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.workers.conftest import FakeClock

POST = "/slack/api/chat.postMessage"
BOT = {"Authorization": "Bearer xoxb-sandbox-test"}


def post(client: TestClient, channel: str = "C0123456789", text: str = "hi", **extra: Any) -> Any:
    return client.post(POST, json={"channel": channel, "text": text, **extra}, headers=BOT)


def fault(client: TestClient, **spec: Any) -> None:
    response = client.post(
        "/_sandbox/faults", json={"provider": "slack", "endpoint": "chat.postMessage", **spec}
    )
    assert response.status_code == 201, response.text


def calls(client: TestClient, **params: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = client.get("/_sandbox/calls", params=params).json()["calls"]
    return result


def test_health_answers_ok(client: TestClient) -> None:
    assert client.get("/_sandbox/health").json() == {"status": "ok"}


def test_post_message_answers_slacks_success_shape(client: TestClient) -> None:
    response = post(client, "C0123456789", "hello", thread_ts="1700000000.000100")

    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["channel"] == "C0123456789"
    assert re.fullmatch(r"\d{10}\.\d{6}", body["ts"])
    message = body["message"]
    assert message["type"] == "message"
    assert message["text"] == "hello"
    assert message["user"].startswith("U")
    assert message["bot_id"].startswith("B")
    assert message["ts"] == body["ts"]
    assert message["thread_ts"] == "1700000000.000100"


def test_post_message_accepts_a_form_encoded_body_and_a_channel_name(client: TestClient) -> None:
    blocks = '[{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]'
    response = client.post(
        POST, data={"channel": "#hookfleet-ops", "text": "hi", "blocks": blocks}, headers=BOT
    )

    body = response.json()
    assert body["ok"] is True
    assert re.fullmatch(r"C[A-Z0-9]{10}", body["channel"])
    assert body["message"]["blocks"][0]["type"] == "section"
    assert post(client, "#hookfleet-ops").json()["channel"] == body["channel"]


def test_timestamps_are_unique_and_increasing(client: TestClient) -> None:
    stamps = [post(client, f"C00000000{n}").json()["ts"] for n in range(5)]

    assert stamps == sorted(stamps, key=float)
    assert len(set(stamps)) == 5


def test_missing_token_is_not_authed_with_http_200(client: TestClient) -> None:
    response = client.post(POST, json={"channel": "C0123456789", "text": "hi"})

    assert response.status_code == 200
    assert response.json() == {"ok": False, "error": "not_authed"}


def test_a_token_that_is_not_a_bot_token_is_invalid_auth(client: TestClient) -> None:
    response = client.post(
        POST,
        json={"channel": "C0123456789", "text": "hi"},
        headers={"Authorization": "Bearer nope"},
    )

    assert response.json() == {"ok": False, "error": "invalid_auth"}


def test_missing_channel_is_channel_not_found(client: TestClient) -> None:
    response = client.post(POST, json={"text": "hi"}, headers=BOT)

    assert response.status_code == 200
    assert response.json() == {"ok": False, "error": "channel_not_found"}


def test_message_without_text_or_blocks_is_no_text(client: TestClient) -> None:
    assert client.post(POST, json={"channel": "C0123456789"}, headers=BOT).json()["error"] == (
        "no_text"
    )


def test_unknown_method_is_unknown_method(client: TestClient) -> None:
    response = client.post("/slack/api/chat.teleport", json={}, headers=BOT)

    assert response.json() == {"ok": False, "error": "unknown_method"}
    assert calls(client)[0]["endpoint"] == "chat.teleport"


def test_injected_500_answers_count_times_then_the_endpoint_serves_again(
    client: TestClient,
) -> None:
    fault(client, status=500, count=2)

    statuses = [post(client).status_code for _ in range(3)]

    assert statuses == [500, 500, 200]
    assert client.get("/_sandbox/faults").json() == {"faults": []}


def test_injected_429_answers_with_retry_after_and_a_ratelimited_body(client: TestClient) -> None:
    fault(client, status=429, retry_after=2)

    response = post(client)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.json() == {"ok": False, "error": "ratelimited"}


def test_injected_fault_answers_with_the_given_body(client: TestClient) -> None:
    fault(client, status=503, body={"ok": False, "error": "service_unavailable"})

    response = post(client)

    assert response.status_code == 503
    assert response.json() == {"ok": False, "error": "service_unavailable"}


def test_latency_only_fault_delays_then_serves_normally(client: TestClient) -> None:
    fault(client, status=0, latency=0.3)

    started = time.monotonic()
    response = post(client)

    assert time.monotonic() - started >= 0.3
    assert response.json()["ok"] is True
    assert calls(client)[0]["effect"] is True
    assert calls(client)[0]["fault"] is True


def test_fault_with_count_minus_one_lasts_until_cleared(client: TestClient) -> None:
    fault(client, status=502, count=-1)

    assert [post(client).status_code for _ in range(4)] == [502] * 4
    client.delete("/_sandbox/faults")
    assert post(client).status_code == 200


def test_faults_for_one_endpoint_apply_in_the_order_they_were_added(client: TestClient) -> None:
    fault(client, status=500)
    fault(client, status=429, retry_after=1)

    assert [post(client).status_code for _ in range(3)] == [500, 429, 200]


@pytest.mark.parametrize(
    "spec",
    [
        {"provider": "slack", "endpoint": "chat.postMesage", "status": 500},
        {"provider": "slack", "endpoint": "chat.postMessage", "status": 42},
        {"provider": "slack", "endpoint": "chat.postMessage", "count": 0},
        {"provider": "slack", "endpoint": "chat.postMessage", "latency": -1},
    ],
)
def test_a_fault_the_sandbox_cannot_apply_is_rejected(
    client: TestClient, spec: dict[str, Any]
) -> None:
    response = client.post("/_sandbox/faults", json=spec)

    assert response.status_code == 400
    assert client.get("/_sandbox/faults").json() == {"faults": []}


def test_calls_are_recorded_oldest_first_with_effect_flags(client: TestClient) -> None:
    fault(client, status=500)
    post(client, text="first")  # injected 500
    post(client, text="second")  # served
    client.post(POST, json={"channel": "C0123456789", "text": "third"})  # not_authed

    recorded = calls(client, provider="slack", endpoint="chat.postMessage")

    assert [call["body"]["text"] for call in recorded] == ["first", "second", "third"]
    assert [call["status"] for call in recorded] == [500, 200, 200]
    assert [call["effect"] for call in recorded] == [False, True, False]
    assert all(call["method"] == "POST" for call in recorded)
    assert all("authorization" not in call["headers"] for call in recorded)
    assert recorded[0]["received_at"] <= recorded[2]["received_at"]
    assert calls(client, provider="stripe") == []


def test_reset_forgets_calls_and_rate_limits(client: TestClient) -> None:
    for _ in range(5):
        post(client)
    assert post(client).status_code == 429

    assert client.delete("/_sandbox/calls").json() == {"cleared": 6}

    assert calls(client) == []
    assert post(client).status_code == 200


def test_rate_limit_answers_429_after_a_burst_of_five_per_channel(
    client: TestClient, clock: FakeClock
) -> None:
    statuses = [post(client, "C0000000001").status_code for _ in range(6)]

    assert statuses == [200] * 5 + [429]
    limited = post(client, "C0000000001")
    assert limited.headers["Retry-After"] == "1"
    assert limited.json() == {"ok": False, "error": "ratelimited"}
    assert post(client, "C0000000002").status_code == 200  # other channels have their own bucket

    clock.now += 1.0
    assert post(client, "C0000000001").status_code == 200
    assert post(client, "C0000000001").status_code == 429
