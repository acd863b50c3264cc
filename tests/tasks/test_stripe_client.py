"""StripeApi (the official SDK) against the real sandbox over HTTP: writes with the caller's idempotency
key, replays with one effect, errors sorted into transient and permanent."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.settings import Settings
from tasks.clients.stripe import StripeApi
from tests.support.processes import free_port
from tests.support.sandbox import SandboxServer
from workers.errors import ConfigurationError, PermanentError, TransientError

SECRET_KEY = "sk_test_hookfleetClientTests0123"


pytestmark = pytest.mark.usefixtures("fresh_sandbox")


def api_for(api_base: str, **overrides: Any) -> StripeApi:
    values: dict[str, Any] = {
        "stripe_secret_key": SecretStr(SECRET_KEY),
        "stripe_api_base": api_base,
        **overrides,
    }
    return StripeApi(Settings(_env_file=None, **values))


@pytest.fixture
def api(sandbox: SandboxServer) -> StripeApi:
    return api_for(sandbox.stripe_api_base)


@pytest.fixture
def customer(sandbox: SandboxServer) -> str:
    """A customer of this test's own (sandbox state outlives a test, as at Stripe)."""
    customer_id = f"cus_{uuid.uuid4().hex[:14]}"
    sandbox.seed_stripe_customer(customer_id, email="ada@example.com", name="Ada")
    return customer_id


def key() -> str:
    return f"evt_{uuid.uuid4().hex}:update-customer"


def held(sandbox: SandboxServer, customer_id: str) -> dict[str, Any]:
    found = sandbox.stripe_customer(customer_id)
    assert found is not None
    return found


def test_update_customer_changes_only_the_given_fields(
    api: StripeApi, sandbox: SandboxServer, customer: str
) -> None:
    api.update_customer(
        customer, email="ada@lovelace.org", metadata={"tier": "patron"}, idempotency_key=key()
    )

    found = held(sandbox, customer)
    assert (found["email"], found["name"], found["metadata"]) == (
        "ada@lovelace.org",
        "Ada",
        {"tier": "patron"},
    )


def test_writes_carry_the_callers_idempotency_key_and_the_secret_key_as_bearer(
    api: StripeApi, sandbox: SandboxServer, customer: str
) -> None:
    api.update_customer(customer, name="Ada L.", idempotency_key="evt_123:update-customer")

    [call] = sandbox.calls("stripe", "update-customer")
    assert call["headers"]["idempotency-key"] == "evt_123:update-customer"
    assert call["body"] == {"name": "Ada L."}
    assert call["path"] == {"customer": customer}
    assert "authorization" not in call["headers"]  # the sandbox keeps no secrets either


def test_a_retried_update_with_the_same_key_takes_effect_once(
    api: StripeApi, sandbox: SandboxServer, customer: str
) -> None:
    retry_key = key()
    api.update_customer(customer, name="First", idempotency_key=retry_key)
    api.update_customer(customer, name="Meanwhile", idempotency_key=key())

    api.update_customer(customer, name="First", idempotency_key=retry_key)  # the task's retry

    assert held(sandbox, customer)["name"] == "Meanwhile"
    assert [call["effect"] for call in sandbox.calls("stripe", "update-customer")] == [
        True,
        True,
        False,
    ]


def test_create_customer_returns_the_same_id_on_a_retry(
    api: StripeApi, sandbox: SandboxServer
) -> None:
    create_key = f"evt_{uuid.uuid4().hex}:create-customer"

    first = api.create_customer("grace@example.com", "Grace", idempotency_key=create_key)
    again = api.create_customer("grace@example.com", "Grace", idempotency_key=create_key)

    assert first == again
    assert first.startswith("cus_")
    assert held(sandbox, first)["email"] == "grace@example.com"
    assert len(sandbox.effects("stripe", "create-customer")) == 1


def test_a_key_reused_with_other_parameters_is_permanent(api: StripeApi, customer: str) -> None:
    reused = key()
    api.update_customer(customer, name="One", idempotency_key=reused)

    with pytest.raises(PermanentError, match="IdempotencyError") as caught:
        api.update_customer(customer, name="Two", idempotency_key=reused)

    assert not isinstance(caught.value, TransientError)


