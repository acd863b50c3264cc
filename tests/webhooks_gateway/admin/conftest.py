"""The operators' pages in the gateway app, over the HTTP test client, on the run's PostgreSQL and
the real Redis; the rows are seeded and removed as in the admin API's tests (tests/support/admin_world)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, select
from starlette.testclient import TestClient

from schemas.db import session_scope
from schemas.tables import AuditEntry, JobRun
from tests.conftest import make_settings
from tests.support.admin_world import Published, SentJobs, SentTasks, World, no_enqueue
from webhooks_gateway.app import create_app
from workers.rate_limit import TokenBucket

ADMIN = "/admin"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class PagesWorld(World):
    """World, plus what the pages write that the API does not: group-replay audit rows and job runs."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        with self.sessions() as session:
            # Refused sign-ins are audited under the client's address, not a key of this test's.
            self.audit_floor = session.scalar(select(func.max(AuditEntry.id))) or 0

    @property
    def job_name(self) -> str:
        return f"test-job-{self.tag}"

    def clean(self) -> None:
        super().clean()
        with session_scope(self.sessions) as session:
            session.execute(
                delete(AuditEntry).where(
                    AuditEntry.entity_type == "dead_letter_group",
                    AuditEntry.entity_id == self.task_name,
                )
            )
            session.execute(delete(JobRun).where(JobRun.job == self.job_name))
            session.execute(
                delete(AuditEntry).where(
                    AuditEntry.action == "admin.sign_in_refused",
                    AuditEntry.id > self.audit_floor,
                )
            )

    def refused_sign_ins(self) -> list[AuditEntry]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(AuditEntry).where(
                        AuditEntry.action == "admin.sign_in_refused",
                        AuditEntry.id > self.audit_floor,
                    )
                )
            )


@pytest.fixture
def world(pg_engine: Engine) -> Iterator[PagesWorld]:
    seeded = PagesWorld(pg_engine)
    yield seeded
    seeded.clean()


MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(
    database_url: str,
    sent: SentTasks,
    published: Published,
    sent_jobs: SentJobs,
    bucket: TokenBucket,
) -> Iterator[MakeClient]:
    """A started gateway app with these settings overrides, behind a test client (https or not)."""
    with_clients: list[TestClient] = []

    def make(*, https: bool = False, **overrides: Any) -> TestClient:
        settings = make_settings(database_url=database_url, **overrides)
        app = create_app(
            settings,
            enqueue=no_enqueue,
            send_task=sent,
            publish=published,
            send_job=sent_jobs,
            bucket=bucket,
        )
        client = TestClient(app, base_url="https://testserver" if https else "http://testserver")
        client.__enter__()
        with_clients.append(client)
        return client

    yield make
    for client in with_clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def sign_in(client: TestClient, key: str) -> str:
    """Sign in through the form; return the session's CSRF token for the forms that follow."""
    form = client.get(f"{ADMIN}/sign-in")
    response = client.post(
        f"{ADMIN}/sign-in",
        data={"api_key": key, "csrf_token": csrf_of(form.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get(f"{ADMIN}/health").text)
