"""The sandbox's Slack users in process: users.list pages with cursors, users.lookupByEmail, seeding,
and the Tier 2 / Tier 3 limits per method."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.workers.conftest import FakeClock

BOT = {"Authorization": "Bearer xoxb-sandbox-test"}
LIST = "/slack/api/users.list"
LOOKUP = "/slack/api/users.lookupByEmail"
USER_KEYS = {
    "id",
    "team_id",
    "name",
    "real_name",
    "deleted",
    "is_bot",
    "is_restricted",
    "is_ultra_restricted",
    "is_app_user",
    "updated",
    "profile",
}


def seed(client: TestClient, users: list[dict[str, Any]], replace: bool = True) -> list[str]:
    response = client.post("/_sandbox/slack/users", json={"users": users, "replace": replace})
    assert response.status_code == 201, response.text
    ids: list[str] = response.json()["ids"]
    return ids


def people(count: int, domain: str = "example.com") -> list[dict[str, Any]]:
    return [{"email": f"person{n}@{domain}"} for n in range(count)]


def lookup(client: TestClient, email: str) -> Any:
    return client.get(LOOKUP, params={"email": email}, headers=BOT)


def test_users_list_pages_through_every_user_with_slack_cursors(client: TestClient) -> None:
    ids = seed(client, people(450))
    seen: list[str] = []
    pages = 0
    cursor = ""
    while True:
        body = client.post(LIST, data={"limit": "200", "cursor": cursor}, headers=BOT).json()
        pages += 1
        assert body["ok"] is True
        assert isinstance(body["cache_ts"], int)
        seen += [user["id"] for user in body["members"]]
        cursor = body["response_metadata"]["next_cursor"]
        if not cursor:
            break

    assert pages == 3
    assert seen == ids


def test_users_list_answers_slack_s_user_shape_with_deleted_users_and_bots(
    client: TestClient,
) -> None:
    seed(
        client,
        [
            {"email": "Ada.Lovelace@Example.com", "real_name": "Ada Lovelace"},
            {"email": "gone@example.com", "deleted": True},
            {"email": "guest@example.com", "is_restricted": True},
            {"email": "single@example.com", "is_ultra_restricted": True, "is_restricted": True},
            {"is_bot": True, "real_name": "Standup Bot"},
        ],
    )

    members = client.get(LIST, params={"limit": 10}, headers=BOT).json()["members"]

    assert all(set(user) == USER_KEYS for user in members)
    ada, gone, guest, single, bot = members
    assert ada["team_id"] == "T0SANDBOX"
    assert ada["profile"]["email"] == "Ada.Lovelace@Example.com"
    assert ada["real_name"] == ada["profile"]["real_name"] == "Ada Lovelace"
    assert ada["id"].startswith("U")
    assert (gone["deleted"], guest["is_restricted"], single["is_ultra_restricted"]) == (
        True,
        True,
        True,
    )
    assert bot["is_bot"] is True
    assert "email" not in bot["profile"]
    assert not any(user["is_app_user"] for user in members)


def test_users_list_clamps_the_page_to_1000(client: TestClient) -> None:
    seed(client, people(1100))

    body = client.get(LIST, params={"limit": 5000}, headers=BOT).json()

    assert len(body["members"]) == 1000
    assert body["response_metadata"]["next_cursor"]


def test_a_cursor_slack_did_not_give_is_an_error(client: TestClient) -> None:
    seed(client, people(3))

    body = client.get(LIST, params={"cursor": "not-a-cursor"}, headers=BOT).json()

    assert body == {"ok": False, "error": "invalid_cursor"}


def test_lookup_by_email_finds_a_user_in_any_case(client: TestClient) -> None:
    [user_id] = seed(client, [{"email": "Grace.Hopper@example.com"}])

    response = lookup(client, "grace.hopper@EXAMPLE.com")

    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["user"]["id"] == user_id
    assert set(body["user"]) == USER_KEYS


def test_lookup_by_email_finds_a_deactivated_user_as_deleted(client: TestClient) -> None:
    seed(client, [{"email": "left@example.com", "deleted": True}])

    assert lookup(client, "left@example.com").json()["user"]["deleted"] is True


@pytest.mark.parametrize("email", ["nobody@example.com", "standup-bot@example.com"])
def test_lookup_by_email_of_no_user_is_users_not_found_with_http_200(
    client: TestClient, email: str
) -> None:
    seed(client, [{"email": "someone@example.com"}, {"is_bot": True, "email": email}])

    response = lookup(client, email)

    assert response.status_code == 200
    assert response.json() == {"ok": False, "error": "users_not_found"}


def test_lookup_without_an_email_is_invalid_arguments(client: TestClient) -> None:
    assert client.post(LOOKUP, json={}, headers=BOT).json() == {
        "ok": False,
        "error": "invalid_arguments",
    }


@pytest.mark.parametrize(
    ("headers", "error"),
    [({}, "not_authed"), ({"Authorization": "Bearer xoxp-user-token"}, "invalid_auth")],
)
def test_users_methods_want_a_bot_token(
    client: TestClient, headers: dict[str, str], error: str
) -> None:
    seed(client, people(1))

    listed = client.get(LIST, headers=headers)
    looked_up = client.get(LOOKUP, params={"email": "person0@example.com"}, headers=headers)

    assert listed.json() == {"ok": False, "error": error}
    assert looked_up.json() == {"ok": False, "error": error}


def test_users_list_is_tier_2_twenty_a_minute_then_429_with_retry_after(
    client: TestClient, clock: FakeClock
) -> None:
    seed(client, people(2))
    allowed = [client.get(LIST, headers=BOT).status_code for _ in range(20)]

    over = client.get(LIST, headers=BOT)
    lookups_meanwhile = lookup(client, "person0@example.com")
    clock.now += 3
    later = client.get(LIST, headers=BOT)

    assert allowed == [200] * 20
    assert over.status_code == 429
    assert over.json() == {"ok": False, "error": "ratelimited"}
    assert over.headers["Retry-After"] == "3"
    assert lookups_meanwhile.json()["ok"] is True
    assert later.status_code == 200


def test_lookup_by_email_is_tier_3_fifty_a_minute(client: TestClient) -> None:
    seed(client, people(1))

    statuses = [lookup(client, "person0@example.com").status_code for _ in range(51)]

    assert statuses == [200] * 50 + [429]


def test_raising_a_tier_lets_the_benchmark_go_faster(client: TestClient, clock: FakeClock) -> None:
    seed(client, people(1))
    response = client.post(
        "/_sandbox/rate-limits",
        json={"provider": "slack", "endpoint": "users.lookupByEmail", "per_minute": 30000},
    )
    statuses = set()
    for _ in range(200):  # 10 ms apart: 5 refilled each time at the raised limit, 0.008 at Slack's
        statuses.add(lookup(client, "person0@example.com").status_code)
        clock.now += 0.01

    assert response.json() == {
        "provider": "slack",
        "endpoint": "users.lookupByEmail",
        "per_minute": 30000,
        "burst": 50,
    }
    assert statuses == {200}


def test_an_injected_429_storm_is_slack_s_ratelimited(client: TestClient) -> None:
    seed(client, people(1))
    client.post(
        "/_sandbox/faults",
        json={
            "provider": "slack",
            "endpoint": "users.list",
            "status": 429,
            "count": 2,
            "retry_after": 1,
        },
    )

    storm = [client.get(LIST, headers=BOT) for _ in range(3)]

    assert [response.status_code for response in storm] == [429, 429, 200]
    assert storm[0].json() == {"ok": False, "error": "ratelimited"}
    assert storm[0].headers["Retry-After"] == "1"


def test_seeding_an_email_again_replaces_that_user_under_its_id(client: TestClient) -> None:
    [first] = seed(client, [{"email": "same@example.com"}])
    [second] = seed(client, [{"email": "SAME@example.com", "deleted": True}], replace=False)

    users = client.get("/_sandbox/slack/users").json()["users"]

    assert first == second
    assert [(user["id"], user["deleted"]) for user in users] == [(first, True)]


@pytest.mark.parametrize(
    "user",
    [{"real_name": "No Email"}, {"email": "not-an-address"}, {"email": "a@b.c", "deleted": "yes"}],
)
def test_seeding_refuses_users_slack_could_not_hold_and_adds_none(
    client: TestClient, user: dict[str, Any]
) -> None:
    seed(client, people(1))

    response = client.post(
        "/_sandbox/slack/users", json={"users": [{"email": "fine@example.com"}, user]}
    )

    assert response.status_code == 400
    assert response.json()["error"]
    assert len(client.get("/_sandbox/slack/users").json()["users"]) == 1


def test_one_email_twice_in_a_seed_is_one_user(client: TestClient) -> None:
    first, second = seed(
        client, [{"email": "twice@example.com"}, {"email": "Twice@example.com", "deleted": True}]
    )

    users = client.get("/_sandbox/slack/users").json()["users"]

    assert first == second
    assert [(user["id"], user["deleted"]) for user in users] == [(first, True)]
