"""Twilio webhooks (Messaging and Voice status callbacks, inbound SMS): signature check and identity.

Scheme: https://www.twilio.com/docs/usage/webhooks/webhooks-security — `X-Twilio-Signature` is the
base64 HMAC-SHA1, keyed with the Auth Token, of the full URL Twilio called (scheme, host, path, query)
followed by every POST parameter as name + value, names sorted. The check is twilio-python's
`RequestValidator.validate`, which also tries the URL with and without the default port and, for JSON
bodies, checks the `bodySHA256` query parameter (the signature then covers the URL only). When a
request carries `X-Twilio-Webhooks-Signature-Settings: ...,algorithm=HMAC_SHA256` the SDK's algorithm
is used for that request (twilio-python 9.13 `get_signature_algorithm`).

The URL is `Delivery.url`: PUBLIC_BASE_URL, or X-Forwarded-Proto/Host when TRUST_FORWARDED_HEADERS is
set (`ingest.public_url`), so it must match what is configured in the Twilio console exactly.

There is no replay window: Twilio signs no timestamp, so a captured request verifies forever. Replays
are absorbed by de-duplication instead: the event id is the `I-Twilio-Idempotency-Token` header when
present (sent on Twilio's retries; community-documented, not in a Twilio page we could retrieve), else
`<MessageSid or CallSid>:<status>` — one SID carries several statuses over its life.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from pydantic import SecretStr
from twilio.request_validator import (  # type: ignore[import-untyped]
    HMAC_SHA1,
    HMAC_SHA256,
    RequestValidator,
    get_signature_algorithm,
)

from schemas.settings import Settings
from webhooks_gateway.providers.base import (
    Delivery,
    InboundEvent,
    PayloadError,
    Reply,
    SignatureError,
    parse_form,
    parse_json_object,
    require_header,
    single_event,
)

NAME = "twilio"
SECRET_ENV = "TWILIO_AUTH_TOKEN"
SIGNATURE_HEADER = "x-twilio-signature"
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
IDEMPOTENCY_HEADER = "i-twilio-idempotency-token"
BODY_HASH_PARAMETER = "bodySHA256"
STORED_HEADERS: tuple[str, ...] = (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    IDEMPOTENCY_HEADER,
)
METHODS: tuple[str, ...] = ("POST",)
HANDLED_EVENT_TYPES = frozenset(
    {"message.received", "message.delivered", "message.failed", "call.completed"}
)
_ALGORITHMS = frozenset({HMAC_SHA1, HMAC_SHA256})


class _FormParams(dict[str, list[str]]):
    """Every value of each name, in the `getlist` shape the SDK reads: Twilio signs them all."""

    def getlist(self, name: str) -> list[str]:
        return self[name]


def secrets(settings: Settings) -> tuple[SecretStr, ...]:
    return settings.twilio_auth_token


def verify(
    delivery: Delivery,
    *,
    secrets: Sequence[SecretStr],
    now: datetime,
    tolerance_seconds: int,
) -> None:
    """Raise SignatureError unless one of `secrets` signed this URL and body.

    `now` and `tolerance_seconds` are unused: Twilio's scheme carries no timestamp.
    """
    signature = require_header(delivery.headers, SIGNATURE_HEADER)
    algorithm = get_signature_algorithm(delivery.headers.get(SIGNATURE_SETTINGS_HEADER))
    if algorithm.upper() not in _ALGORITHMS:
        raise SignatureError("malformed", f"unsupported signature algorithm {algorithm!r}")
    params = _signed_params(delivery)
    if not any(
        _signed_by(delivery.url, params, signature, secret, algorithm) for secret in secrets
    ):
        raise SignatureError("mismatch", "X-Twilio-Signature matches no configured Auth Token")


def _signed_params(delivery: Delivery) -> _FormParams | str:
    """What the SDK signs besides the URL: the raw JSON text, or every form parameter."""
    try:
        text = delivery.raw.decode("utf-8")
        if BODY_HASH_PARAMETER in delivery.query:
            return text
        params = _FormParams()
        for name, value in parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)):
            params.setdefault(name, []).append(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignatureError("malformed", "body is neither form-encoded nor UTF-8") from exc
    return params


def _signed_by(
    url: str, params: _FormParams | str, signature: str, secret: SecretStr, algorithm: str
) -> bool:
    validator = RequestValidator(secret.get_secret_value())
    return bool(validator.validate(url, params, signature, algorithm))


def parse(delivery: Delivery) -> dict[str, Any]:
    if BODY_HASH_PARAMETER in delivery.query:
        return parse_json_object(delivery.raw)
    return parse_form(delivery.raw)


def handshake(delivery: Delivery, payload: Any) -> Reply | None:
    return None


def events(delivery: Delivery, payload: Mapping[str, Any]) -> list[InboundEvent]:
    """A status callback is `message.<MessageStatus>` or `call.<CallStatus>`; an inbound SMS is
    `message.received` (it carries `SmsStatus=received` but no `MessageStatus`)."""
    message_sid = _text(payload, "MessageSid") or _text(payload, "SmsSid")
    if _text(payload, "MessageStatus"):
        kind, sid, status = "message", message_sid, _text(payload, "MessageStatus")
    elif _text(payload, "CallStatus"):
        kind, sid, status = "call", _text(payload, "CallSid"), _text(payload, "CallStatus")
    elif message_sid and "Body" in payload:
        kind, sid, status = "message", message_sid, "received"
    else:
        raise PayloadError("neither a message, an inbound SMS nor a call status callback")
    if not sid:
        raise PayloadError(f"{kind} callback without its SID")
    # From signed content only: I-Twilio-Idempotency-Token is not signed, and Twilio signs no
    # timestamp, so a replayed request with a fresh token must still be a duplicate.
    return single_event(f"{sid}:{status}", f"{kind}.{status}", delivery.raw)


def _text(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    return value if isinstance(value, str) else ""
