"""What the job tests share: members with memberships in the run's database, job settings pointed
at the provider sandbox, and `run_job` in this process on them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import session_scope
from schemas.settings import Settings
from schemas.tables import AuditEntry, Integration, JobRun, LumaDecision, Member, Membership
from tests.conftest import make_settings
from tests.support.sandbox import SandboxServer
from workers import runtime
from workers.jobs import JobOutcome, run_job
from workers.sandbox.luma import SANDBOX_API_KEY

FAST = 60_000.0  # calls a minute, on both sides, where a test is not about the limits


def job_settings(sandbox: SandboxServer, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "luma_api_key": SecretStr(SANDBOX_API_KEY),
        "luma_api_base": sandbox.luma_api_base,
        "slack_bot_token": SecretStr("xoxb-hookfleet-test"),
        "slack_api_base": sandbox.slack_api_base,
        "slack_operators_channel": "#jobs-test",
        "luma_requests_per_minute": FAST,
        "slack_tier2_per_minute": FAST,
        "slack_tier3_per_minute": FAST,
        "retry_backoff_seconds": 0.05,
        "job_call_attempts": 3,
        **overrides,
    }
    return make_settings(**values)


def unlimited(sandbox: SandboxServer) -> None:
    """The sandbox's limits raised as far as the tests' own, for tests not about the limits."""
    sandbox.set_rate_limit("luma", "*", FAST)
    sandbox.set_rate_limit("slack", "users.list", FAST)
    sandbox.set_rate_limit("slack", "users.lookupByEmail", FAST)


@dataclass
class JobRuntime:
    """`run_job` in this process, on the test database, a fakeredis and settings of the test's."""

    monkeypatch: pytest.MonkeyPatch
    engine: Engine
    redis: fakeredis.FakeRedis
    settings: Settings

    def configure(self, settings: Settings) -> None:
        self.settings = settings
        self.monkeypatch.setattr(runtime, "settings", lambda: self.settings)

    def run(self, job: str, **kwargs: Any) -> JobOutcome:
        return run_job(job, **kwargs)

    def session(self) -> Session:
        return Session(self.engine)


@pytest.fixture
def job_runtime(
    monkeypatch: pytest.MonkeyPatch, pg_engine: Engine, database_url: str, sandbox: SandboxServer
) -> Iterator[JobRuntime]:
    sandbox.reset()
    unlimited(sandbox)
    redis = fakeredis.FakeRedis()
    jobs = JobRuntime(monkeypatch, pg_engine, redis, job_settings(sandbox, database_url))
    jobs.configure(jobs.settings)
    monkeypatch.setattr(
        runtime, "sessions", lambda: sessionmaker(pg_engine, expire_on_commit=False)
    )
    monkeypatch.setattr(runtime, "redis", lambda: redis)
    yield jobs
    sandbox.reset()


class Community:
    """Members made by one test, with emails of its own (`email("alice")`), removed afterwards."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.tag = secrets.token_hex(4)
        self.ids: dict[str, int] = {}

    def email(self, who: str) -> str:
        return f"{who}.{self.tag}@example.org"

    def add(
        self, who: str, status: str | None, *, visible: bool = True, email: str | None = None
    ) -> int:
        """A member (`status` None: one without a membership)."""
        with session_scope(sessionmaker(self.engine)) as session:
            member = Member(email=email or self.email(who), name=who.title(), visible=visible)
            session.add(member)
            session.flush()
            if status is not None:
                session.add(Membership(member_id=member.id, status=status, tier="member"))
            self.ids[who] = member.id
            return member.id

    def set_status(self, who: str, status: str) -> None:
        with session_scope(sessionmaker(self.engine)) as session:
            membership = session.scalars(
                select(Membership).where(Membership.member_id == self.ids[who])
            ).one()
            membership.status = status

    def remove(self) -> None:
        ids = list(self.ids.values())
        with session_scope(sessionmaker(self.engine)) as session:
            session.execute(delete(Integration).where(Integration.member_id.in_(ids)))
            session.execute(delete(Membership).where(Membership.member_id.in_(ids)))
            session.execute(delete(Member).where(Member.id.in_(ids)))
            session.execute(delete(LumaDecision).where(LumaDecision.email.like(f"%.{self.tag}@%")))


@pytest.fixture
def community(pg_engine: Engine) -> Iterator[Community]:
    people = Community(pg_engine)
    yield people
    people.remove()


def audits_of_run(engine: Engine, run_id: int | None) -> list[AuditEntry]:
    """The audit entries a job run wrote (its run id is in each entry's detail)."""
    with Session(engine) as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.actor.like("job:%")))
        return [row for row in rows if row.detail.get("run_id") == run_id]


def job_run(engine: Engine, run_id: int | None) -> JobRun:
    with Session(engine) as session:
        row = session.get(JobRun, run_id)
        assert row is not None
        return row
