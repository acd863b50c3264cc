"""What every provider module offers the ingest path, the shapes it works on, and its errors.

A provider module is pure: it reads the delivery it is given and returns values or raises; it does
no database, broker or HTTP work, so the whole inbound story of a provider reads in one file.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl

import orjson
from pydantic import SecretStr

from schemas.settings import Settings

FailureReason = Literal["missing_header", "malformed", "stale", "mismatch"]


class SignatureError(Exception):
    """A delivery we cannot prove the provider sent; `reason` is a closed set, used as a metric tag."""

    def __init__(self, reason: FailureReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: FailureReason = reason


class PayloadError(Exception):
    """A genuine delivery whose body we cannot read as events (bad JSON or form, no id or type)."""


@dataclass(frozen=True)
class Delivery:
    """One request as the provider sent it: the exact bytes, and the URL it signed (if it signs one)."""

    raw: bytes
    headers: Mapping[str, str]  # case-insensitive lookups (starlette's Headers)
    method: str = "POST"
    url: str = ""  # the public URL, rebuilt behind proxies (Twilio signs it)
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InboundEvent:
    """One inbox row: a batch delivery (SendGrid, QuickBooks) yields several."""

    event_id: str
    event_type: str
    body: bytes


@dataclass(frozen=True)
class Reply:
    """An answer given inline without storing anything (Slack's challenge, Mailchimp's GET check)."""

    status: int = 200
    body: Any = None  # dict -> JSON, str -> text/plain, None -> empty
    headers: Mapping[str, str] = field(default_factory=dict)


class Provider(Protocol):
    """The module interface the gateway discovers under webhooks_gateway/providers/."""

    NAME: str
    SECRET_ENV: str  # the variable that enables the route, named as in DESIGN.md
    HANDLED_EVENT_TYPES: frozenset[str]
    # Headers kept in the inbox so the body can be verified again later (never auth tokens).
    STORED_HEADERS: tuple[str, ...]
    METHODS: tuple[str, ...]

    def secrets(self, settings: Settings) -> tuple[SecretStr, ...]: ...

    def verify(
        self,
        delivery: Delivery,
        *,
        secrets: Sequence[SecretStr],
        now: datetime,
        tolerance_seconds: int,
    ) -> None: ...

    def parse(self, delivery: Delivery) -> Any: ...

    def handshake(self, delivery: Delivery, payload: Any) -> Reply | None: ...

    def events(self, delivery: Delivery, payload: Any) -> list[InboundEvent]: ...


# --- helpers the provider modules share ------------------------------------------------------


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(raw)  # the hot path's one parse: several times faster than json
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise PayloadError("body is not a JSON object")
    return payload


def parse_form(raw: bytes) -> dict[str, str]:
    """`application/x-www-form-urlencoded` bodies (Twilio, Mailchimp); the last value of a key wins."""
    try:
        return dict(
            parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"body is not form-encoded: {exc}") from exc


def body_hash(raw: bytes) -> str:
    """The event id of a provider that sends none: the same bytes redelivered give the same id."""
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


def hmac_matches(expected: bytes | str, presented: bytes | str) -> bool:
    """Constant-time comparison of two signatures or tokens."""
    left = expected.encode() if isinstance(expected, str) else expected
    right = presented.encode() if isinstance(presented, str) else presented
    return hmac.compare_digest(left, right)


def check_timestamp(signed_at: int, now: datetime, tolerance_seconds: int) -> None:
    """Refuse a signature older, or further in the future, than the tolerance."""
    skew = now.timestamp() - signed_at
    if abs(skew) > tolerance_seconds:
        raise SignatureError("stale", f"signed {int(skew)}s from now")


def require_header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise SignatureError("missing_header", name)
    return value


def check_token(
    delivery: Delivery, secrets: Sequence[SecretStr], *, header: str | None = None
) -> None:
    """Providers that sign nothing: a secret token as `?token=`, `Authorization: Bearer` or `header`."""
    presented = delivery.query.get("token")
    authorization = delivery.headers.get("authorization", "")
    if not presented and authorization.lower().startswith("bearer "):
        presented = authorization[7:].strip()
    if not presented and header:
        presented = delivery.headers.get(header)
    if not presented:
        raise SignatureError("missing_header", "token")
    if not any(hmac_matches(secret.get_secret_value(), presented) for secret in secrets):
        raise SignatureError("mismatch", "token matches no configured secret")


def single_event(event_id: str, event_type: str, raw: bytes) -> list[InboundEvent]:
    return [InboundEvent(event_id=event_id, event_type=event_type, body=raw)]
