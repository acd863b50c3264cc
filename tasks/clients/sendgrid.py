"""Hookfleet's one outbound SendGrid client: the official `sendgrid` package's `SendGridAPIClient`
(pointed at SENDGRID_API_BASE through its `host`) with its errors sorted into workers.errors.

Three things about the SDK shape this module:
- `SendGridAPIClient(api_key=None)` silently falls back to the SENDGRID_API_KEY environment variable;
  the key is checked here first, so only Settings decide.
- Its HTTP layer (python_http_client, on urllib) has no timeout unless one is passed per request, so
  every call passes one.
- python_http_client logs every request's headers, `Authorization: Bearer SG....` included, and its
  body (recipients' addresses) at DEBUG; a filter on its logger drops those two records.

It never retries: the task-level retry policy is the single one, and a 429's wait travels up in a
TransientError. Mail Send has no idempotency key, so a retry after a lost 202 sends the email twice;
callers that must not double-send record the returned `X-Message-Id` before anything else can fail.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from python_http_client.exceptions import HTTPError  # type: ignore[import-untyped]
from sendgrid import SendGridAPIClient  # type: ignore[import-untyped]

from schemas.settings import Settings
from workers.errors import (
    ConfigurationError,
    PermanentError,
    TransientError,
    error_for_status,
    parse_retry_after,
)
from workers.logging import get_logger
from workers.provider_calls import record_provider_call

log = get_logger(__name__)

DEFAULT_TIMEOUT_SECONDS = 20.0


class _DropSecretsAndRecipients(logging.Filter):
    """python_http_client's DEBUG records of request headers (the API key) and bodies (addresses)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not message.startswith(("HEADERS:", "PAYLOAD:"))


_HTTP_LOGGER = logging.getLogger("python_http_client.client")
if not any(isinstance(f, _DropSecretsAndRecipients) for f in _HTTP_LOGGER.filters):
    _HTTP_LOGGER.addFilter(_DropSecretsAndRecipients())


def _errors_detail(body: bytes | str | None) -> str:
    """SendGrid's `{"errors": [{"message", "field", "help"}]}` as `field: message; ...`."""
    try:
        data = json.loads(body or b"")
    except ValueError:
        return "non-JSON error body"
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return "unexpected error body"
    parts = []
    for error in errors[:5]:
        if isinstance(error, dict):
            field = error.get("field")
            message = str(error.get("message", ""))[:200]
            parts.append(f"{field}: {message}" if field else message)
    return "; ".join(parts) or "no error message"


def _retry_after(headers: Any) -> str | None:
    """Retry-After, else the seconds until X-RateLimit-Reset (an epoch time, per SendGrid's docs)."""
    if headers is None:
        return None
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        return str(retry_after)
    reset = parse_retry_after(headers.get("X-RateLimit-Reset"))
    if reset is None:
        return None
    return str(max(1, int(reset - time.time())))


def error_for_http_error(exc: HTTPError) -> TransientError | PermanentError:
    status = int(exc.status_code)
    detail = f"mail/send: {_errors_detail(exc.body)}"
    error = error_for_status("sendgrid", status, _retry_after(exc.headers), detail)
    return error if isinstance(error, TransientError | PermanentError) else PermanentError(detail)


class SendGridClient:
    """Built per use from Settings; the API key is read only when a call needs it, and never logged."""

    def __init__(self, settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._api_key = settings.sendgrid_api_key
        self._host = settings.sendgrid_api_base.rstrip("/")
        self._from_email = settings.sendgrid_from_email
        self._timeout = timeout

    def _sdk(self) -> Any:
        if self._api_key is None or not self._api_key.get_secret_value().strip():
            raise ConfigurationError("SENDGRID_API_KEY is not set; SendGrid calls are disabled")
        return SendGridAPIClient(api_key=self._api_key.get_secret_value().strip(), host=self._host)

    def send_template(
        self,
        to_email: str,
        template_id: str | None,
        data: Mapping[str, Any],
        *,
        to_name: str | None = None,
        custom_args: Mapping[str, Any] | None = None,
    ) -> str:
        """Send dynamic template `template_id` to one recipient; returns SendGrid's X-Message-Id."""
        if not template_id or not template_id.strip():
            raise ConfigurationError("no SendGrid template id configured for this email")
        if not self._from_email or not self._from_email.strip():
            raise ConfigurationError("SENDGRID_FROM_EMAIL is not set")
        recipient: dict[str, str] = {"email": to_email.strip()}
        if to_name:
            recipient["name"] = to_name
        personalization: dict[str, Any] = {
            "to": [recipient],
            "dynamic_template_data": dict(data),
        }
        if custom_args:
            # SendGrid takes custom_args values as strings only.
            personalization["custom_args"] = {str(k): str(v) for k, v in custom_args.items()}
        body = {
            "from": {"email": self._from_email.strip()},
            "personalizations": [personalization],
            "template_id": template_id.strip(),
        }
        sdk = self._sdk()
        try:
            response = sdk.client.mail.send.post(request_body=body, timeout=self._timeout)
        except HTTPError as exc:
            record_provider_call("sendgrid", int(exc.status_code))
            raise error_for_http_error(exc) from exc
        except (OSError, http.client.HTTPException) as exc:
            record_provider_call("sendgrid", None)
            # urllib's URLError, timeouts, refused or reset connections: SendGrid may come back.
            raise TransientError(
                f"sendgrid unreachable: {type(exc).__name__}: {str(exc)[:200]}"
            ) from exc
        except ValueError as exc:  # urllib refuses a malformed SENDGRID_API_BASE
            raise ConfigurationError(f"SENDGRID_API_BASE is not a usable URL: {exc}") from exc
        record_provider_call("sendgrid", int(response.status_code))
        message_id = response.headers.get("X-Message-Id") if response.headers else None
        if not message_id:
            # Accepted all the same: raising would have the task send it again.
            log.warning(
                "sendgrid accepted a message without X-Message-Id", status=response.status_code
            )
            return ""
        return str(message_id)
