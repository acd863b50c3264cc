"""The provider-call trail: a Prometheus counter per provider and status, and a two-hour Redis trail
(last success, last failure, calls and errors per minute) read back for the health page."""

from __future__ import annotations

from datetime import UTC, datetime

import fakeredis
import pytest
import redis as redis_client
from prometheus_client import REGISTRY

from workers import runtime
from workers.provider_calls import (
    RETENTION_SECONDS,
    ProviderCallStats,
    recent_provider_calls,
    record_provider_call,
)

T0 = 1_800_000_000.0  # a minute boundary


@pytest.fixture
def trail(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:
    fake = fakeredis.FakeRedis()
    monkeypatch.setattr(runtime, "redis", lambda: fake)
    return fake


def _counted(provider: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "hookfleet_provider_api_calls_total", {"provider": provider, "status": status}
    )
    return value or 0.0


def test_each_answer_is_counted_by_provider_and_status_and_no_answer_as_error(
    trail: fakeredis.FakeRedis,
) -> None:
    before = {s: _counted("countme", s) for s in ("200", "503", "error")}

    record_provider_call("countme", 200, now=T0)
    record_provider_call("countme", 200, now=T0)
    record_provider_call("countme", 503, now=T0)
    record_provider_call("countme", None, now=T0)

    after = {s: _counted("countme", s) - before[s] for s in before}
    assert after == {"200": 2.0, "503": 1.0, "error": 1.0}


def test_trail_reports_last_success_last_failure_and_the_hours_calls_and_errors(
    trail: fakeredis.FakeRedis,
) -> None:
    record_provider_call("stripe", 200, now=T0 + 5)
    record_provider_call("stripe", 429, now=T0 + 65)
    record_provider_call("stripe", None, now=T0 + 70)
    record_provider_call("stripe", 201, now=T0 + 130)

    stats = recent_provider_calls(trail, "stripe", now=T0 + 140)

    assert stats == ProviderCallStats(
        last_ok_at=datetime.fromtimestamp(T0 + 130, UTC),
        last_error_at=datetime.fromtimestamp(T0 + 70, UTC),
        calls_last_hour=4,
        errors_last_hour=2,
    )


def test_calls_older_than_an_hour_leave_the_counts_but_not_the_last_times(
    trail: fakeredis.FakeRedis,
) -> None:
    record_provider_call("mailchimp", 500, now=T0)
    record_provider_call("mailchimp", 200, now=T0 + 3600)

    stats = recent_provider_calls(trail, "mailchimp", now=T0 + 3600)

    assert (stats.calls_last_hour, stats.errors_last_hour) == (1, 0)
    assert stats.last_error_at == datetime.fromtimestamp(T0, UTC)


def test_per_minute_counts_expire_after_two_hours(trail: fakeredis.FakeRedis) -> None:
    record_provider_call("slack", 500, now=T0)

    ttls = [trail.ttl(key) for key in trail.scan_iter("hookfleet:provider_calls:slack:*:*")]

    assert len(ttls) == 2  # calls and errors of that minute
    assert all(0 < ttl <= RETENTION_SECONDS for ttl in ttls)


def test_a_provider_never_called_has_an_empty_trail(trail: fakeredis.FakeRedis) -> None:
    assert recent_provider_calls(trail, "airtable", now=T0) == ProviderCallStats(None, None, 0, 0)


def test_redis_down_still_counts_the_call_and_never_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing listens on port 1: the connection is refused at once.
    down = redis_client.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    monkeypatch.setattr(runtime, "redis", lambda: down)
    before = _counted("sendgrid", "202")

    record_provider_call("sendgrid", 202)

    assert _counted("sendgrid", "202") == before + 1
