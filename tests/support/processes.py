"""Real processes for integration tests: a private Redis, the gateway under uvicorn, a Celery worker."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from workers.queues import QUEUES

STARTUP_TIMEOUT_SECONDS = 30.0
ROOT = Path(__file__).parents[2]


# Below Linux's ephemeral range (32768-60999), picked at random: a port a test has just freed (a
# Redis it stopped, to start again on the same port) is not handed to another test running beside it.
PORT_RANGE = (20000, 32000)


def free_port() -> int:
    while True:
        port = random.randrange(*PORT_RANGE)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], object], *, timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> None:
    """Poll `predicate` until it is truthy; fail the test naming `what` when time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


@dataclass
class Service:
    """A child process whose output goes to a log file, shown when a test needs it."""

    name: str
    argv: list[str]
    env: Mapping[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.log_path.parent,  # away from the repository's .env
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def assert_running(self) -> None:
        assert self.process is not None, f"{self.name} was never started"
        assert self.process.poll() is None, f"{self.name} exited:\n{self.log_tail()}"


def redis_service(port: int, workdir: Path, *, append_only: bool = False) -> Service:
    """A private redis-server; `append_only` persists the queue across restarts, as deploy/ does."""
    binary = shutil.which("redis-server") or "redis-server"
    persistence = (
        ["--appendonly", "yes", "--appendfsync", "always"]
        if append_only
        else ["--appendonly", "no"]
    )
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)]
    return Service("redis", argv + persistence, {}, workdir / f"redis-{port}.log")


def redis_url_of(service: Service) -> str:
    """The URL of a redis_service, database 0."""
    port = service.argv[service.argv.index("--port") + 1]
    return f"redis://127.0.0.1:{port}/0"


def gateway_service(port: int, env: Mapping[str, str], workdir: Path) -> Service:
    argv = [sys.executable, "-m", "uvicorn", "--factory", "webhooks_gateway.app:app_from_env"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    return Service("gateway", argv, env, workdir / f"gateway-{port}.log")


def _celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app", *args]


def worker_service(env: Mapping[str, str], workdir: Path, name: str = "worker") -> Service:
    """A real prefork worker on every queue, with the misbehaving test tasks loaded too."""
    argv = _celery("worker", "-Q", ",".join(QUEUES), "-c", "2", "-P", "prefork")
    argv += ["-I", "tests.support.fault_tasks", "--without-mingle", "--without-gossip"]
    argv += ["-n", f"{name}@%h", "--loglevel", "INFO"]
    return Service(name, argv, {**env, "PYTHONPATH": str(ROOT)}, workdir / f"{name}.log")


def beat_service(env: Mapping[str, str], workdir: Path) -> Service:
    argv = _celery("beat", "-s", str(workdir / "celerybeat-schedule"), "--loglevel", "INFO")
    return Service("beat", argv, env, workdir / "beat.log")


def wait_for_http(url: str, service: Service) -> None:
    def up() -> bool:
        service.assert_running()
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=STARTUP_TIMEOUT_SECONDS, what=f"{service.name} at {url}")


def wait_for_worker(ping: Callable[[], bool], service: Service) -> None:
    def up() -> bool:
        service.assert_running()
        return ping()

    wait_until(up, timeout=STARTUP_TIMEOUT_SECONDS, interval=0.5, what=f"{service.name} ping")


def hookfleet(
    *args: str,
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout: float = 60,
    inherit_env: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run the `hookfleet` command as an operator would, with `env` on top of ours (or alone)."""
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env={**os.environ, **env} if inherit_env else dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
