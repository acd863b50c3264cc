"""Fixtures of the gateway's admin API and pages: broker recorders and a token bucket of the test's."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis

from tests.support.admin_world import Published, SentJobs, SentTasks
from workers.rate_limit import TokenBucket


@pytest.fixture
def bucket(services: None) -> Iterator[TokenBucket]:
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
    prefix = f"hookfleet:test:{secrets.token_hex(6)}:"
    yield TokenBucket(client, prefix=prefix)
    leftovers = list(client.scan_iter(match=f"{prefix}*"))
    if leftovers:
        client.delete(*leftovers)
    client.close()


@pytest.fixture
def sent() -> SentTasks:
    return SentTasks()


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def sent_jobs() -> SentJobs:
    return SentJobs()
