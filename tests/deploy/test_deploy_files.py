"""deploy/: every queue has a worker, the jobs a worker of their own; Flower never runs open and
keeps a bounded, persistent history; every container that serves metrics empties its multiprocess
directory at start."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from workers.queues import JOB_QUEUE, QUEUES

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def _kubernetes(name: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()))


def _flag(command: list[str], name: str) -> str | None:
    for argument in command:
        if argument.startswith(f"--{name}="):
            return argument.split("=", 1)[1]
    return None


def test_compose_refuses_to_start_flower_without_basic_auth() -> None:
    flower = _compose()["services"]["flower"]

    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


def test_compose_flower_keeps_a_bounded_history_on_a_volume_with_names_and_queues() -> None:
    flower = _compose()["services"]["flower"]
    command = flower["command"]

    assert _flag(command, "persistent") == "True"
    assert _flag(command, "max_tasks") == "10000"
    database = _flag(command, "db")
    assert database is not None
    assert any(volume.endswith(str(Path(database).parent)) for volume in flower["volumes"])
    columns = flower["environment"]["FLOWER_TASKS_COLUMNS"].split(",")
    assert {"name", "routing_key"} <= set(columns)


def test_kubernetes_flower_takes_its_credentials_from_a_required_secret() -> None:
    deployment = next(d for d in _kubernetes("flower.yaml") if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]

    env = {item["name"]: item for item in container["env"]}
    reference = env["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]
    assert reference["optional"] is False
    assert _flag(container["args"], "persistent") == "True"
    assert _flag(container["args"], "max_tasks") == "10000"


def _consumed(command: list[str]) -> list[str] | None:
    """The queues a `celery worker -Q a,b` command consumes; None for other commands."""
    if "worker" not in command:
        return None
    return command[command.index("-Q") + 1].split(",")


def test_every_queue_has_a_worker_and_the_jobs_queue_one_of_its_own() -> None:
    compose = [_consumed(service.get("command", [])) for service in _compose()["services"].values()]
    kubernetes = [
        _consumed(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
        for name in ("worker.yaml", "jobs-worker.yaml")
        for deployment in _kubernetes(name)
    ]
    for workers in (compose, kubernetes):
        queue_sets = [queues for queues in workers if queues is not None]
        assert sorted(q for queues in queue_sets for q in queues) == sorted(QUEUES)
        assert [JOB_QUEUE] in queue_sets


def test_metrics_serving_kubernetes_pods_mount_the_multiprocess_directory() -> None:
    config = _kubernetes("config.yaml")[0]["data"]
    for name in ("gateway.yaml", "worker.yaml", "jobs-worker.yaml"):
        deployment = next(d for d in _kubernetes(name) if d["kind"] == "Deployment")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert config["PROMETHEUS_MULTIPROC_DIR"] in mounts, name
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"


def test_entrypoint_empties_the_multiprocess_directory_then_runs_the_command(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_4242.db").write_bytes(b"stale")
    (directory / "keep.txt").write_text("not ours")

    ran = subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh"), "ls", str(directory)],
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )

    assert ran.stdout.split() == ["keep.txt"]
