"""`hookfleet run` (what `make run` starts): migrate SQLite, start all four parts, take an event."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import start_redis
from tests.support.processes import free_port, hookfleet, redis_url_of, wait_until

pytestmark = pytest.mark.integration


def _active_members(database: Path) -> list[tuple[str, str]]:
    if not database.exists():
        return []
    with sqlite3.connect(database) as connection:
        return connection.execute(
            "SELECT m.email, s.status FROM members m JOIN memberships s ON s.member_id = m.id"
        ).fetchall()


def test_fleet_starts_on_sqlite_announces_itself_and_processes_a_sent_event(
    tmp_path: Path,
) -> None:
    # A Redis of its own: on the session fleet's, that fleet's workers would take these tasks.
    redis = start_redis(tmp_path)
    gateway_port, flower_port, sandbox_port = free_port(), free_port(), free_port()
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("STRIPE_", "DATABASE_", "SLACK_"))
        },
        "REDIS_URL": redis_url_of(redis),
        "GATEWAY_PORT": str(gateway_port),
        "FLOWER_PORT": str(flower_port),
        "SANDBOX_PORT": str(sandbox_port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{gateway_port}",
    }
    log = (tmp_path / "fleet.log").open("wb")
    fleet = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "run"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    output = tmp_path / "fleet.log"
    try:

        def fleet_up() -> bool:
            assert fleet.poll() is None, f"hookfleet run exited:\n{output.read_text()}"
            return all(
                _answers(url)
                for url in (
                    f"http://127.0.0.1:{gateway_port}/healthz",
                    f"http://127.0.0.1:{flower_port}/healthcheck",
                    f"http://127.0.0.1:{sandbox_port}/_sandbox/health",
                )
            )

        wait_until(fleet_up, timeout=60, interval=0.5, what="gateway, Flower and the sandbox")
        first_lines = output.read_text().splitlines()[:12]
        assert first_lines[0].startswith(f"hookfleet gateway  http://127.0.0.1:{gateway_port}")
        assert any("sandbox mode" in line for line in first_lines)

        sent = hookfleet(
            "send", "scenario", "signup", "--email", "first.member@example.com",
            env=env, cwd=tmp_path, timeout=30, inherit_env=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr

        wait_until(
            lambda: (
                _active_members(tmp_path / "hookfleet.db")
                == [("first.member@example.com", "active")]
            ),
            timeout=30,
            what="the signed-up member in the SQLite database",
        )
        welcomes = f"http://127.0.0.1:{sandbox_port}/_sandbox/calls?provider=sendgrid"
        wait_until(
            lambda: "first.member@example.com" in httpx.get(welcomes, timeout=2).text,
            what="the welcome email at the sandbox",
        )
    finally:
        if fleet.poll() is None:
            os.killpg(fleet.pid, signal.SIGTERM)
            fleet.wait(30)
        log.close()
        redis.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).is_success
    except httpx.HTTPError:
        return False
