"""deploy/monitoring: the alert rules pass promtool and fire at the runbook's thresholds, and every
expression in them and in the Grafana dashboard parses and names only metrics hookfleet exports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml  # type: ignore[import-untyped]
from celery import Celery
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

import webhooks_gateway.metrics as gateway_metrics
import workers.metrics as worker_metrics
from schemas.db import make_engine
from schemas.migrate import upgrade
from tests.conftest import make_settings
from workers.queues import QUEUES
from workers.scrape_collectors import (
    DeadLetterCollector,
    InboxCollector,
    QueueLengthCollector,
    WorkerUpCollector,
)

ROOT = Path(__file__).parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "alerts.yml"
RULE_TESTS = MONITORING / "alerts_test.yml"
DASHBOARD = MONITORING / "grafana" / "hookfleet.json"
# Grafana's own variables, given a value so the expression is plain PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}
RUNBOOK_ALERTS = {
    "HookfleetWebhookSuccessRateLow",
    "HookfleetWebhookSuccessRateCritical",
    "HookfleetJobFailureRateHigh",
    "HookfleetJobFailureRateCritical",
    "HookfleetDeadLettersPiling",
    "HookfleetDeadLettersCritical",
    "HookfleetNoWorkerUp",
    "HookfleetDeadLetterOlderThanADay",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    """promtool, installed from Debian's `prometheus` package when we are root and it is missing."""
    found = shutil.which("promtool")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=170)
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]
        subprocess.run(install, check=True, env=env, timeout=170)
        found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed and cannot be (not root): apt-get install prometheus"
        )
    return found


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard_expressions() -> Iterator[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expression = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expression = expression.replace(variable, value)
            yield f"dashboard panel {panel['title']!r}", expression


def _expressions() -> list[tuple[str, str]]:
    rules = [(f"rule {r.get('alert') or r['record']}", str(r["expr"])) for r in _rules()]
    return rules + list(_dashboard_expressions())


def _metric_names(expression: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expression), pre_visit=visit)
    return names


def _exported_names(tmp_path: Path) -> set[str]:
    """Every sample name the gateway's and the workers' /metrics can carry, taken from the code."""
    families: list[tuple[str, str]] = []
    for module in (worker_metrics, gateway_metrics):
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                families += [(family.name, family.type) for family in value.describe()]
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'names.db'}")
    upgrade(settings)
    engine = make_engine(settings)
    registry = CollectorRegistry(auto_describe=False)
    for collector in (
        InboxCollector(engine),
        DeadLetterCollector(engine),
        QueueLengthCollector(Celery("names", broker="memory://"), QUEUES),
        WorkerUpCollector("host"),
    ):
        registry.register(collector)
    families += [(family.name, family.type) for family in registry.collect()]
    engine.dispose()
    return {name + suffix for name, kind in families for suffix in SUFFIXES[kind]}


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alerts_fire_at_the_runbook_thresholds_and_not_below_them(promtool: str) -> None:
    tested = subprocess.run(
        [promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=60
    )

    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_runbook_alert_is_defined_with_a_severity() -> None:
    alerts = {rule["alert"]: rule for rule in _rules() if "alert" in rule}

    assert alerts.keys() >= RUNBOOK_ALERTS
    assert {alerts[name]["labels"]["severity"] for name in RUNBOOK_ALERTS} == {
        "warning",
        "critical",
    }


@pytest.mark.parametrize(("where", "expression"), _expressions())
def test_expression_parses_as_promql(where: str, expression: str) -> None:
    assert _metric_names(expression), f"{where}: {expression} selects no metric"


def test_rules_and_dashboard_name_only_metrics_the_code_exports(tmp_path: Path) -> None:
    exported = _exported_names(tmp_path)
    recorded = {rule["record"] for rule in _rules() if "record" in rule}

    unknown = {
        f"{where}: {name}"
        for where, expression in _expressions()
        for name in _metric_names(expression)
        if name not in exported | recorded
    }

    assert not unknown, sorted(unknown)


def test_the_name_check_rejects_a_metric_nobody_exports(tmp_path: Path) -> None:
    exported = _exported_names(tmp_path)

    assert "celery_task_succeeded_total" in exported
    assert _metric_names("sum(rate(celery_tasks_total[5m]))") - exported == {"celery_tasks_total"}


def test_a_malformed_expression_is_refused_by_the_parser() -> None:
    with pytest.raises(ValueError, match="unclosed left parenthesis"):
        promql_parser.parse("sum(rate(webhooks_received_total[5m])")
