"""The sandbox's Mailchimp in process: list members by subscriber hash, tags, permanent deletes, problem
documents, Basic auth and the limit of 10 simultaneous connections per key."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from starlette.testclient import TestClient

from workers.sandbox.server import create_sandbox_app

API_KEY = "0123456789abcdef0123456789abcdef-us21"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"anystring:{API_KEY}".encode()).decode()}
LIST = "a1b2c3d4e5"
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


def md5(email: str) -> str:
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


def member_url(email: str, suffix: str = "") -> str:
    return f"/mailchimp/3.0/lists/{LIST}/members/{md5(email)}{suffix}"


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_sandbox_app()) as test_client:
        yield test_client


def put(client: TestClient, email: str, **body: Any) -> Any:
    payload = {"email_address": email, "status_if_new": "subscribed", **body}
    return client.put(member_url(email), json=payload, headers=AUTH)


def members(client: TestClient) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = client.get(f"/_sandbox/mailchimp/lists/{LIST}/members").json()[
        "members"
    ]
    return result


def assert_problem(response: Any, status: int, title: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_KEYS
    assert (body["status"], body["title"]) == (status, title)
    return body


def test_put_adds_a_member_under_its_subscriber_hash(client: TestClient) -> None:
    response = put(client, "Ada@Example.com", merge_fields={"FNAME": "Ada", "LNAME": "Lovelace"})

    assert response.status_code == 200
    member = response.json()
    assert member["id"] == md5("ada@example.com")
    assert (member["email_address"], member["status"], member["list_id"]) == (
        "Ada@Example.com",
        "subscribed",
        LIST,
    )
    assert member["merge_fields"] == {"FNAME": "Ada", "LNAME": "Lovelace"}
    assert member["full_name"] == "Ada Lovelace"
    assert members(client) == [
        {
            "id": md5("ada@example.com"),
            "email_address": "Ada@Example.com",
            "status": "subscribed",
            "merge_fields": {"FNAME": "Ada", "LNAME": "Lovelace"},
            "tags": [],
            "last_changed": member["last_changed"],
        }
    ]


def test_put_again_updates_merge_fields_and_ignores_status_if_new(client: TestClient) -> None:
    put(client, "ada@example.com", merge_fields={"FNAME": "Ada", "LNAME": "L"})

    response = put(
        client, "ada@example.com", status_if_new="pending", merge_fields={"LNAME": "Lovelace"}
    )

    assert response.json()["status"] == "subscribed"
    assert members(client)[0]["merge_fields"] == {"FNAME": "Ada", "LNAME": "Lovelace"}


def test_put_refuses_an_email_that_does_not_match_the_hash(client: TestClient) -> None:
    response = client.put(
        member_url("ada@example.com"),
        json={"email_address": "grace@example.com", "status_if_new": "subscribed"},
        headers=AUTH,
    )

    assert "does not match" in assert_problem(response, 400, "Invalid Resource")["detail"]
    assert members(client) == []


def test_a_new_member_needs_a_status(client: TestClient) -> None:
    response = client.put(
        member_url("ada@example.com"), json={"email_address": "ada@example.com"}, headers=AUTH
    )

    body = assert_problem(response, 400, "Invalid Resource")
    assert body["errors"][0]["field"] == "status_if_new"


@pytest.mark.parametrize(
    ("body", "title"),
    [
        ({"status_if_new": "maybe"}, "Invalid Resource"),
        ({"merge_fields": ["FNAME"]}, "Invalid Resource"),
    ],
)
def test_invalid_member_fields_are_400(
    client: TestClient, body: dict[str, Any], title: str
) -> None:
    assert_problem(put(client, "ada@example.com", **body), 400, title)


def test_get_answers_the_member_or_a_404_problem(client: TestClient) -> None:
    put(client, "ada@example.com")

    assert client.get(member_url("ada@example.com"), headers=AUTH).json()["status"] == "subscribed"
    missing = client.get(member_url("nobody@example.com"), headers=AUTH)
    body = assert_problem(missing, 404, "Resource Not Found")
    assert body["type"].startswith("https://mailchimp.com/developer/")


def test_patch_changes_the_email_and_moves_the_member_to_the_new_hash(client: TestClient) -> None:
    put(client, "old@example.com", merge_fields={"FNAME": "Ada"})

    response = client.patch(
        member_url("old@example.com"), json={"email_address": "new@example.com"}, headers=AUTH
    )

    assert response.status_code == 200
    assert response.json()["id"] == md5("new@example.com")
    assert client.get(member_url("old@example.com"), headers=AUTH).status_code == 404
    assert client.get(member_url("new@example.com"), headers=AUTH).status_code == 200
    assert [(m["email_address"], m["merge_fields"]) for m in members(client)] == [
        ("new@example.com", {"FNAME": "Ada"})
    ]


def test_patch_onto_an_existing_member_is_member_exists(client: TestClient) -> None:
    put(client, "one@example.com")
    put(client, "two@example.com")

    response = client.patch(
        member_url("one@example.com"), json={"email_address": "two@example.com"}, headers=AUTH
    )

    assert_problem(response, 400, "Member Exists")
    assert len(members(client)) == 2


def test_patch_of_an_unknown_member_is_404(client: TestClient) -> None:
    response = client.patch(
        member_url("x@example.com"), json={"status": "unsubscribed"}, headers=AUTH
    )

    assert_problem(response, 404, "Resource Not Found")


def test_tags_are_added_and_removed_with_a_204(client: TestClient) -> None:
    put(client, "ada@example.com")
    url = member_url("ada@example.com", "/tags")

    added = client.post(
        url,
        json={
            "tags": [{"name": "active", "status": "active"}, {"name": "vip", "status": "active"}]
        },
        headers=AUTH,
    )
    removed = client.post(url, json={"tags": [{"name": "vip", "status": "inactive"}]}, headers=AUTH)

    assert (added.status_code, added.content) == (204, b"")
    assert removed.status_code == 204
    assert members(client)[0]["tags"] == ["active"]
    tags = client.get(member_url("ada@example.com"), headers=AUTH).json()["tags"]
    assert [tag["name"] for tag in tags] == ["active"]


def test_tags_of_an_unknown_member_or_with_a_bad_status_are_refused(client: TestClient) -> None:
    put(client, "ada@example.com")

    unknown = client.post(
        member_url("x@example.com", "/tags"),
        json={"tags": [{"name": "active", "status": "active"}]},
        headers=AUTH,
    )
    bad = client.post(
        member_url("ada@example.com", "/tags"),
        json={"tags": [{"name": "active", "status": "on"}]},
        headers=AUTH,
    )

    assert_problem(unknown, 404, "Resource Not Found")
    assert assert_problem(bad, 400, "Invalid Resource")["errors"][0]["field"] == "tags.0.status"


def test_delete_permanent_erases_the_member_and_it_cannot_simply_come_back(
    client: TestClient,
) -> None:
    put(client, "ada@example.com")
    url = member_url("ada@example.com", "/actions/delete-permanent")

    deleted = client.post(url, headers=AUTH)

    assert (deleted.status_code, deleted.content) == (204, b"")
    assert members(client) == []
    assert_problem(client.post(url, headers=AUTH), 404, "Resource Not Found")
    assert_problem(put(client, "ada@example.com"), 400, "Forgotten Email Not Subscribed")
    assert put(client, "ada@example.com", status_if_new="pending").status_code == 200


def test_without_an_api_key_the_answer_is_a_401_problem(client: TestClient) -> None:
    missing = client.get(member_url("ada@example.com"))
    wrong = client.get(
        member_url("ada@example.com"),
        headers={"Authorization": "Basic " + base64.b64encode(b"user:not-a-key").decode()},
    )

    assert_problem(missing, 401, "API Key Missing")
    assert_problem(wrong, 401, "API Key Invalid")


def test_any_key_with_a_data_center_suffix_is_accepted(client: TestClient) -> None:
    sandbox_key = {"Authorization": "Basic " + base64.b64encode(b"x:sandbox-us1").decode()}

    assert client.get(member_url("ada@example.com"), headers=sandbox_key).status_code == 404


def test_an_unknown_path_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/mailchimp/3.0/campaigns", headers=AUTH), 404, "Resource Not Found")


def test_an_injected_fault_is_a_problem_document(client: TestClient) -> None:
    client.post(
        "/_sandbox/faults",
        json={"provider": "mailchimp", "endpoint": "set-list-member", "status": 503},
    )

    assert_problem(put(client, "ada@example.com"), 503, "Service Unavailable")


def test_the_eleventh_simultaneous_call_of_a_key_is_refused_with_429(client: TestClient) -> None:
    client.post(
        "/_sandbox/faults",
        json={
            "provider": "mailchimp",
            "endpoint": "get-list-member",
            "status": 0,
            "latency": 0.5,
            "count": -1,
        },
    )

    with ThreadPoolExecutor(max_workers=11) as pool:
        responses = list(
            pool.map(
                lambda n: client.get(member_url(f"user{n}@example.com"), headers=AUTH), range(11)
            )
        )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [404] * 10 + [429]  # ten served (no such members), one refused
    refused = next(response for response in responses if response.status_code == 429)
    assert_problem(refused, 429, "Too Many Requests")
    assert refused.headers["Retry-After"] == "1"
    concurrency = client.get("/_sandbox/concurrency", params={"provider": "mailchimp"}).json()
    assert concurrency == {"in_flight": 0, "max_in_flight": 11}