def test_nothing_to_change_makes_no_call(
    api: StripeApi, sandbox: SandboxServer, customer: str
) -> None:
    api.update_customer(customer, idempotency_key=key())

    assert sandbox.calls("stripe") == []


def test_an_unknown_customer_is_permanent(api: StripeApi) -> None:
    with pytest.raises(PermanentError, match="No such customer") as caught:
        api.update_customer("cus_Nobody0000000", name="x", idempotency_key=key())

    assert not isinstance(caught.value, TransientError)


@pytest.mark.parametrize("retry_after", [2, 30])
def test_a_429_is_transient_and_carries_retry_after(
    api: StripeApi, sandbox: SandboxServer, customer: str, retry_after: int
) -> None:
    sandbox.fault("stripe", "update-customer", status=429, retry_after=retry_after)

    with pytest.raises(TransientError) as caught:
        api.update_customer(customer, name="x", idempotency_key=key())

    assert caught.value.retry_after == float(retry_after)
    assert len(sandbox.calls("stripe", "update-customer")) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_a_5xx_is_transient_and_the_sdk_does_not_retry_it(
    api: StripeApi, sandbox: SandboxServer, customer: str, status: int
) -> None:
    sandbox.fault("stripe", "update-customer", status=status)

    with pytest.raises(TransientError, match=str(status)):
        api.update_customer(customer, name="x", idempotency_key=key())

    assert len(sandbox.calls("stripe", "update-customer")) == 1  # max_network_retries=0
    assert held(sandbox, customer)["name"] == "Ada"


@pytest.mark.parametrize("status", [400, 404])
def test_other_4xx_are_permanent(
    api: StripeApi, sandbox: SandboxServer, customer: str, status: int
) -> None:
    sandbox.fault("stripe", "update-customer", status=status)

    with pytest.raises(PermanentError) as caught:
        api.update_customer(customer, name="x", idempotency_key=key())

    assert not isinstance(caught.value, TransientError)


def test_a_real_rate_limit_is_transient(
    api: StripeApi, sandbox: SandboxServer, customer: str
) -> None:
    """Past 25 requests a second the sandbox answers 429 itself (not an injected fault)."""

    def update_until_refused() -> TransientError | None:
        for n in range(200):
            try:
                api.update_customer(customer, name=f"n{n}", idempotency_key=key())
            except TransientError as exc:
                return exc
        return None

    refused = update_until_refused()

    assert refused is not None
    assert refused.retry_after is not None
    assert sandbox.calls("stripe", "update-customer")[-1]["status"] == 429


def test_a_missing_secret_key_is_a_configuration_error(sandbox: SandboxServer) -> None:
    for missing in (None, SecretStr("  ")):
        unconfigured = api_for(sandbox.stripe_api_base, stripe_secret_key=missing)
        with pytest.raises(ConfigurationError, match="STRIPE_SECRET_KEY"):
            unconfigured.update_customer("cus_x", name="x", idempotency_key=key())

    assert sandbox.calls("stripe") == []


def test_a_key_stripe_refuses_is_permanent_and_never_shown(
    sandbox: SandboxServer, customer: str
) -> None:
    live_key = "sk_live_notForTheSandbox0123456789"
    refused = api_for(sandbox.stripe_api_base, stripe_secret_key=SecretStr(live_key))

    with pytest.raises(PermanentError, match="AuthenticationError") as caught:
        refused.update_customer(customer, name="x", idempotency_key=key())

    assert live_key not in str(caught.value)
    assert live_key not in repr(caught.value.__cause__)


def test_an_idempotency_key_stripe_would_refuse_never_leaves(
    api: StripeApi, sandbox: SandboxServer, customer: str
) -> None:
    for bad in ("", "x" * 256):
        with pytest.raises(PermanentError, match="idempotency key"):
            api.update_customer(customer, name="x", idempotency_key=bad)

    assert sandbox.calls("stripe") == []


def test_an_unreachable_stripe_is_transient() -> None:
    gone = api_for(f"http://127.0.0.1:{free_port()}/stripe")

    with pytest.raises(TransientError, match="APIConnectionError"):
        gone.update_customer("cus_x", name="x", idempotency_key=key())
