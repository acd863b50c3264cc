"""What every provider module offers the ingest path, and the one error its verifier raises."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import SecretStr

FailureReason = Literal["missing_header", "malformed", "stale", "mismatch"]


class SignatureError(Exception):
    """A delivery we cannot prove the provider sent; `reason` is a closed set, used as a metric tag."""

    def __init__(self, reason: FailureReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: FailureReason = reason


class PayloadError(Exception):
    """A genuine delivery whose body we cannot read as an event (bad JSON, no id or type)."""


class Provider(Protocol):
    """The module interface: pure functions, no database, broker or HTTP work."""

    NAME: str
    HANDLED_EVENT_TYPES: frozenset[str]
    # Headers kept in the inbox so the body can be verified again later.
    STORED_HEADERS: tuple[str, ...]

    def verify(
        self,
        raw: bytes,
        headers: Mapping[str, str],
        *,
        secrets: Sequence[SecretStr],
        now: datetime,
        tolerance_seconds: int,
    ) -> None: ...

    def event_id(self, payload: Mapping[str, Any], headers: Mapping[str, str]) -> str: ...

    def event_type(self, payload: Mapping[str, Any], headers: Mapping[str, str]) -> str: ...
