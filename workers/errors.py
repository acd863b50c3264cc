"""The error taxonomy, sorted once: transient errors are retried, everything else is dead-lettered.

Tasks raise these (or let library exceptions through, which `classify` sorts); no task decides its own
retry rules.
"""

from __future__ import annotations

import socket

import httpx
import kombu.exceptions
import redis
import requests
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

# HTTP statuses a provider answers when trying again later can succeed.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class TransientError(Exception):
    """Worth retrying: timeouts, connection errors, 429, 5xx, a database briefly gone."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """Retrying cannot help: other 4xx, invalid payloads, missing configuration."""


class ConfigurationError(PermanentError):
    """A setting the task needs is missing (for example a provider key)."""


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds (the HTTP-date form is not used by the providers we call)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_for_status(provider: str, status: int, retry_after: str | None, detail: str) -> Exception:
    """The exception a provider's HTTP answer stands for (only called for non-2xx answers)."""
    message = f"{provider} answered {status}: {detail[:300]}"
    if status in TRANSIENT_STATUSES:
        return TransientError(message, retry_after=parse_retry_after(retry_after))
    return PermanentError(message)


def classify(exc: BaseException) -> TransientError | PermanentError:
    """Sort any exception a task raised into one of the two kinds."""
    if isinstance(exc, TransientError | PermanentError):
        return exc
    transient_types = (
        TimeoutError,
        ConnectionError,
        redis.ConnectionError,
        redis.TimeoutError,
        kombu.exceptions.OperationalError,
        socket.timeout,
        httpx.TransportError,
        requests.ConnectionError,
        requests.Timeout,
        OperationalError,
    )
    if isinstance(exc, transient_types) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return TransientError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, IntegrityError) and _unique_violation(exc):
        # Two first events of one customer, run at once, both create its member: the loser's retry
        # finds the winner's row.
        return TransientError(f"concurrent write won a race: {exc.orig}")
    if isinstance(exc, ValidationError):
        return PermanentError(f"invalid payload: {exc.error_count()} validation errors")
    return PermanentError(f"{type(exc).__name__}: {exc}")


def _unique_violation(exc: IntegrityError) -> bool:
    """PostgreSQL's 23505, or SQLite's UNIQUE constraint."""
    orig = exc.orig
    return (
        getattr(orig, "sqlstate", None) == "23505"
        or getattr(orig, "sqlite_errorname", None) == "SQLITE_CONSTRAINT_UNIQUE"
    )
