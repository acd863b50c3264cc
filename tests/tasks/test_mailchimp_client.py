"""MailchimpClient against the real sandbox over HTTP: members, tags, email changes and deletes; short
429s waited out in the call, long ones handed to the task; never more than 10 connections per key."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.settings import Settings
from tasks.clients.mailchimp import (
    MAX_CONNECTIONS,
    MailchimpClient,
    api_base_for,
    connection_slots,
    subscriber_hash,
)
from tests.support.processes import free_port
from tests.support.sandbox import SandboxServer
from workers.errors import ConfigurationError, PermanentError, TransientError

API_KEY = "0123456789abcdef0123456789abcdef-us21"


pytestmark = pytest.mark.usefixtures("fresh_sandbox")


@pytest.fixture
def list_id() -> str:
    """A list of this test's own (members outlive a test in the sandbox, as at Mailchimp)."""
    return uuid.uuid4().hex[:10]


def settings_for(api_base: str | None, list_id: str | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mailchimp_api_key": SecretStr(API_KEY),
        "mailchimp_api_base": api_base,
        "mailchimp_list_id": list_id,
        **overrides,
    }
    return Settings(_env_file=None, **values)


class Sleeps:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def mailchimp(sandbox: SandboxServer, list_id: str, sleeps: Sleeps) -> Iterator[MailchimpClient]:
    with MailchimpClient(settings_for(sandbox.mailchimp_api_base, list_id), sleep=sleeps) as client:
        yield client


def test_subscriber_hash_is_the_md5_of_the_lower_cased_stripped_email() -> None:
    assert subscriber_hash(" Urist.McVankab@Example.com ") == subscriber_hash(
        "urist.mcvankab@example.com"
    )
    assert subscriber_hash("urist.mcvankab@freddiesjokes.com") == "62eeb292278cc15f5817cb78f7790b08"


def test_the_api_base_comes_from_the_keys_data_center_unless_set() -> None:
    assert api_base_for(API_KEY, None) == "https://us21.api.mailchimp.com/3.0"
    assert api_base_for(API_KEY, "http://127.0.0.1:1/mailchimp/3.0/") == (
        "http://127.0.0.1:1/mailchimp/3.0"
    )
    with pytest.raises(ConfigurationError, match="dc"):
        api_base_for("0123456789abcdef", None)


def test_upsert_adds_then_updates_a_member(
    mailchimp: MailchimpClient, sandbox: SandboxServer, list_id: str
) -> None:
    mailchimp.upsert_member("Ada@Example.com", merge_fields={"FNAME": "Ada"})
    mailchimp.upsert_member("ada@example.com", merge_fields={"LNAME": "Lovelace"})

    [member] = sandbox.mailchimp_members(list_id)
    assert member["id"] == subscriber_hash("ada@example.com")
    assert member["status"] == "subscribed"
    assert member["merge_fields"] == {"FNAME": "Ada", "LNAME": "Lovelace"}
    [first, _] = sandbox.calls("mailchimp", "set-list-member")
    assert first["method"] == "PUT"
    assert first["body"]["status_if_new"] == "subscribed"


def test_set_tags_activates_and_deactivates(
    mailchimp: MailchimpClient, sandbox: SandboxServer, list_id: str
) -> None:
    mailchimp.upsert_member("ada@example.com", merge_fields={})

    mailchimp.set_tags("ada@example.com", {"active": True, "lapsed": True})
    mailchimp.set_tags("ada@example.com", {"lapsed": False})
    mailchimp.set_tags("ada@example.com", {})  # nothing to do: no call

    member = sandbox.mailchimp_member(list_id, "ada@example.com")
    assert member is not None
    assert member["tags"] == ["active"]
    assert len(sandbox.calls("mailchimp", "update-list-member-tags")) == 2


