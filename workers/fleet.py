"""`make run`: migrate, then start gateway, worker, beat and Flower together under honcho."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import click
from honcho.manager import Manager

from schemas.migrate import upgrade
from schemas.settings import Settings
from workers.queues import QUEUES
from workers.sandbox.local_secrets import STATE_DIR, sandbox_overrides

LOCAL_REDIS = ("127.0.0.1", 6379)


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
    gateway = f"http://{settings.gateway_host}:{settings.gateway_port}"
    broker = urlsplit(redis_url)  # printed without its password
    print(f"hookfleet gateway  {gateway}  (webhooks at {gateway}/webhooks/<provider>)")
    print(f"hookfleet flower   http://127.0.0.1:{settings.flower_port}")
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
        env=env,
    )
    manager.add_process(
        "worker", f"{celery} worker -Q {','.join(QUEUES)} -c 2 --loglevel INFO", env=env
    )
    manager.add_process(
        "beat", f"{celery} beat -s {STATE_DIR}/celerybeat-schedule --loglevel INFO", env=env
    )
    manager.add_process(
        "flower",
        f"{celery} flower --address=127.0.0.1 --port={settings.flower_port} "
        f"--persistent=True --db={STATE_DIR}/flower.db --max_tasks=10000",
        env=env,
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
