"""The dead-letter and webhook pages: sign-in, the session cookie, CSRF, scopes, and every action
going through the same store functions as the CLI and the API, audited under the key's name."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from schemas.db import session_scope
from schemas.tables import AuditEntry, DeadLetter, InboxStatus
from tests.support.admin_world import Published, SentTasks
from tests.webhooks_gateway.admin.conftest import ADMIN, MakeClient, PagesWorld, csrf_of, sign_in
from workers import api_keys
from workers.dead_letters import REPLAY_HEADER


def _cookie_header(response_headers: list[str]) -> str:
    (cookie,) = [value for value in response_headers if value.startswith("hookfleet_admin=")]
    return cookie.lower()


def _group_audit(world: PagesWorld) -> list[AuditEntry]:
    with world.sessions() as session:
        return list(
            session.scalars(
                select(AuditEntry).where(
                    AuditEntry.action == "dead_letter.group_replayed",
                    AuditEntry.entity_id == world.task_name,
                )
            )
        )


# --- signing in -------------------------------------------------------------------------------


def test_a_page_asked_for_while_signed_out_leads_to_sign_in_and_back(
    client: TestClient, world: PagesWorld
) -> None:
    _, key = world.key("dlq:read")

    response = client.get(f"{ADMIN}/dead-letters?status=any", follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"].endswith(
        "/admin/sign-in?next=%2Fadmin%2Fdead-letters%3Fstatus%3Dany"
    )
    form = client.get(response.headers["location"])
    signed_in = client.post(
        f"{ADMIN}/sign-in",
        data={
            "api_key": key,
            "csrf_token": csrf_of(form.text),
            "next": "/admin/dead-letters?status=any",
        },
        follow_redirects=False,
    )
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/admin/dead-letters?status=any"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/admin/", "/elsewhere"])
def test_after_sign_in_next_never_leads_off_the_admin_pages(
    client: TestClient, world: PagesWorld, target: str
) -> None:
    _, key = world.key("dlq:read")
    form = client.get(f"{ADMIN}/sign-in")

    response = client.post(
        f"{ADMIN}/sign-in",
        data={"api_key": key, "csrf_token": csrf_of(form.text), "next": target},
        follow_redirects=False,
    )

    assert response.status_code == 303
    assert response.headers["location"] == "http://testserver/admin/"


def test_the_session_cookie_is_httponly_samesite_and_scoped_to_admin(
    client: TestClient, world: PagesWorld
) -> None:
    _, key = world.key("dlq:read")
    form = client.get(f"{ADMIN}/sign-in")

    response = client.post(
        f"{ADMIN}/sign-in",
        data={"api_key": key, "csrf_token": csrf_of(form.text)},
        follow_redirects=False,
    )

    cookie = _cookie_header(response.headers.get_list("set-cookie"))
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "path=/admin;" in cookie
    assert "max-age=28800" in cookie
    assert "secure" not in cookie  # plain http: a Secure cookie would never come back


def test_over_https_the_session_cookie_is_also_secure(
    make_client: MakeClient, world: PagesWorld
) -> None:
    client = make_client(https=True)

    response = client.get(f"{ADMIN}/sign-in")

    cookie = _cookie_header(response.headers.get_list("set-cookie"))
    assert "; secure" in cookie
    assert "httponly" in cookie


def test_pages_forbid_framing_scripts_and_caching(client: TestClient) -> None:
    response = client.get(f"{ADMIN}/sign-in")

    assert response.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


def test_an_unknown_key_is_refused_audited_and_signs_nobody_in(
    client: TestClient, world: PagesWorld
) -> None:
    form = client.get(f"{ADMIN}/sign-in")

    response = client.post(
        f"{ADMIN}/sign-in",
        data={"api_key": "hf_00000000_not-a-key", "csrf_token": csrf_of(form.text)},
    )

    assert response.status_code == 401
    assert "Unknown or revoked API key" in response.text
    assert client.get(f"{ADMIN}/health", follow_redirects=False).status_code == 303
    (refused,) = world.refused_sign_ins()
    assert (refused.actor, refused.entity_id) == ("web:anonymous", "testclient")
    assert "not-a-key" not in str(refused.detail)


def test_sign_in_without_the_form_token_is_refused(client: TestClient, world: PagesWorld) -> None:
    _, key = world.key("dlq:read")
    client.get(f"{ADMIN}/sign-in")

    response = client.post(f"{ADMIN}/sign-in", data={"api_key": key})

    assert response.status_code == 403
    assert client.get(f"{ADMIN}/health", follow_redirects=False).status_code == 303


def test_sign_in_attempts_are_rate_limited_per_address(
    make_client: MakeClient, world: PagesWorld
) -> None:
    client = make_client(admin_sign_in_per_minute=2)
    _, key = world.key("dlq:read")
    token = csrf_of(client.get(f"{ADMIN}/sign-in").text)
    wrong = {"api_key": "hf_00000000_guess", "csrf_token": token}

    attempts = [client.post(f"{ADMIN}/sign-in", data=wrong).status_code for _ in range(2)]
    limited = client.post(f"{ADMIN}/sign-in", data={"api_key": key, "csrf_token": token})

    assert attempts == [401, 401]
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert client.get(f"{ADMIN}/health", follow_redirects=False).status_code == 303


def test_sign_in_and_sign_out_are_audited_and_sign_out_ends_the_session(
    client: TestClient, world: PagesWorld
) -> None:
    name, key = world.key("dlq:read")
    token = sign_in(client, key)

    response = client.post(f"{ADMIN}/sign-out", data={"csrf_token": token}, follow_redirects=False)

    assert response.status_code == 303
    assert client.get(f"{ADMIN}/dead-letters", follow_redirects=False).status_code == 303
    with world.sessions() as session:
        actions = session.scalars(
            select(AuditEntry.action)
            .where(AuditEntry.actor == f"web:{name}", AuditEntry.entity_type == "api_key")
            .order_by(AuditEntry.id)
        ).all()
    assert actions == ["admin.signed_in", "admin.signed_out"]


def test_a_key_revoked_after_sign_in_is_signed_out_on_its_next_request(
    client: TestClient, world: PagesWorld
) -> None:
    name, key = world.key("dlq:read")
    sign_in(client, key)
    assert client.get(f"{ADMIN}/dead-letters").status_code == 200
    with session_scope(world.sessions) as session:
        api_keys.revoke(session, name, actor="test")

    response = client.get(f"{ADMIN}/dead-letters", follow_redirects=False)

    assert response.status_code == 303
    assert "/admin/sign-in" in response.headers["location"]
    assert "was revoked" in client.get(response.headers["location"]).text


# --- scopes and CSRF --------------------------------------------------------------------------


def test_a_key_without_dlq_read_sees_403_on_the_dead_letter_pages(
    client: TestClient, world: PagesWorld
) -> None:
    dead = world.dead_letter()
    sign_in(client, world.key("events:read")[1])

    listing = client.get(f"{ADMIN}/dead-letters")
    detail = client.get(f"{ADMIN}/dead-letters/{dead.id}")

    assert listing.status_code == detail.status_code == 403
    assert "lacks the scope &#39;dlq:read&#39;" in listing.text
    assert "Dead letters</a>" not in listing.text  # the navigation offers only what the key may see


def test_a_key_with_dlq_read_only_may_look_but_not_replay(
    client: TestClient, world: PagesWorld, sent: SentTasks
) -> None:
    dead = world.dead_letter()
    token = sign_in(client, world.key("dlq:read")[1])

    page = client.get(f"{ADMIN}/dead-letters/{dead.id}")
    replay = client.post(f"{ADMIN}/dead-letters/{dead.id}/replay", data={"csrf_token": token})

    assert page.status_code == 200
    assert 'id="replay"' not in page.text
    assert replay.status_code == 403
    assert sent.calls == []
    assert world.reload_dead_letter(dead.id).status == "dead"


@pytest.mark.parametrize("token", [None, "", "forged-token"], ids=["missing", "empty", "wrong"])
def test_an_action_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    client: TestClient, world: PagesWorld, sent: SentTasks, token: str | None
) -> None:
    dead = world.dead_letter()
    sign_in(client, world.key("dlq:read,dlq:write")[1])
    data = {} if token is None else {"csrf_token": token}

    replay = client.post(f"{ADMIN}/dead-letters/{dead.id}/replay", data=data)
    discard = client.post(
        f"{ADMIN}/dead-letters/{dead.id}/discard", data={**data, "reason": "forged"}
    )

    assert replay.status_code == discard.status_code == 403
    assert "security token" in replay.text
    assert sent.calls == []
    assert world.reload_dead_letter(dead.id).status == "dead"
    assert world.audit("dead_letter.replayed", dead.id) == []


def test_the_token_of_another_session_is_refused(
    make_client: MakeClient, world: PagesWorld, sent: SentTasks
) -> None:
    dead = world.dead_letter()
    key = world.key("dlq:read,dlq:write")[1]
    attacker, victim = make_client(), make_client()
    attacker_token = sign_in(attacker, key)
    sign_in(victim, key)

    response = victim.post(
        f"{ADMIN}/dead-letters/{dead.id}/replay", data={"csrf_token": attacker_token}
    )

    assert response.status_code == 403
    assert sent.calls == []


# --- dead letters -----------------------------------------------------------------------------


def test_dead_letters_are_grouped_by_task_and_error_type_with_counts(
    client: TestClient, world: PagesWorld
) -> None:
    for _ in range(3):
        world.dead_letter()
    other = world.dead_letter()
    with session_scope(world.sessions) as session:
        row = session.get(DeadLetter, other.id)
        assert row is not None
        row.exc_type = "workers.errors.TransientError"
    world.dead_letter(status="discarded")
    sign_in(client, world.key("dlq:read")[1])

    page = client.get(f"{ADMIN}/dead-letters", params={"task": world.task_name})

    assert page.status_code == 200
    groups = re.findall(
        r"<td><code>([^<]+)</code></td>\s*<td><code>([^<]+)</code></td>\s*"
        r'<td class="num">(\d+)</td>',
        page.text,
    )
    assert groups == [
        (world.task_name, "workers.errors.PermanentError", "3"),
        (world.task_name, "workers.errors.TransientError", "1"),
    ]  # the discarded one is not dead, so the default filter leaves it out


def test_filters_narrow_the_list_by_error_type_and_status(
    client: TestClient, world: PagesWorld
) -> None:
    dead = world.dead_letter()
    discarded = world.dead_letter(status="discarded")
    sign_in(client, world.key("dlq:read")[1])

    by_status = client.get(
        f"{ADMIN}/dead-letters", params={"task": world.task_name, "status": "discarded"}
    )
    by_error = client.get(
        f"{ADMIN}/dead-letters",
        params={"task": world.task_name, "status": "any", "exc_type": "builtins.KeyError"},
    )

    assert f'dead_letter_id={discarded.id}"' not in by_status.text  # links are paths, not params
    assert f'/admin/dead-letters/{discarded.id}"' in by_status.text
    assert f'/admin/dead-letters/{dead.id}"' not in by_status.text
    assert "Nothing matches this filter" in by_error.text


def test_the_detail_shows_arguments_traceback_attempts_and_the_originating_webhook(
    client: TestClient, world: PagesWorld
) -> None:
    event = world.event(status=InboxStatus.FAILED)
    dead = world.dead_letter()
    with session_scope(world.sessions) as session:
        row = session.get(DeadLetter, dead.id)
        assert row is not None
        row.inbox_id = event.id
    sign_in(client, world.key("dlq:read,events:read")[1])

    page = client.get(f"{ADMIN}/dead-letters/{dead.id}")

    assert page.status_code == 200
    assert "cus_Test" in page.text
    assert "ada@example.com" in page.text
    assert "PermanentError" in page.text
    assert "Traceback (most recent call last)" in page.text
    assert "<dt>Attempts</dt><dd>4</dd>" in page.text
    assert f"/admin/events/{event.id}" in page.text
    assert world.event_type in page.text


def test_an_unknown_dead_letter_or_page_is_a_404_page(
    client: TestClient, world: PagesWorld
) -> None:
    sign_in(client, world.key("dlq:read")[1])

    row = client.get(f"{ADMIN}/dead-letters/999999999")
    page = client.get(f"{ADMIN}/no-such-page")

    assert row.status_code == page.status_code == 404
    assert "dead letter 999999999 does not exist" in row.text
    assert page.headers["content-type"].startswith("text/html")


def test_replay_sends_the_same_task_marks_the_row_and_audits_the_key_name(
    client: TestClient, world: PagesWorld, sent: SentTasks
) -> None:
    dead = world.dead_letter()
    name, key = world.key("dlq:read,dlq:write")
    token = sign_in(client, key)

    response = client.post(f"{ADMIN}/dead-letters/{dead.id}/replay", data={"csrf_token": token})

    assert response.status_code == 200
    assert "Replayed dead letter" in response.text
    assert 'id="status">replayed<' in response.text
    assert sent.calls == [
        (world.task_name, [42, "cus_Test"], {"email": "ada@example.com"}, {REPLAY_HEADER: dead.id})
    ]
    row = world.reload_dead_letter(dead.id)
    assert (row.status, row.replayed_task_id) == ("replayed", sent.task_ids[0])
    assert [entry.actor for entry in world.audit("dead_letter.replayed", dead.id)] == [
        f"web:{name}"
    ]


def test_replaying_a_row_already_replayed_is_a_409_page(
    client: TestClient, world: PagesWorld, sent: SentTasks
) -> None:
    dead = world.dead_letter(status="replayed")
    token = sign_in(client, world.key("dlq:read,dlq:write")[1])

    response = client.post(f"{ADMIN}/dead-letters/{dead.id}/replay", data={"csrf_token": token})

    assert response.status_code == 409
    assert sent.calls == []


def test_replay_with_the_broker_down_is_a_503_page_and_the_row_stays_dead(
    client: TestClient, world: PagesWorld, sent: SentTasks
) -> None:
    dead = world.dead_letter()
    token = sign_in(client, world.key("dlq:read,dlq:write")[1])
    sent.broker_up = False

    response = client.post(f"{ADMIN}/dead-letters/{dead.id}/replay", data={"csrf_token": token})

    assert response.status_code == 503
    assert world.reload_dead_letter(dead.id).status == "dead"


def test_discard_needs_a_reason_and_keeps_it_audited(client: TestClient, world: PagesWorld) -> None:
    dead = world.dead_letter()
    name, key = world.key("dlq:read,dlq:write")
    token = sign_in(client, key)
    url = f"{ADMIN}/dead-letters/{dead.id}/discard"

    blank = client.post(url, data={"csrf_token": token, "reason": "   "})
    too_long = client.post(url, data={"csrf_token": token, "reason": "x" * 4001})
    kept_dead = world.reload_dead_letter(dead.id).status
    discarded = client.post(url, data={"csrf_token": token, "reason": "test data, not a bug"})

    assert "A discard needs a reason." in blank.text
    assert "at most 4000 characters" in too_long.text
    assert kept_dead == "dead"
    assert discarded.status_code == 200
    assert 'id="discard-reason">test data, not a bug<' in discarded.text
    row = world.reload_dead_letter(dead.id)
    assert (row.status, row.discard_reason) == ("discarded", "test data, not a bug")
    (entry,) = world.audit("dead_letter.discarded", dead.id)
    assert (entry.actor, entry.detail["reason"]) == (f"web:{name}", "test data, not a bug")


def test_group_replay_confirms_the_count_then_replays_the_rows_confirmed(
    client: TestClient, world: PagesWorld, sent: SentTasks
) -> None:
    group = [world.dead_letter() for _ in range(3)]
    other_task = world.dead_letter(task_name=f"{world.task_name}_other")
    name, key = world.key("dlq:read,dlq:write")
    sign_in(client, key)

    confirm = client.get(f"{ADMIN}/dead-letters/replay", params={"task": world.task_name})
    ids = [int(value) for value in re.findall(r'name="ids" value="(\d+)"', confirm.text)]
    discarded_meanwhile = group[0]
    with session_scope(world.sessions) as session:
        row = session.get(DeadLetter, discarded_meanwhile.id)
        assert row is not None
        row.status = "discarded"
    response = client.post(
        f"{ADMIN}/dead-letters/replay",
        data={"csrf_token": csrf_of(confirm.text), "task": world.task_name, "ids": ids},
    )

    assert "Replay 3 dead letters?" in confirm.text
    assert sorted(ids) == sorted(row.id for row in group)
    assert response.status_code == 200
    assert "Replayed 2 of 3 dead letters, 1 already acted on." in response.text
    assert sorted(call[3][REPLAY_HEADER] for call in sent.calls) == [r.id for r in group[1:]]
    assert world.reload_dead_letter(other_task.id).status == "dead"
    (entry,) = _group_audit(world)
    assert entry.actor == f"web:{name}"
    assert (entry.detail["confirmed"], entry.detail["skipped"]) == (3, [discarded_meanwhile.id])


def test_group_replay_with_the_broker_down_stops_and_leaves_the_rest_dead(
    client: TestClient, world: PagesWorld, sent: SentTasks
) -> None:
    group = [world.dead_letter() for _ in range(2)]
    token = sign_in(client, world.key("dlq:read,dlq:write")[1])
    sent.broker_up = False

    response = client.post(
        f"{ADMIN}/dead-letters/replay",
        data={"csrf_token": token, "task": world.task_name, "ids": [r.id for r in group]},
    )

    assert "The broker is unavailable: replayed 0 of 2, 2 left dead" in response.text
    assert [world.reload_dead_letter(r.id).status for r in group] == ["dead", "dead"]
    (entry,) = _group_audit(world)
    assert entry.detail["not_sent"] == sorted(r.id for r in group)


def test_group_replay_needs_dlq_write_and_the_csrf_token(
    client: TestClient, world: PagesWorld, sent: SentTasks
) -> None:
    dead = world.dead_letter()
    token = sign_in(client, world.key("dlq:read")[1])

    confirm = client.get(f"{ADMIN}/dead-letters/replay", params={"task": world.task_name})
    post = client.post(
        f"{ADMIN}/dead-letters/replay",
        data={"csrf_token": token, "task": world.task_name, "ids": [dead.id]},
    )

    assert confirm.status_code == post.status_code == 403
    assert sent.calls == []


# --- stored webhooks --------------------------------------------------------------------------


def test_the_inbox_page_lists_events_with_their_status_and_replays_one(
    client: TestClient, world: PagesWorld, published: Published
) -> None:
    event = world.event(status=InboxStatus.FAILED)
    name, key = world.key("events:read,events:replay")
    token = sign_in(client, key)

    listing = client.get(f"{ADMIN}/events", params={"event_type": world.event_type})
    replay = client.post(f"{ADMIN}/events/{event.id}/replay", data={"csrf_token": token})

    assert f"/admin/events/{event.id}" in listing.text
    assert '<span class="status status-failed">failed</span>' in listing.text
    assert replay.status_code == 200
    assert published.inbox_ids == [event.id]
    assert world.reload_event(event.id).status == InboxStatus.ENQUEUED
    assert [entry.actor for entry in world.audit("inbox_event.replayed", event.id)] == [
        f"web:{name}"
    ]


def test_a_key_without_events_replay_cannot_replay_a_stored_webhook(
    client: TestClient, world: PagesWorld, published: Published
) -> None:
    event = world.event()
    token = sign_in(client, world.key("events:read")[1])

    page = client.get(f"{ADMIN}/events/{event.id}")
    replay = client.post(f"{ADMIN}/events/{event.id}/replay", data={"csrf_token": token})

    assert page.status_code == 200
    assert 'id="replay"' not in page.text
    assert replay.status_code == 403
    assert published.inbox_ids == []


def test_every_form_and_link_leads_to_the_pages_not_to_the_admin_api(
    client: TestClient, world: PagesWorld
) -> None:
    dead = world.dead_letter()
    event = world.event()
    sign_in(client, world.key(",".join(api_keys.SCOPES))[1])
    pages = [
        f"{ADMIN}/dead-letters?task={world.task_name}",
        f"{ADMIN}/dead-letters/{dead.id}",
        f"{ADMIN}/dead-letters/replay?task={world.task_name}",
        f"{ADMIN}/events?event_type={world.event_type}",
        f"{ADMIN}/events/{event.id}",
        f"{ADMIN}/health",
    ]

    targets = {
        path: re.findall(r'(?:action|href)="([^"]+)"', client.get(path).text) for path in pages
    }

    for path, urls in targets.items():
        assert any("/admin/" in url for url in urls), path
        assert [url for url in urls if "/admin/api/" in url] == [], path