def test_change_email_moves_the_member_and_a_retry_counts_as_done(
    mailchimp: MailchimpClient, sandbox: SandboxServer, list_id: str
) -> None:
    mailchimp.upsert_member("old@example.com", merge_fields={"FNAME": "Ada"})

    mailchimp.change_email("old@example.com", "new@example.com")
    mailchimp.change_email("old@example.com", "new@example.com")  # the task's retry

    assert [
        (m["email_address"], m["merge_fields"]) for m in sandbox.mailchimp_members(list_id)
    ] == [("new@example.com", {"FNAME": "Ada"})]


def test_change_email_of_nobody_is_permanent(mailchimp: MailchimpClient) -> None:
    with pytest.raises(PermanentError, match="404") as caught:
        mailchimp.change_email("ghost@example.com", "spirit@example.com")

    assert not isinstance(caught.value, TransientError)


def test_delete_member_erases_it_and_is_done_when_already_gone(
    mailchimp: MailchimpClient, sandbox: SandboxServer, list_id: str
) -> None:
    mailchimp.upsert_member("ada@example.com", merge_fields={})

    mailchimp.delete_member("ada@example.com")
    mailchimp.delete_member("ada@example.com")

    assert sandbox.mailchimp_members(list_id) == []
    assert [c["status"] for c in sandbox.calls("mailchimp", "delete-list-member-permanent")] == [
        204,
        404,
    ]


def test_a_429_asking_for_one_second_is_waited_out(sandbox: SandboxServer, list_id: str) -> None:
    sandbox.fault("mailchimp", "set-list-member", status=429, retry_after=1)
    with MailchimpClient(settings_for(sandbox.mailchimp_api_base, list_id)) as client:
        started = time.monotonic()
        client.upsert_member("ada@example.com", merge_fields={})
        elapsed = time.monotonic() - started

    assert elapsed >= 1.0
    assert [c["status"] for c in sandbox.calls("mailchimp", "set-list-member")] == [429, 200]
    assert sandbox.mailchimp_member(list_id, "ada@example.com") is not None


def test_short_429s_are_retried_three_times_then_handed_to_the_task(
    mailchimp: MailchimpClient, sandbox: SandboxServer, sleeps: Sleeps
) -> None:
    sandbox.fault("mailchimp", "set-list-member", status=429, retry_after=2, count=4)

    with pytest.raises(TransientError) as caught:
        mailchimp.upsert_member("ada@example.com", merge_fields={})

    assert caught.value.retry_after == 2.0
    assert sleeps.slept == [2.0, 2.0, 2.0]
    assert len(sandbox.calls("mailchimp", "set-list-member")) == 4


def test_a_429_without_retry_after_waits_a_second(
    mailchimp: MailchimpClient, sandbox: SandboxServer, sleeps: Sleeps
) -> None:
    sandbox.fault("mailchimp", "update-list-member-tags", status=429)
    mailchimp.upsert_member("ada@example.com", merge_fields={})

    mailchimp.set_tags("ada@example.com", {"active": True})

    assert sleeps.slept == [1.0]


def test_a_long_429_raises_transient_error_at_once(
    mailchimp: MailchimpClient, sandbox: SandboxServer, sleeps: Sleeps
) -> None:
    sandbox.fault("mailchimp", "set-list-member", status=429, retry_after=30)

    with pytest.raises(TransientError) as caught:
        mailchimp.upsert_member("ada@example.com", merge_fields={})

    assert caught.value.retry_after == 30.0
    assert sleeps.slept == []
    assert len(sandbox.calls("mailchimp", "set-list-member")) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_a_5xx_is_transient_and_not_retried_in_the_call(
    mailchimp: MailchimpClient, sandbox: SandboxServer, status: int
) -> None:
    sandbox.fault("mailchimp", "set-list-member", status=status, retry_after=4)

    with pytest.raises(TransientError, match=str(status)) as caught:
        mailchimp.upsert_member("ada@example.com", merge_fields={})

    assert caught.value.retry_after == 4.0
    assert len(sandbox.calls("mailchimp", "set-list-member")) == 1


