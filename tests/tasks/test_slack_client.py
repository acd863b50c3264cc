"""SlackClient against the real sandbox over HTTP: answers sorted into transient and permanent errors."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.settings import Settings
from tasks.clients.slack import SlackClient
from tests.support.processes import free_port, wait_until
from tests.support.sandbox import SandboxServer
from workers.errors import ConfigurationError, PermanentError, TransientError

TOKEN = "xoxb-test"
CHANNEL = "C0123456789"


pytestmark = pytest.mark.usefixtures("fresh_sandbox")


def settings_for(api_base: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"slack_bot_token": TOKEN, "slack_api_base": api_base, **overrides}
    return Settings(_env_file=None, **values)


@pytest.fixture
def slack(sandbox: SandboxServer) -> SlackClient:
    return SlackClient(settings_for(sandbox.slack_api_base))


def test_post_message_returns_the_ts_and_the_sandbox_records_one_effect(
    slack: SlackClient, sandbox: SandboxServer
) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*payment failed*"}}]

    ts = slack.post_message(CHANNEL, "payment failed", blocks=blocks)

    [call] = sandbox.calls("slack", "chat.postMessage")
    assert call["effect"] is True
    assert call["body"] == {"channel": CHANNEL, "text": "payment failed", "blocks": blocks}
    assert "authorization" not in call["headers"]
    assert ts.replace(".", "").isdigit()
    assert len(ts.split(".")[1]) == 6


def test_injected_500_raises_transient_error_without_retrying_inside_the_client(
    slack: SlackClient, sandbox: SandboxServer
) -> None:
    sandbox.fault("slack", "chat.postMessage", status=500, count=2)

    with pytest.raises(TransientError) as caught:
        slack.post_message(CHANNEL, "hello")

    assert "500" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert len(sandbox.calls("slack", "chat.postMessage")) == 1


def test_injected_429_raises_transient_error_carrying_retry_after(
    slack: SlackClient, sandbox: SandboxServer
) -> None:
    sandbox.fault("slack", "chat.postMessage", status=429, retry_after=2)

    with pytest.raises(TransientError) as caught:
        slack.post_message(CHANNEL, "hello")

    assert caught.value.retry_after == 2.0
    assert len(sandbox.calls("slack", "chat.postMessage")) == 1


def test_retry_after_on_a_503_is_read_too(slack: SlackClient, sandbox: SandboxServer) -> None:
    sandbox.fault("slack", "chat.postMessage", status=503, retry_after=7)

    with pytest.raises(TransientError) as caught:
        slack.post_message(CHANNEL, "hello")

    assert caught.value.retry_after == 7.0


def test_going_over_the_channel_rate_limit_raises_transient_error(slack: SlackClient) -> None:
    def post_twenty() -> None:  # the limit is a burst of 5, then about one a second
        for n in range(20):
            slack.post_message(CHANNEL, f"message {n}")

    with pytest.raises(TransientError) as caught:
        post_twenty()

    assert caught.value.retry_after == 1.0


def test_ok_false_internal_error_raises_transient_error(
    slack: SlackClient, sandbox: SandboxServer
) -> None:
    sandbox.fault(
        "slack", "chat.postMessage", status=200, body={"ok": False, "error": "internal_error"}
    )

    with pytest.raises(TransientError):
        slack.post_message(CHANNEL, "hello")


def test_channel_not_found_raises_permanent_error(slack: SlackClient) -> None:
    with pytest.raises(PermanentError) as caught:
        slack.post_message("", "hello")

    assert not isinstance(caught.value, TransientError)
    assert "channel_not_found" in str(caught.value)


def test_a_token_slack_rejects_raises_permanent_error(sandbox: SandboxServer) -> None:
    client = SlackClient(settings_for(sandbox.slack_api_base, slack_bot_token="xoxp-user"))

    with pytest.raises(PermanentError, match="invalid_auth"):
        client.post_message(CHANNEL, "hello")


def test_missing_token_raises_configuration_error_before_any_call(
    sandbox: SandboxServer,
) -> None:
    client = SlackClient(settings_for(sandbox.slack_api_base, slack_bot_token=None))

    with pytest.raises(ConfigurationError):
        client.post_message(CHANNEL, "hello")

    assert sandbox.calls() == []


def test_sandbox_down_raises_transient_error() -> None:
    client = SlackClient(settings_for(f"http://127.0.0.1:{free_port()}/slack/api/"))

    with pytest.raises(TransientError, match="unreachable"):
        client.post_message(CHANNEL, "hello")


def test_a_timeout_is_transient_and_the_call_still_takes_effect_exactly_once(
    sandbox: SandboxServer,
) -> None:
    client = SlackClient(settings_for(sandbox.slack_api_base), timeout=1)
    sandbox.fault("slack", "chat.postMessage", status=0, latency=2.0)

    with pytest.raises(TransientError):
        client.post_message(CHANNEL, "slow")

    # The client gave up mid-call; the sandbox finishes the work and records it, as Slack would.
    wait_until(
        lambda: sandbox.effects("slack", "chat.postMessage"), timeout=5, what="the late effect"
    )
    assert len(sandbox.calls("slack", "chat.postMessage")) == 1
