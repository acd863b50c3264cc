"""`make run`: migrate, then start gateway, worker, beat and Flower together under honcho."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import click
from honcho.manager import Manager
from pydantic import SecretStr

from schemas.migrate import upgrade
from schemas.settings import Settings
from workers.queues import JOB_QUEUE, WEBHOOK_QUEUES
from workers.sandbox.local_secrets import STATE_DIR, sandbox_overrides
from workers.worker_metrics import MULTIPROC_ENV, reset_multiprocess_dir

LOCAL_REDIS = ("127.0.0.1", 6379)
FLOWER_CREDENTIALS = STATE_DIR / "flower-credentials"
FLOWER_USER = "operator"
# Flower's task list: the name and queue (routing key) of every task, readable at a glance.
FLOWER_TASK_COLUMNS = "name,uuid,state,routing_key,received,started,runtime,worker,retries"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _private_redis() -> tuple[str, subprocess.Popen[bytes]]:
    """A throwaway redis-server for this run, when none is configured or answering."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise click.ClickException(
            "No Redis answers at 127.0.0.1:6379 and redis-server is not installed: "
            "install it (apt-get install redis-server) or set REDIS_URL."
        )
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(50):
        if _answers("127.0.0.1", port):
            return f"redis://127.0.0.1:{port}/0", process
        time.sleep(0.1)
    process.kill()
    raise click.ClickException(f"the private redis-server on port {port} did not start")


def _flower_credentials(settings: Settings) -> tuple[SecretStr, str]:
    """FLOWER_BASIC_AUTH, or this checkout's own generated one: Flower never runs open."""
    if settings.flower_basic_auth is not None:
        return settings.flower_basic_auth, "from FLOWER_BASIC_AUTH"
    if not FLOWER_CREDENTIALS.exists():
        FLOWER_CREDENTIALS.touch(mode=0o600)
        FLOWER_CREDENTIALS.write_text(f"{FLOWER_USER}:{secrets.token_urlsafe(18)}\n")
    return SecretStr(
        FLOWER_CREDENTIALS.read_text().strip()
    ), f"user:password in {FLOWER_CREDENTIALS}"


def flower_args(settings: Settings) -> list[str]:
    """`celery -A workers.celery_app` + these: Flower with its history kept in a file and bounded."""
    return [
        "flower",
        f"--address={settings.flower_address}",
        f"--port={settings.flower_port}",
        "--persistent=True",
        f"--db={settings.flower_db or STATE_DIR / 'flower.db'}",
        f"--max_tasks={settings.flower_max_tasks}",
        "--state_save_interval=60000",
    ]


def flower_env(auth: SecretStr) -> dict[str, str]:
    """Flower reads its credentials from the environment, never from a command line `ps` shows."""
    return {
        "FLOWER_BASIC_AUTH": auth.get_secret_value(),
        "FLOWER_TASKS_COLUMNS": FLOWER_TASK_COLUMNS,
    }


def _metrics_dirs(env: dict[str, str]) -> dict[str, dict[str, str]]:
    """A wiped PROMETHEUS_MULTIPROC_DIR per role, so no process reads another tree's files."""
    base = Path(env.get(MULTIPROC_ENV) or STATE_DIR / "metrics")
    dirs = {}
    for role in ("gateway", "worker", "jobs", "beat"):
        reset_multiprocess_dir(base / role)
        dirs[role] = {MULTIPROC_ENV: str((base / role).resolve())}
    return dirs


def run_fleet() -> None:
    settings = Settings()
    env = dict(os.environ)
    private: subprocess.Popen[bytes] | None = None
    notes: list[str] = []
    if "redis_url" in settings.model_fields_set:
        redis_url = settings.redis_url  # as given, even if it is not up yet: the inbox still fills
    elif _answers(*LOCAL_REDIS):
        redis_url = settings.redis_url
    else:
        redis_url, private = _private_redis()
        notes.append("no Redis was running: started a private redis-server for this run")
    env["REDIS_URL"] = redis_url
    sandbox_url = f"http://127.0.0.1:{settings.sandbox_port}"
    played = sandbox_overrides(settings, sandbox_url)
    env |= played
    if played:
        notes.append(
            f"sandbox mode: providers with no keys set are played by the sandbox at {sandbox_url}; "
            "try `.venv/bin/hookfleet send scenario signup`"
        )
    upgrade(settings)
    STATE_DIR.mkdir(exist_ok=True)
    flower_auth, flower_auth_source = _flower_credentials(settings)
    metrics_env = _metrics_dirs(env)
    gateway = f"http://{settings.gateway_host}:{settings.gateway_port}"
    broker = urlsplit(redis_url)  # printed without its password
    print(f"hookfleet gateway  {gateway}  (webhooks at {gateway}/webhooks/<provider>)")
    print(
        f"hookfleet flower   http://{settings.flower_address}:{settings.flower_port}  "
        f"(basic auth, {flower_auth_source})"
    )
    worker_metrics = f"http://{settings.worker_metrics_address}:{settings.worker_metrics_port}"
    jobs_metrics_port = settings.worker_metrics_port + 1
    print(
        f"hookfleet admin    {gateway}/admin  (sign in with an operator key: "
        "`.venv/bin/hookfleet keys create --name you --scopes dlq:read,dlq:write,events:read,"
        "events:replay`)"
    )
    print(
        f"hookfleet metrics  {gateway}/metrics, {worker_metrics}/metrics (worker) and "
        f"http://{settings.worker_metrics_address}:{jobs_metrics_port}/metrics (jobs worker)"
    )
    print(f"hookfleet sandbox  {sandbox_url}  (calls it received: {sandbox_url}/_sandbox/calls)")
    print(f"hookfleet database {settings.database_url.split('@')[-1]}")
    print(
        f"hookfleet broker   {broker.scheme}://{broker.hostname}:{broker.port or 6379}{broker.path}"
    )
    for note in notes:
        print(f"hookfleet note     {note}")
    sys.stdout.flush()

    python = sys.executable
    celery = f"{python} -m celery -A workers.celery_app"
    manager = Manager()
    manager.add_process(
        "gateway",
        f"{python} -m uvicorn --factory webhooks_gateway.app:app_from_env "
        f"--host {settings.gateway_host} --port {settings.gateway_port} --no-access-log",
        env=env | metrics_env["gateway"],
    )
    manager.add_process(
        "worker",
        f"{celery} worker -Q {','.join(WEBHOOK_QUEUES)} -c 2 -n worker@%h --loglevel INFO",
        env=env | metrics_env["worker"],
    )
    manager.add_process(
        "jobs",
        f"{celery} worker -Q {JOB_QUEUE} -c 2 -n jobs@%h --loglevel INFO",
        env=env | metrics_env["jobs"] | {"WORKER_METRICS_PORT": str(jobs_metrics_port)},
    )
    manager.add_process(
        "beat",
        f"{celery} beat -s {STATE_DIR}/celerybeat-schedule --loglevel INFO",
        env=env | metrics_env["beat"],
    )
    manager.add_process(
        "flower", f"{celery} {shlex.join(flower_args(settings))}", env=env | flower_env(flower_auth)
    )
    manager.add_process(
        "sandbox", f"{python} -m workers.sandbox.cli serve --port {settings.sandbox_port}", env=env
    )
    try:
        manager.loop()
    finally:
        if private is not None:
            private.terminate()
    sys.exit(manager.returncode)