@pytest.mark.parametrize("status", [400, 404])
def test_other_4xx_are_permanent(
    mailchimp: MailchimpClient, sandbox: SandboxServer, status: int
) -> None:
    sandbox.fault("mailchimp", "set-list-member", status=status)

    with pytest.raises(PermanentError, match=str(status)) as caught:
        mailchimp.upsert_member("ada@example.com", merge_fields={})

    assert not isinstance(caught.value, TransientError)


def test_a_refusal_names_the_field_mailchimp_complained_about(mailchimp: MailchimpClient) -> None:
    with pytest.raises(PermanentError, match="status_if_new"):
        mailchimp.upsert_member("ada@example.com", merge_fields={}, status_if_new="maybe")


def test_the_api_key_travels_as_basic_auth_and_never_in_errors(
    sandbox: SandboxServer, list_id: str
) -> None:
    wrong = "fedcba9876543210fedcba98765432XX"  # no data center: not a Mailchimp key
    with (
        MailchimpClient(
            settings_for(sandbox.mailchimp_api_base, list_id, mailchimp_api_key=SecretStr(wrong))
        ) as client,
        pytest.raises(PermanentError, match="API Key Invalid") as caught,
    ):
        client.upsert_member("ada@example.com", merge_fields={})

    assert wrong not in str(caught.value)
    assert "authorization" not in sandbox.calls("mailchimp")[0]["headers"]


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"mailchimp_api_key": None}, "MAILCHIMP_API_KEY"),
        ({"mailchimp_api_key": SecretStr(" ")}, "MAILCHIMP_API_KEY"),
        ({"mailchimp_list_id": None}, "MAILCHIMP_LIST_ID"),
        ({"mailchimp_api_base": None, "mailchimp_api_key": SecretStr("nodatacenter")}, "dc"),
    ],
)
def test_missing_configuration_is_a_configuration_error(
    sandbox: SandboxServer, list_id: str, overrides: dict[str, Any], setting: str
) -> None:
    settings = settings_for(sandbox.mailchimp_api_base, list_id, **overrides)
    with MailchimpClient(settings) as client, pytest.raises(ConfigurationError, match=setting):
        client.upsert_member("ada@example.com", merge_fields={})

    assert sandbox.calls("mailchimp") == []


def test_an_unreachable_mailchimp_is_transient(list_id: str) -> None:
    gone = settings_for(f"http://127.0.0.1:{free_port()}/mailchimp/3.0", list_id)
    with MailchimpClient(gone) as client, pytest.raises(TransientError, match="unreachable"):
        client.upsert_member("ada@example.com", merge_fields={})


def test_connection_slots_are_shared_per_api_key() -> None:
    assert connection_slots(API_KEY) is connection_slots(API_KEY)
    assert connection_slots(API_KEY) is not connection_slots("another-us1")


def test_twelve_threads_never_hold_more_than_ten_connections_at_the_sandbox(
    sandbox: SandboxServer, list_id: str
) -> None:
    sandbox.fault("mailchimp", "set-list-member", status=0, latency=0.4, count=-1)
    emails = [f"member{n}@example.com" for n in range(12)]
    start = threading.Barrier(len(emails))

    def upsert(email: str) -> None:
        with MailchimpClient(settings_for(sandbox.mailchimp_api_base, list_id)) as client:
            start.wait()
            client.upsert_member(email, merge_fields={"FNAME": email[:6]})

    with ThreadPoolExecutor(max_workers=len(emails)) as pool:
        list(pool.map(upsert, emails))

    calls = sandbox.calls("mailchimp", "set-list-member")
    assert [c["status"] for c in calls] == [200] * len(
        emails
    )  # no 429: nobody waited out a refusal
    assert 2 <= sandbox.concurrency("mailchimp")["max_in_flight"] <= MAX_CONNECTIONS
    assert {m["email_address"] for m in sandbox.mailchimp_members(list_id)} == set(emails)
