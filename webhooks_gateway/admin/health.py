"""Integration health: per provider, what came in and what went out lately; per job, its last run.

One function, `integration_health`, feeds both the operators' page (/admin/health) and
`GET /admin/api/health`, so the two can never disagree. Everything is read, nothing is kept here:

- inbound, from the inbox: the newest stored webhook of each provider, and how many of the last
  hour's deliveries ended `failed` (a handler dead-lettered) out of all of them;
- outbound, from the Redis trail `workers.provider_calls` keeps for every client call: last success,
  last failure and the last hour's calls and errors. With Redis away that half reads "unknown"
  rather than failing the page, which is when an operator needs the other half most;
- scheduled jobs, from `job_runs`: the newest row of every job name found there.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal

import redis as redis_client
from pydantic import BaseModel, ConfigDict, Field, computed_field
from redis.exceptions import RedisError
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from schemas.settings import Settings
from schemas.tables import InboxStatus, JobRun, WebhookEvent
from webhooks_gateway.providers import PROVIDERS
from workers.jobs import JOBS
from workers.logging import get_logger
from workers.provider_calls import ProviderCallStats, recent_provider_calls

log = get_logger(__name__)
WINDOW = timedelta(hours=1)
# The seed platform's runbook: webhook success below 99% warns, below 95% is critical. Outbound
# calls are judged by the same marks.
WARN_ERROR_RATE = 0.01
CRITICAL_ERROR_RATE = 0.05
Level = Literal["ok", "warn", "critical", "unknown"]


def level_of(error_rate: float | None) -> Level:
    """`unknown` when nothing happened in the window (or it could not be read)."""
    if error_rate is None:
        return "unknown"
    if error_rate > CRITICAL_ERROR_RATE:
        return "critical"
    if error_rate > WARN_ERROR_RATE:
        return "warn"
    return "ok"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class WebhookHealth(_Frozen):
    last_received_at: datetime | None = Field(description="the newest stored delivery")
    last_hour: int = Field(description="deliveries stored in the last hour")
    failed_last_hour: int = Field(description="of those, the ones a handler dead-lettered")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def error_rate(self) -> float | None:
        """failed / all in the last hour; null when there were none."""
        return _rate(self.failed_last_hour, self.last_hour)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def level(self) -> Level:
        """ok | warn (error rate over 1%) | critical (over 5%) | unknown (no delivery)."""
        return level_of(self.error_rate)


class CallHealth(_Frozen):
    """Outbound calls to the provider's API; every count is null when Redis could not be read."""

    last_ok_at: datetime | None
    last_error_at: datetime | None
    last_hour: int | None
    errors_last_hour: int | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def error_rate(self) -> float | None:
        if self.last_hour is None or self.errors_last_hour is None:
            return None
        return _rate(self.errors_last_hour, self.last_hour)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def level(self) -> Level:
        """ok | warn (error rate over 1%) | critical (over 5%) | unknown (no call, or no Redis)."""
        return level_of(self.error_rate)


class ProviderHealth(_Frozen):
    provider: str
    enabled: bool = Field(description="its inbound secret is set, so its route takes webhooks")
    webhooks: WebhookHealth
    calls: CallHealth


class JobHealth(_Frozen):
    """The newest run of one scheduled job; a job that has never run is listed all the same."""

    job: str
    run_id: int | None
    outcome: str = Field(description="never_run | running | succeeded | failed | skipped")
    triggered_by: str | None
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, Any]
    error: str | None


class IntegrationHealth(_Frozen):
    generated_at: datetime
    window_seconds: int
    calls_known: bool = Field(description="false when the outbound trail (Redis) could not be read")
    providers: list[ProviderHealth]
    jobs: list[JobHealth]


def _rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def _inbound(session: Session, since: datetime) -> dict[str, tuple[datetime | None, int, int]]:
    """provider -> (newest webhook, deliveries in the window, of which failed)."""
    newest: dict[str, datetime | None] = {
        provider: received_at
        for provider, received_at in session.execute(
            select(WebhookEvent.provider, func.max(WebhookEvent.received_at)).group_by(
                WebhookEvent.provider
            )
        )
    }
    failed = func.sum(case((WebhookEvent.status == InboxStatus.FAILED, 1), else_=0))
    recent = {
        provider: (int(total), int(failures or 0))
        for provider, total, failures in session.execute(
            select(WebhookEvent.provider, func.count(), failed)
            .where(WebhookEvent.received_at >= since)
            .group_by(WebhookEvent.provider)
        )
    }
    return {
        provider: (newest.get(provider), *recent.get(provider, (0, 0)))
        for provider in newest.keys() | recent.keys()
    }


def last_job_runs(session: Session) -> list[JobHealth]:
    """The newest `job_runs` row of every scheduled job and of any other job that has one."""
    newest_ids = select(func.max(JobRun.id)).group_by(JobRun.job).scalar_subquery()
    newest = {
        row.job: JobHealth(
            job=row.job,
            run_id=row.id,
            outcome=row.outcome,
            triggered_by=row.triggered_by,
            started_at=row.started_at,
            finished_at=row.finished_at,
            counts=dict(row.counts),
            error=row.error,
        )
        for row in session.scalars(select(JobRun).where(JobRun.id.in_(newest_ids)))
    }
    for name in JOBS:
        newest.setdefault(
            name,
            JobHealth(
                job=name,
                run_id=None,
                outcome="never_run",
                triggered_by=None,
                started_at=None,
                finished_at=None,
                counts={},
                error=None,
            ),
        )
    return [newest[name] for name in sorted(newest)]


def enabled_providers(settings: Settings) -> list[tuple[str, bool]]:
    """Every provider module, with whether its inbound secret is set."""
    return [(name, bool(provider.secrets(settings))) for name, provider in PROVIDERS.items()]


def _outbound(
    redis: redis_client.Redis, names: list[str], now: datetime
) -> dict[str, ProviderCallStats] | None:
    try:
        return {name: recent_provider_calls(redis, name, now=now.timestamp()) for name in names}
    except (RedisError, OSError) as exc:
        log.warning("admin.health_calls_unavailable", error=str(exc)[:200])
        return None


def integration_health(
    session: Session,
    redis: redis_client.Redis,
    providers: Iterable[tuple[str, bool]],
    *,
    now: datetime,
) -> IntegrationHealth:
    """Health of each `(provider name, enabled)` and of every scheduled job, as of `now` (UTC)."""
    providers = list(providers)
    inbound = _inbound(session, now - WINDOW)
    outbound = _outbound(redis, [name for name, _ in providers], now)
    result: list[ProviderHealth] = []
    for name, enabled in providers:
        last_webhook_at, webhooks, failures = inbound.get(name, (None, 0, 0))
        stats = outbound.get(name) if outbound is not None else None
        result.append(
            ProviderHealth(
                provider=name,
                enabled=enabled,
                webhooks=WebhookHealth(
                    last_received_at=last_webhook_at, last_hour=webhooks, failed_last_hour=failures
                ),
                calls=CallHealth(
                    last_ok_at=stats.last_ok_at if stats else None,
                    last_error_at=stats.last_error_at if stats else None,
                    last_hour=stats.calls_last_hour if stats else None,
                    errors_last_hour=stats.errors_last_hour if stats else None,
                ),
            )
        )
    return IntegrationHealth(
        generated_at=now,
        window_seconds=int(WINDOW.total_seconds()),
        calls_known=outbound is not None,
        providers=result,
        jobs=last_job_runs(session),
    )
