"""SendGridClient (the official `sendgrid` package) against the real sandbox over HTTP: which template
went to whom, the X-Message-Id, errors sorted into transient and permanent, the key never logged."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.settings import Settings
from tasks.clients.sendgrid import SendGridClient, _retry_after
from tests.support.processes import free_port
from tests.support.sandbox import SandboxServer
from workers.errors import ConfigurationError, PermanentError, TransientError

API_KEY = "SG.hookfleetClientTests.0123456789abcdef"
WELCOME = "d-0123456789abcdef0123456789abcdef"


pytestmark = pytest.mark.usefixtures("fresh_sandbox")


def client_for(api_base: str, **overrides: Any) -> SendGridClient:
    values: dict[str, Any] = {
        "sendgrid_api_key": SecretStr(API_KEY),
        "sendgrid_api_base": api_base,
        "sendgrid_from_email": "hello@hookfleet.example",
        **overrides,
    }
    return SendGridClient(Settings(_env_file=None, **values))


@pytest.fixture
def sendgrid(sandbox: SandboxServer) -> SendGridClient:
    return client_for(sandbox.sendgrid_api_base)


def test_send_template_sends_the_template_to_the_recipient(
    sendgrid: SendGridClient, sandbox: SandboxServer
) -> None:
    message_id = sendgrid.send_template(
        "ada@example.com",
        WELCOME,
        {"first_name": "Ada", "tier": "patron"},
        to_name="Ada Lovelace",
        custom_args={"inbox_event_id": 42},
    )

    assert message_id
    [sent] = sandbox.sent_emails()
    assert sent["body"]["template_id"] == WELCOME
    assert sent["reply_headers"]["X-Message-Id"] == message_id
    assert sandbox.email_recipients() == [
        {
            "to": "ada@example.com",
            "name": "Ada Lovelace",
            "from": "hello@hookfleet.example",
            "template_id": WELCOME,
            "data": {"first_name": "Ada", "tier": "patron"},
            "custom_args": {"inbox_event_id": "42"},  # SendGrid takes strings only
            "message_id": message_id,
        }
    ]


def test_the_api_key_travels_as_a_bearer_and_never_in_logs(
    sendgrid: SendGridClient, sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        sendgrid.send_template("ada@example.com", WELCOME, {})

    assert API_KEY not in caplog.text
    assert "ada@example.com" not in caplog.text
    assert "authorization" not in sandbox.calls("sendgrid")[0]["headers"]


@pytest.mark.parametrize(("status", "retry_after"), [(429, 30), (503, 5)])
def test_retryable_answers_raise_transient_error_carrying_retry_after(
    sendgrid: SendGridClient, sandbox: SandboxServer, status: int, retry_after: int
) -> None:
    sandbox.fault("sendgrid", "mail-send", status=status, retry_after=retry_after)

    with pytest.raises(TransientError) as caught:
        sendgrid.send_template("ada@example.com", WELCOME, {})

    assert caught.value.retry_after == float(retry_after)
    assert len(sandbox.calls("sendgrid")) == 1  # no retry in the client
    assert sandbox.sent_emails() == []


@pytest.mark.parametrize("status", [500, 502])
def test_a_5xx_is_transient(sendgrid: SendGridClient, sandbox: SandboxServer, status: int) -> None:
    sandbox.fault("sendgrid", "mail-send", status=status)

    with pytest.raises(TransientError, match=str(status)):
        sendgrid.send_template("ada@example.com", WELCOME, {})


@pytest.mark.parametrize("status", [400, 403, 404, 413])
def test_other_4xx_are_permanent(
    sendgrid: SendGridClient, sandbox: SandboxServer, status: int
) -> None:
    sandbox.fault("sendgrid", "mail-send", status=status)

    with pytest.raises(PermanentError, match=str(status)) as caught:
        sendgrid.send_template("ada@example.com", WELCOME, {})

    assert not isinstance(caught.value, TransientError)


def test_a_refused_message_names_the_field(sendgrid: SendGridClient) -> None:
    with pytest.raises(PermanentError, match=r"personalizations\.0\.to\.0\.email"):
        sendgrid.send_template("not-an-address", WELCOME, {})


def test_a_key_sendgrid_refuses_is_permanent_and_never_shown(sandbox: SandboxServer) -> None:
    wrong = "not-a-sendgrid-key-0123456789"
    refused = client_for(sandbox.sendgrid_api_base, sendgrid_api_key=SecretStr(wrong))

    with pytest.raises(PermanentError, match="401") as caught:
        refused.send_template("ada@example.com", WELCOME, {})

    assert wrong not in str(caught.value)


def test_a_missing_key_is_a_configuration_error_even_with_the_sdks_environment_variable(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENDGRID_API_KEY", API_KEY)  # the SDK alone would fall back to it
    unconfigured = client_for(sandbox.sendgrid_api_base, sendgrid_api_key=None)

    with pytest.raises(ConfigurationError, match="SENDGRID_API_KEY"):
        unconfigured.send_template("ada@example.com", WELCOME, {})

    assert sandbox.calls("sendgrid") == []


@pytest.mark.parametrize("template_id", [None, "", "  "])
def test_a_missing_template_is_a_configuration_error(
    sendgrid: SendGridClient, sandbox: SandboxServer, template_id: str | None
) -> None:
    with pytest.raises(ConfigurationError, match="template"):
        sendgrid.send_template("ada@example.com", template_id, {})

    assert sandbox.calls("sendgrid") == []


def test_a_missing_sender_is_a_configuration_error(sandbox: SandboxServer) -> None:
    senderless = client_for(sandbox.sendgrid_api_base, sendgrid_from_email="")

    with pytest.raises(ConfigurationError, match="SENDGRID_FROM_EMAIL"):
        senderless.send_template("ada@example.com", WELCOME, {})


def test_an_unreachable_sendgrid_is_transient() -> None:
    gone = client_for(f"http://127.0.0.1:{free_port()}/sendgrid")

    with pytest.raises(TransientError, match="unreachable"):
        gone.send_template("ada@example.com", WELCOME, {})


def test_a_429_without_retry_after_waits_until_the_rate_limit_resets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("tasks.clients.sendgrid.time.time", lambda: 1_700_000_000.0)

    assert _retry_after({"Retry-After": "7"}) == "7"
    assert _retry_after({"X-RateLimit-Reset": "1700000012"}) == "12"
    assert _retry_after({"X-RateLimit-Reset": "1699999999"}) == "1"
    assert _retry_after({}) is None
