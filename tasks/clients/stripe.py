"""Hookfleet's one outbound Stripe client: the official SDK's `StripeClient` with its errors sorted into
workers.errors.

The SDK retries by itself unless told not to (`max_network_retries` defaults to 2 since stripe-python
11): here it is 0, so the task-level retry policy is the only one. Every write carries the caller's
idempotency key, derived from something that survives a task retry (the inbox event id), so a retry of
a write whose answer was lost replays Stripe's stored result instead of writing twice. Without one the
SDK would make up a random key per request, which protects only its own retries.

STRIPE_API_BASE points the client elsewhere (the provider sandbox: `<sandbox>/stripe`).
"""

from __future__ import annotations

from collections.abc import Mapping

import stripe
from stripe.params import CustomerCreateParams, CustomerUpdateParams

from schemas.settings import Settings
from workers.errors import (
    ConfigurationError,
    PermanentError,
    TransientError,
    error_for_status,
    parse_retry_after,
)
from workers.provider_calls import record_provider_call

# (connect, read) seconds for the SDK's requests session (its default is 80 s).
DEFAULT_TIMEOUT_SECONDS = (5.0, 30.0)
MAX_IDEMPOTENCY_KEY_LENGTH = 255  # Stripe's limit


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def error_for_stripe(exc: stripe.StripeError) -> TransientError | PermanentError:
    """Rate limits, connection failures, conflicts and 5xx are transient; every other refusal
    (invalid request, unknown object, bad key, idempotency key reused with other parameters) is not."""
    status = exc.http_status
    detail = (
        f"stripe answered {status or 'nothing'}: {type(exc).__name__}: {exc.user_message or ''}"
    )
    retry_after = parse_retry_after(_header(exc.headers, "Retry-After"))
    if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError):
        return TransientError(detail[:400], retry_after=retry_after)
    if isinstance(
        exc,
        stripe.IdempotencyError
        | stripe.InvalidRequestError
        | stripe.AuthenticationError
        | stripe.PermissionError
        | stripe.CardError,
    ):
        return PermanentError(detail[:400])
    # Stripe marks what is worth another try; 409 is a concurrent request on the same object or key.
    if _header(exc.headers, "Stripe-Should-Retry") == "true" or status == 409:
        return TransientError(detail[:400], retry_after=retry_after)
    if status is None or status >= 500:  # APIError: a 5xx, or an answer the SDK could not read
        return TransientError(detail[:400], retry_after=retry_after)
    error = error_for_status("stripe", status, _header(exc.headers, "Retry-After"), detail)
    return error if isinstance(error, TransientError | PermanentError) else PermanentError(detail)


def _answered(obj: stripe.StripeObject) -> int:
    """The HTTP status behind a returned object (a 2xx: the SDK raises for any other)."""
    response = obj.last_response
    return response.code if response is not None else 200


def _check_idempotency_key(key: str) -> str:
    if not key or not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise PermanentError(
            f"a Stripe idempotency key is 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
        )
    return key


class StripeApi:
    """Built per use from Settings; the secret key is read only when a call needs it, and never logged."""

    def __init__(
        self, settings: Settings, *, timeout: tuple[float, float] = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        self._secret_key = settings.stripe_secret_key
        self._api_base = settings.stripe_api_base.rstrip("/")
        self._timeout = timeout

    def _client(self) -> stripe.StripeClient:
        if self._secret_key is None or not self._secret_key.get_secret_value().strip():
            raise ConfigurationError("STRIPE_SECRET_KEY is not set; Stripe calls are disabled")
        return stripe.StripeClient(
            self._secret_key.get_secret_value().strip(),
            base_addresses={"api": self._api_base},
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=self._timeout),
        )

    def update_customer(
        self,
        customer_id: str,
        *,
        email: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str,
    ) -> None:
        """`POST /v1/customers/{id}` with the given fields only (None leaves a field as it is; with
        nothing to change there is no call)."""
        params: CustomerUpdateParams = {}
        if email is not None:
            params["email"] = email
        if name is not None:
            params["name"] = name
        if metadata:
            params["metadata"] = dict(metadata)
        if not params:
            return
        key = _check_idempotency_key(idempotency_key)
        client = self._client()
        try:
            customer = client.v1.customers.update(customer_id, params, {"idempotency_key": key})
        except stripe.StripeError as exc:
            record_provider_call("stripe", exc.http_status)
            raise error_for_stripe(exc) from exc
        record_provider_call("stripe", _answered(customer))

    def create_customer(
        self,
        email: str,
        name: str | None,
        *,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str,
    ) -> str:
        """`POST /v1/customers`; returns the new customer's id (the same id again on a replay)."""
        key = _check_idempotency_key(idempotency_key)
        params: CustomerCreateParams = {"email": email}
        if name is not None:
            params["name"] = name
        if metadata:
            params["metadata"] = dict(metadata)
        client = self._client()
        try:
            customer = client.v1.customers.create(params, {"idempotency_key": key})
        except stripe.StripeError as exc:
            record_provider_call("stripe", exc.http_status)
            raise error_for_stripe(exc) from exc
        record_provider_call("stripe", _answered(customer))
        if not isinstance(customer.id, str) or not customer.id:
            raise PermanentError("stripe created a customer without an id")
        return customer.id
