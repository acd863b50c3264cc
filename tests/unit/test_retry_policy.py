"""The error taxonomy and the backoff: sorted once, delays growing, Retry-After honoured."""

from __future__ import annotations

from itertools import pairwise

import httpx
import kombu.exceptions
import psycopg.errors
import pytest
import redis
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError, OperationalError

from workers.base_task import backoff_seconds
from workers.errors import (
    ConfigurationError,
    PermanentError,
    TransientError,
    classify,
    error_for_status,
)


class _Shape(BaseModel):
    id: int


def _validation_error() -> ValidationError:
    try:
        _Shape.model_validate({"id": "x"})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError("read timed out"),
        ConnectionRefusedError("refused"),
        httpx.ConnectError("down"),
        OperationalError("SELECT 1", {}, Exception("server closed the connection")),
        redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379"),
        kombu.exceptions.OperationalError("broker gone"),
    ],
    ids=[
        "timeout",
        "connection-refused",
        "httpx-connect",
        "database-gone",
        "redis-gone",
        "broker-gone",
    ],
)
def test_transport_and_database_outages_are_transient(exc: Exception) -> None:
    assert isinstance(classify(exc), TransientError)


def test_a_unique_violation_from_a_concurrent_writer_is_transient_other_integrity_errors_are_not() -> (
    None
):
    duplicate = psycopg.errors.UniqueViolation("duplicate key value violates unique constraint")
    missing = psycopg.errors.NotNullViolation("null value in column violates not-null constraint")

    assert isinstance(classify(IntegrityError("INSERT", {}, duplicate)), TransientError)
    assert isinstance(classify(IntegrityError("INSERT", {}, missing)), PermanentError)


@pytest.mark.parametrize(
    "exc",
    [ValueError("bad"), KeyError("missing"), _validation_error(), ConfigurationError("no key")],
    ids=["value-error", "key-error", "validation", "configuration"],
)
def test_everything_else_is_permanent(exc: Exception) -> None:
    assert isinstance(classify(exc), PermanentError)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_transient(status: int) -> None:
    assert isinstance(error_for_status("slack", status, None, "busy"), TransientError)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_client_errors_are_permanent(status: int) -> None:
    assert isinstance(error_for_status("slack", status, None, "no"), PermanentError)


def test_retry_after_header_travels_with_the_error() -> None:
    error = error_for_status("luma", 429, "2", "slow down")

    assert isinstance(error, TransientError)
    assert error.retry_after == 2.0


def test_unparseable_retry_after_is_ignored() -> None:
    error = error_for_status("luma", 429, "soon", "slow down")

    assert isinstance(error, TransientError)
    assert error.retry_after is None


def test_backoff_grows_with_each_retry_whatever_the_jitter() -> None:
    for _ in range(200):
        delays = [backoff_seconds(n, base=1.0, cap=600, retry_after=None) for n in range(4)]
        assert all(earlier <= later for earlier, later in pairwise(delays))
        assert 0.5 <= delays[0] <= 1.0
        assert 4.0 <= delays[3] <= 8.0


def test_backoff_is_capped_and_never_shorter_than_retry_after() -> None:
    assert backoff_seconds(30, base=1.0, cap=60, retry_after=None) <= 60
    assert backoff_seconds(0, base=1.0, cap=60, retry_after=7) == 7
