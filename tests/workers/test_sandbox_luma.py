"""The sandbox's Luma in process: calendar events and guests with Luma's shapes and cursors, approvals,
the API key, and the 200-a-minute limit that blocks a key for the rest of the minute."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.workers.conftest import FakeClock
from workers.sandbox.luma import SANDBOX_API_KEY

KEY = {"x-luma-api-key": SANDBOX_API_KEY}
EVENTS = "/luma/v1/calendars/events/list"
GUESTS = "/luma/v1/events/guests/list"
UPDATE = "/luma/v1/events/guests/update-status"
GUEST_KEYS = {"id", "event_id", "user_email", "user_name", "approval_status", "registered_at"}


def seed(client: TestClient, *events: dict[str, Any], replace: bool = True) -> list[dict[str, Any]]:
    response = client.post(
        "/_sandbox/luma/events", json={"events": list(events), "replace": replace}
    )
    assert response.status_code == 201, response.text
    created: list[dict[str, Any]] = response.json()["events"]
    return created


def pending(*emails: str) -> list[dict[str, Any]]:
    return [{"email": email} for email in emails]


def list_guests(client: TestClient, event_id: str, **query: Any) -> Any:
    return client.get(GUESTS, params={"event_id": event_id, **query}, headers=KEY)


def page_through(client: TestClient, event_id: str, limit: int, status: str) -> list[str]:
    """Every guest email with `status`, following cursors; approves nothing."""
    seen: list[str] = []
    cursor: str | None = None
    while True:
        query: dict[str, Any] = {"pagination_limit": limit, "approval_status": status}
        if cursor:
            query["pagination_cursor"] = cursor
        body = list_guests(client, event_id, **query).json()
        seen += [guest["user_email"] for guest in body["entries"]]
        if not body["has_more"]:
            assert body["next_cursor"] is None
            return seen
        cursor = body["next_cursor"]


def set_status(client: TestClient, event_id: str, guest_id: str, status: str) -> Any:
    return client.post(
        UPDATE, json={"event_id": event_id, "guest_id": guest_id, "status": status}, headers=KEY
    )


def test_events_list_answers_upcoming_events_in_start_order_page_by_page(
    client: TestClient,
) -> None:
    seed(
        client,
        {"id": "evt-late", "name": "Late", "start_at": "2031-03-01T18:00:00Z", "guests": []},
        {"id": "evt-past", "name": "Past", "start_at": "2020-01-01T18:00:00Z", "guests": []},
        {"id": "evt-early", "name": "Early", "start_at": "2031-01-01T18:00:00Z", "guests": []},
        {"id": "evt-middle", "start_at": "2031-02-01T18:00:00+00:00", "guests": []},
    )

    first = client.get(
        EVENTS,
        params={"after": "2030-01-01T00:00:00Z", "pagination_limit": 2, "sort_column": "start_at"},
        headers=KEY,
    ).json()
    second = client.get(
        EVENTS,
        params={"after": "2030-01-01T00:00:00Z", "pagination_cursor": first["next_cursor"]},
        headers=KEY,
    ).json()

    assert [event["id"] for event in first["entries"]] == ["evt-early", "evt-middle"]
    assert first["has_more"] is True
    assert [event["id"] for event in second["entries"]] == ["evt-late"]
    assert (second["has_more"], second["next_cursor"]) == (False, None)
    event = first["entries"][0]
    assert set(event) == {"id", "name", "start_at", "end_at", "timezone", "url"}
    assert event["start_at"] == "2031-01-01T18:00:00.000Z"
    assert event["end_at"] > event["start_at"]


def test_events_seeded_without_a_start_are_upcoming(client: TestClient) -> None:
    created = seed(client, {"guests": []}, {"guests": []})

    body = client.get(EVENTS, params={"after": "2026-01-01T00:00:00Z"}, headers=KEY).json()

    assert {event["id"] for event in body["entries"]} == {event["id"] for event in created}
    assert all(event["id"].startswith("evt-") for event in created)


def test_guests_list_pages_through_pending_guests_with_luma_shapes(client: TestClient) -> None:
    emails = [f"guest{n}@example.com" for n in range(7)]
    [event] = seed(
        client,
        {
            "id": "evt-pages",
            "guests": [
                *pending(*emails),
                {"email": "in@example.com", "approval_status": "approved"},
            ],
        },
    )

    first = list_guests(client, "evt-pages", approval_status="pending_approval", pagination_limit=3)

    body = first.json()
    assert len(body["entries"]) == 3
    assert set(body["entries"][0]) == GUEST_KEYS
    assert body["entries"][0]["event_id"] == "evt-pages"
    assert sorted(page_through(client, "evt-pages", 3, "pending_approval")) == sorted(emails)
    assert page_through(client, "evt-pages", 3, "approved") == ["in@example.com"]
    assert len(event["guests"]) == 8


def test_a_guest_approved_between_pages_does_not_shift_the_next_page(client: TestClient) -> None:
    seed(client, {"id": "evt-shift", "guests": pending(*[f"g{n}@example.com" for n in range(6)])})
    first = list_guests(client, "evt-shift", approval_status="pending_approval", pagination_limit=3)
    page1 = first.json()
    for guest in page1["entries"]:
        assert set_status(client, "evt-shift", guest["id"], "approved").status_code == 200

    page2 = list_guests(
        client,
        "evt-shift",
        approval_status="pending_approval",
        pagination_limit=3,
        pagination_cursor=page1["next_cursor"],
    ).json()

    seen = {guest["id"] for guest in page1["entries"] + page2["entries"]}
    assert len(seen) == 6
    assert page2["has_more"] is False


def test_page_size_is_capped_at_100_and_defaults_to_50(client: TestClient) -> None:
    seed(client, {"id": "evt-big", "guests": pending(*[f"p{n}@example.com" for n in range(130)])})

    capped = list_guests(client, "evt-big", pagination_limit=500).json()
    default = list_guests(client, "evt-big").json()

    assert len(capped["entries"]) == 100
    assert len(default["entries"]) == 50
    assert capped["has_more"] is True


@pytest.mark.parametrize("limit", ["0", "-3", "many"])
def test_a_bad_page_size_is_a_400(client: TestClient, limit: str) -> None:
    seed(client, {"id": "evt-bad", "guests": []})

    response = list_guests(client, "evt-bad", pagination_limit=limit)

    assert response.status_code == 400
    assert "message" in response.json()


def test_guests_of_an_unknown_event_are_a_404_with_a_message(client: TestClient) -> None:
    seed(client, {"id": "evt-known", "guests": []})

    response = list_guests(client, "evt-unknown")

    assert response.status_code == 404
    assert "evt-unknown" in response.json()["message"]


def test_update_status_approves_and_declines_and_the_control_api_reads_it(
    client: TestClient,
) -> None:
    [event] = seed(
        client, {"id": "evt-decide", "guests": pending("a@example.com", "b@example.com")}
    )
    first, second = event["guests"]

    approved = set_status(client, "evt-decide", first, "approved")
    declined = client.post(
        UPDATE,
        json={
            "event_id": "evt-decide",
            "guest_id": "B@Example.com",
            "status": "declined",
            "send_email": False,
        },
        headers=KEY,
    )

    assert (approved.status_code, approved.json()) == (200, {})
    assert (declined.status_code, declined.json()) == (200, {})
    guests = client.get("/_sandbox/luma/guests", params={"event_id": "evt-decide"}).json()["guests"]
    assert {guest["id"]: guest["approval_status"] for guest in guests} == {
        first: "approved",
        second: "declined",
    }


def test_setting_the_status_a_guest_has_answers_ok_without_effect(client: TestClient) -> None:
    [event] = seed(client, {"id": "evt-twice", "guests": pending("twice@example.com")})

    set_status(client, "evt-twice", event["guests"][0], "approved")
    again = set_status(client, "evt-twice", event["guests"][0], "approved")

    assert again.status_code == 200
    calls = client.get("/_sandbox/calls", params={"provider": "luma"}).json()["calls"]
    assert [call["effect"] for call in calls] == [True, False]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"event_id": "evt-x", "guest_id": "gst-nobody", "status": "approved"}, 404),
        ({"event_id": "evt-nowhere", "guest_id": "gst-nobody", "status": "approved"}, 404),
        ({"event_id": "evt-x", "guest_id": "x@example.com", "status": "maybe"}, 400),
        ({"event_id": "evt-x", "status": "approved"}, 400),
        (
            {
                "event_id": "evt-x",
                "guest_id": "x@example.com",
                "status": "approved",
                "send_email": "no",
            },
            400,
        ),
    ],
)
def test_update_status_refuses_unknown_guests_and_bad_requests(
    client: TestClient, body: dict[str, Any], status: int
) -> None:
    seed(client, {"id": "evt-x", "guests": pending("x@example.com")})

    response = client.post(UPDATE, json=body, headers=KEY)

    assert response.status_code == status
    assert isinstance(response.json()["message"], str)
    guests = client.get("/_sandbox/luma/guests", params={"event_id": "evt-x"}).json()["guests"]
    assert guests[0]["approval_status"] == "pending_approval"


@pytest.mark.parametrize(
    "headers", [{}, {"x-luma-api-key": "wrong"}, {"x-luma-api-key": "secret-"}]
)
def test_a_missing_or_wrong_api_key_is_a_401(client: TestClient, headers: dict[str, str]) -> None:
    seed(client, {"id": "evt-auth", "guests": pending("auth@example.com")})

    response = client.get(GUESTS, params={"event_id": "evt-auth"}, headers=headers)

    assert response.status_code == 401
    assert response.json()["message"]


def test_over_200_a_minute_the_key_gets_429_and_stays_blocked_for_the_minute(
    client: TestClient, clock: FakeClock
) -> None:
    seed(client, {"id": "evt-limit", "guests": pending("limit@example.com")})
    for _ in range(199):  # the seed did not count: control calls are not provider calls
        assert list_guests(client, "evt-limit").status_code == 200
    last = list_guests(client, "evt-limit")

    over = list_guests(client, "evt-limit")
    clock.now += 45  # a plain bucket would have refilled 150 calls by now
    still = client.post(
        UPDATE,
        json={"event_id": "evt-limit", "guest_id": "limit@example.com", "status": "approved"},
        headers=KEY,
    )
    clock.now += 16
    after_the_minute = list_guests(client, "evt-limit")

    assert last.status_code == 200
    assert last.headers["X-RateLimit-Limit"] == "200"
    assert last.headers["X-RateLimit-Remaining"] == "0"
    assert over.status_code == 429
    assert over.headers["Retry-After"] == "60"
    assert int(over.headers["X-RateLimit-Reset"]) > 0
    assert over.json()["message"]
    assert still.status_code == 429
    assert 14 <= int(still.headers["Retry-After"]) <= 16
    assert after_the_minute.status_code == 200
    guests = client.get("/_sandbox/luma/guests", params={"event_id": "evt-limit"}).json()["guests"]
    assert guests[0]["approval_status"] == "pending_approval"


def calls_over_two_and_a_half_seconds(client: TestClient, clock: FakeClock) -> set[int]:
    """The statuses of 250 calls 10 ms apart (Luma's real limit refills 8 of them meanwhile)."""
    statuses = set()
    for _ in range(250):
        statuses.add(list_guests(client, "evt-raise").status_code)
        clock.now += 0.01
    return statuses


def test_a_raised_limit_lets_more_calls_through_and_reset_restores_luma_s(
    client: TestClient, clock: FakeClock
) -> None:
    seed(client, {"id": "evt-raise", "guests": []})
    raised = client.post(
        "/_sandbox/rate-limits", json={"provider": "luma", "endpoint": "*", "per_minute": 120000}
    )
    at_the_raised_limit = calls_over_two_and_a_half_seconds(client, clock)
    limits = client.get("/_sandbox/rate-limits").json()["rate_limits"]
    reset = client.delete("/_sandbox/rate-limits")
    at_luma_s_limit = calls_over_two_and_a_half_seconds(client, clock)

    assert raised.status_code == 200
    assert at_the_raised_limit == {200}
    assert {"provider": "luma", "endpoint": "*", "per_minute": 120000, "documented": 200} in limits
    assert reset.json() == {"reset": 1}
    assert at_luma_s_limit == {200, 429}
    assert list_guests(client, "evt-raise").headers["X-RateLimit-Limit"] == "200"


def test_a_lowered_limit_refuses_sooner(client: TestClient) -> None:
    seed(client, {"id": "evt-low", "guests": []})
    client.post(
        "/_sandbox/rate-limits", json={"provider": "luma", "endpoint": "*", "per_minute": 2}
    )

    statuses = [list_guests(client, "evt-low").status_code for _ in range(3)]

    assert statuses == [200, 200, 429]


@pytest.mark.parametrize(
    "body",
    [
        {"provider": "luma", "endpoint": "list-guests", "per_minute": 10},
        {"provider": "luma", "endpoint": "*", "per_minute": 0},
        {"provider": "luma", "endpoint": "*", "per_minute": "fast"},
        {"provider": "nobody", "endpoint": "*", "per_minute": 10},
    ],
)
def test_a_rate_limit_that_does_not_exist_or_makes_no_sense_is_refused(
    client: TestClient, body: dict[str, Any]
) -> None:
    response = client.post("/_sandbox/rate-limits", json=body)

    assert response.status_code == 400
    assert response.json()["error"]


def test_an_injected_outage_answers_luma_s_error_shape(client: TestClient) -> None:
    seed(client, {"id": "evt-down", "guests": pending("down@example.com")})
    client.post(
        "/_sandbox/faults",
        json={"provider": "luma", "endpoint": "list-guests", "status": 503, "count": 1},
    )

    down = list_guests(client, "evt-down")
    up = list_guests(client, "evt-down")

    assert down.status_code == 503
    assert down.json()["message"]
    assert up.status_code == 200


def test_seeding_refuses_guests_without_an_email_and_adds_nothing(client: TestClient) -> None:
    response = client.post(
        "/_sandbox/luma/events",
        json={
            "events": [{"id": "evt-none", "guests": [{"email": "ok@example.com"}, {"name": "x"}]}]
        },
    )

    assert response.status_code == 400
    assert client.get("/_sandbox/luma/guests", params={"event_id": "evt-none"}).status_code == 404


def test_seeding_a_known_email_again_updates_that_guest(client: TestClient) -> None:
    [first] = seed(client, {"id": "evt-again", "guests": pending("again@example.com")})
    [second] = seed(
        client,
        {
            "id": "evt-again",
            "guests": [{"email": "AGAIN@example.com", "approval_status": "declined"}],
        },
        replace=False,
    )

    guests = client.get("/_sandbox/luma/guests", params={"event_id": "evt-again"}).json()["guests"]
    assert first["guests"] == second["guests"]
    assert [guest["approval_status"] for guest in guests] == ["declined"]


def test_one_email_twice_in_a_seed_is_one_guest(client: TestClient) -> None:
    [event] = seed(
        client,
        {
            "id": "evt-dup",
            "guests": [
                {"email": "dup@example.com"},
                {"email": "DUP@example.com", "approval_status": "approved"},
            ],
        },
    )

    guests = client.get("/_sandbox/luma/guests", params={"event_id": "evt-dup"}).json()["guests"]

    assert event["guests"][0] == event["guests"][1]
    assert [guest["approval_status"] for guest in guests] == ["approved"]
