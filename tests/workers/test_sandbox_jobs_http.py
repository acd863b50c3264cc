"""The sandbox process over real HTTP as the scheduled jobs meet it: seeded Slack users and Luma guests,
an outage staged to start mid-run (`after`), a 429 storm, run-time limits, and call counts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.sandbox import SandboxServer
from workers.sandbox.luma import SANDBOX_API_KEY

LUMA = {"x-luma-api-key": SANDBOX_API_KEY}
SLACK = {"Authorization": "Bearer xoxb-sandbox-test"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(Path(tmp_path_factory.mktemp("sandbox"))) as running:
        yield running


@pytest.fixture
def sandbox(server: SandboxServer) -> SandboxServer:
    server.reset()
    return server


def approve(sandbox: SandboxServer, event_id: str, guest_id: str) -> httpx.Response:
    return httpx.post(
        f"{sandbox.luma_api_base}/v1/events/guests/update-status",
        json={"event_id": event_id, "guest_id": guest_id, "status": "approved"},
        headers=LUMA,
    )


def test_seeded_guests_are_listed_and_approved_over_http(sandbox: SandboxServer) -> None:
    [event] = sandbox.seed_luma_events(
        [{"id": "evt-http", "guests": [{"email": f"g{n}@example.com"} for n in range(5)]}],
        replace=True,
    )
    listed = httpx.get(
        f"{sandbox.luma_api_base}/v1/events/guests/list",
        params={"event_id": "evt-http", "approval_status": "pending_approval"},
        headers=LUMA,
    ).json()

    approved = approve(sandbox, "evt-http", event["guests"][0])

    assert {guest["id"] for guest in listed["entries"]} == set(event["guests"])
    assert approved.json() == {}
    statuses = {guest["id"]: guest["approval_status"] for guest in sandbox.luma_guests("evt-http")}
    assert statuses[event["guests"][0]] == "approved"
    assert sorted(statuses.values()).count("pending_approval") == 4


def test_an_outage_staged_after_n_calls_starts_mid_run_and_the_rest_still_fails(
    sandbox: SandboxServer,
) -> None:
    [event] = sandbox.seed_luma_events(
        [{"id": "evt-outage", "guests": [{"email": f"o{n}@example.com"} for n in range(8)]}],
        replace=True,
    )
    sandbox.fault("luma", "update-status", status=503, count=-1, after=5)

    statuses = [approve(sandbox, "evt-outage", guest).status_code for guest in event["guests"]]

    assert statuses == [200] * 5 + [503] * 3
    approved = [g for g in sandbox.luma_guests("evt-outage") if g["approval_status"] == "approved"]
    assert len(approved) == 5
    assert sandbox.call_counts("luma", "update-status")["by_status"] == {"200": 5, "503": 3}
    sandbox.clear_faults()
    assert approve(sandbox, "evt-outage", event["guests"][7]).status_code == 200


def test_a_fault_with_a_negative_after_is_refused(sandbox: SandboxServer) -> None:
    response = httpx.post(
        f"{sandbox.url}/_sandbox/faults",
        json={"provider": "luma", "endpoint": "update-status", "after": -1},
    )

    assert response.status_code == 400
    assert "after" in response.json()["error"]


def test_slack_users_seeded_over_http_are_found_in_bulk_and_one_by_one(
    sandbox: SandboxServer,
) -> None:
    ids = sandbox.seed_slack_users(
        [{"email": f"member{n}@example.com"} for n in range(250)] + [{"is_bot": True}],
        replace=True,
    )
    first = httpx.get(
        f"{sandbox.slack_api_base}users.list", params={"limit": 200}, headers=SLACK
    ).json()
    second = httpx.get(
        f"{sandbox.slack_api_base}users.list",
        params={"limit": 200, "cursor": first["response_metadata"]["next_cursor"]},
        headers=SLACK,
    ).json()
    found = httpx.post(
        f"{sandbox.slack_api_base}users.lookupByEmail",
        data={"email": "MEMBER7@example.com"},
        headers=SLACK,
    ).json()

    assert [u["id"] for u in first["members"] + second["members"]] == ids
    assert second["response_metadata"]["next_cursor"] == ""
    assert found["user"]["id"] == ids[7]
    assert len(sandbox.slack_users()) == 251
    assert sandbox.call_counts("slack") == {
        "calls": 3,
        "by_endpoint": {"users.list": 2, "users.lookupByEmail": 1},
        "by_status": {"200": 3},
    }


def test_a_429_storm_answers_retry_after_until_it_is_cleared(sandbox: SandboxServer) -> None:
    sandbox.seed_slack_users([{"email": "storm@example.com"}], replace=True)
    sandbox.fault("slack", "users.lookupByEmail", status=429, count=-1, retry_after=2)

    def lookup() -> httpx.Response:
        return httpx.get(
            f"{sandbox.slack_api_base}users.lookupByEmail",
            params={"email": "storm@example.com"},
            headers=SLACK,
        )

    during = [lookup() for _ in range(4)]
    sandbox.clear_faults()
    after = lookup()

    assert {(r.status_code, r.headers["Retry-After"]) for r in during} == {(429, "2")}
    assert after.json()["ok"] is True


def test_limits_changed_at_run_time_are_listed_and_reset_puts_back_the_documented_ones(
    sandbox: SandboxServer,
) -> None:
    sandbox.set_rate_limit("slack", "users.list", 12000)
    sandbox.set_rate_limit("luma", "*", 120000)

    changed = sandbox.rate_limits()
    sandbox.reset()

    assert changed[("slack", "users.list")] == 12000
    assert changed[("luma", "*")] == 120000
    assert changed[("slack", "users.lookupByEmail")] == 50
    assert sandbox.rate_limits() == {
        ("luma", "*"): 200,
        ("slack", "users.list"): 20,
        ("slack", "users.lookupByEmail"): 50,
    }


def test_luma_refuses_a_wrong_key_over_http(sandbox: SandboxServer) -> None:
    sandbox.seed_luma_events([{"id": "evt-key", "guests": []}], replace=True)

    response = httpx.get(
        f"{sandbox.luma_api_base}/v1/events/guests/list",
        params={"event_id": "evt-key"},
        headers={"x-luma-api-key": "not-a-luma-key"},
    )

    assert response.status_code == 401
    assert response.json()["message"]


def test_over_its_limit_a_luma_key_gets_429_and_stays_blocked(sandbox: SandboxServer) -> None:
    sandbox.seed_luma_events([{"id": "evt-block", "guests": []}], replace=True)
    sandbox.set_rate_limit("luma", "*", 3)

    def events() -> httpx.Response:
        return httpx.get(f"{sandbox.luma_api_base}/v1/calendars/events/list", headers=LUMA)

    allowed = [events().status_code for _ in range(3)]
    over, still = events(), events()

    assert allowed == [200, 200, 200]
    assert over.status_code == 429
    assert over.headers["Retry-After"] == "60"
    assert over.headers["X-RateLimit-Limit"] == "3"
    assert over.headers["X-RateLimit-Remaining"] == "0"
    assert still.status_code == 429
    assert int(still.headers["Retry-After"]) >= 55
    assert sandbox.call_counts("luma")["by_status"] == {"200": 3, "429": 2}


def test_over_tier_2_users_list_gets_429_with_retry_after_over_http(
    sandbox: SandboxServer,
) -> None:
    sandbox.seed_slack_users([{"email": "tier@example.com"}], replace=True)
    sandbox.set_rate_limit("slack", "users.list", 2)

    responses = [httpx.get(f"{sandbox.slack_api_base}users.list", headers=SLACK) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[2].json() == {"ok": False, "error": "ratelimited"}
    assert 29 <= int(responses[2].headers["Retry-After"]) <= 30
