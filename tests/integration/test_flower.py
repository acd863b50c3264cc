"""Flower as `make run` starts it: closed without credentials, and with them its HTTP API lists the
run's tasks by name and queue, also after a restart (its history is kept in a file)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from tests.conftest import make_settings
from tests.integration.conftest import Fleet, running_fleet, start_redis
from tests.support.processes import Service, free_port, redis_url_of, wait_for_http, wait_until
from tests.support.sandbox import SandboxServer
from tests.support.stripe_fixtures import StripeCustomer
from workers.fleet import flower_args, flower_env

pytestmark = pytest.mark.integration
CREDENTIALS = ("operator", "flower-test-password")
PROCESS_EVENTS = "tasks.dispatch.process_events"  # what the relay sends


@pytest.fixture
def fleet_and_flower(
    database_url: str, tmp_path: Path, sandbox: SandboxServer
) -> Iterator[tuple[Fleet, Service]]:
    redis = start_redis(tmp_path)
    try:
        with running_fleet(database_url, redis_url_of(redis), tmp_path / "fleet", sandbox) as fleet:
            flower = _flower(fleet, tmp_path)
            flower.start()
            try:
                yield fleet, flower
            finally:
                flower.stop()
    finally:
        redis.stop()


def _flower(fleet: Fleet, workdir: Path) -> Service:
    settings = make_settings(
        flower_port=free_port(), flower_db=str(workdir / "flower.db"), flower_max_tasks=500
    )
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", *flower_args(settings)]
    env = fleet.env | flower_env(SecretStr(":".join(CREDENTIALS)))
    return Service("flower", argv, env, workdir / "flower.log")


def _url(flower: Service, path: str) -> str:
    port = next(a.split("=", 1)[1] for a in flower.argv if a.startswith("--port="))
    return f"http://127.0.0.1:{port}{path}"


def _tasks(flower: Service) -> dict[str, dict[str, Any]]:
    response = httpx.get(_url(flower, "/api/tasks"), auth=CREDENTIALS, timeout=10)
    assert response.status_code == 200, response.text
    tasks: dict[str, dict[str, Any]] = response.json()
    return tasks


def _succeeded(flower: Service, name: str) -> list[dict[str, Any]]:
    return [t for t in _tasks(flower).values() if t["name"] == name and t["state"] == "SUCCESS"]


def test_flower_answers_401_without_credentials_and_lists_the_runs_tasks_with_them(
    fleet_and_flower: tuple[Fleet, Service], pg_engine: Engine
) -> None:
    fleet, flower = fleet_and_flower
    wait_for_http(_url(flower, "/healthcheck"), flower)
    event = StripeCustomer.new().event("invoice.payment_failed")

    for path in ("/", "/api/tasks", "/api/workers", "/tasks"):
        assert httpx.get(_url(flower, path), timeout=10).status_code == 401, path
    wrong = httpx.get(_url(flower, "/api/tasks"), auth=("operator", "guess"), timeout=10)
    assert wrong.status_code == 401
    assert fleet.deliver(event).status_code == 200

    wait_until(lambda: _succeeded(flower, PROCESS_EVENTS), timeout=30, what="process_events listed")
    (task,) = _succeeded(flower, PROCESS_EVENTS)
    assert task["routing_key"] == "dispatch"
    assert task["worker"].startswith("worker@")


def test_flower_keeps_its_task_history_across_a_restart(
    fleet_and_flower: tuple[Fleet, Service], tmp_path: Path
) -> None:
    fleet, flower = fleet_and_flower
    wait_for_http(_url(flower, "/healthcheck"), flower)
    assert fleet.deliver(StripeCustomer.new().event("invoice.payment_failed")).status_code == 200
    wait_until(lambda: _succeeded(flower, PROCESS_EVENTS), timeout=30, what="process_events listed")
    before = {uuid for uuid, task in _tasks(flower).items() if task["name"] == PROCESS_EVENTS}

    flower.stop()
    flower.start()
    wait_for_http(_url(flower, "/healthcheck"), flower)

    after = {uuid for uuid, task in _tasks(flower).items() if task["name"] == PROCESS_EVENTS}
    assert before <= after
