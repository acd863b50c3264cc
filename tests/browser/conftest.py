"""Browser tests: headless Chromium (Debian's `chromium`, driven by Playwright) against the real
fleet: the gateway, a Celery worker and the provider sandbox as processes, PostgreSQL and Redis.

Chromium is installed when missing (as root: `apt-get update` once, then `apt-get install -y
chromium`); only where that cannot be done are these tests skipped, with the reason. Each test gets
a browser of its own with a fresh profile, and saves screenshots to HOOKFLEET_ARTIFACTS (default
`.artifacts/browser/`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright

from tests.conftest import ROOT
from tests.integration.conftest import Fleet, running_fleet, start_redis
from tests.support.processes import Service, hookfleet, redis_url_of
from tests.support.sandbox import SandboxServer

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SESSION_SECRET = "browser-tests-session-secret-0123456789"
STEP_TIMEOUT_MS = 20_000


def _install_chromium() -> str | None:
    """Install Debian's chromium; the reason it could not be, or None when it is there."""
    if CHROMIUM.exists():
        return None
    if shutil.which("apt-get") is None:
        return "Chromium is not installed and this system has no apt-get to install it"
    if os.geteuid() != 0:
        return "Chromium is not installed and installing it needs root (apt-get install chromium)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"`{' '.join(argv)}` failed: {done.stderr.strip()[-500:]}"
    return None if CHROMIUM.exists() else "apt-get installed chromium, but not at /usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium() -> Path:
    reason = _install_chromium()
    if reason is not None:
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def playwright(chromium: Path) -> Iterator[Playwright]:
    """Module-scoped: Playwright's sync API keeps an asyncio loop running in this thread, which
    would break every later test that calls `asyncio.run`."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def artifacts() -> Path:
    directory = Path(os.environ.get("HOOKFLEET_ARTIFACTS") or ROOT / ".artifacts" / "browser")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class Browser:
    """One test's Chromium (a fresh profile), and its screenshots named after the test."""

    def __init__(self, context: BrowserContext, artifacts: Path, test_name: str) -> None:
        self.context = context
        self.page: Page = context.pages[0] if context.pages else context.new_page()
        self.page.set_default_timeout(STEP_TIMEOUT_MS)
        self.artifacts = artifacts
        self.prefix = re.sub(r"[^A-Za-z0-9_.-]", "_", test_name)
        self.shots: list[Path] = []
        for stale in artifacts.glob(f"{self.prefix}-*.png"):  # from an earlier run of this test
            stale.unlink()

    def screenshot(self, step: str) -> Path:
        path = self.artifacts / f"{self.prefix}-{len(self.shots) + 1:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        return path


@pytest.fixture
def browser(
    playwright: Playwright,
    chromium: Path,
    artifacts: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Browser]:
    context = playwright.chromium.launch_persistent_context(
        user_data_dir=str(tmp_path / "chromium-profile"),
        executable_path=str(chromium),
        headless=True,
        args=CHROMIUM_FLAGS,
        viewport={"width": 1366, "height": 768},  # a laptop screen
    )
    opened = Browser(context, artifacts, request.node.name)
    try:
        yield opened
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            opened.screenshot("failed")
        context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep the call's report on the item, so a failed test leaves a screenshot of where it was."""
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


# --- the fleet --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-fleet")


@pytest.fixture(scope="module")
def sandbox(browser_dir: Path) -> Iterator[SandboxServer]:
    with SandboxServer(browser_dir) as server:
        yield server


@pytest.fixture(scope="module")
def fleet_redis(browser_dir: Path) -> Iterator[Service]:
    service = start_redis(browser_dir)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def fleet(
    chromium: Path,
    database_url: str,
    fleet_redis: Service,
    browser_dir: Path,
    sandbox: SandboxServer,
) -> Iterator[Fleet]:
    """Gateway and worker processes (no beat: nothing here is scheduled); started only once
    Chromium is known to be there, so a skip costs no processes."""
    with running_fleet(
        database_url,
        redis_url_of(fleet_redis),
        browser_dir / "fleet",
        sandbox,
        overrides={"ADMIN_SESSION_SECRET": SESSION_SECRET},
    ) as running:
        yield running


@dataclass(frozen=True)
class OperatorKey:
    name: str
    key: str


def create_key(fleet: Fleet, scopes: str) -> OperatorKey:
    """A key made as an operator makes one: `hookfleet keys create`."""
    name = f"browser-{os.getpid()}-{int(datetime.now().timestamp() * 1000)}"
    created = hookfleet(
        "keys",
        "create",
        "--name",
        name,
        "--scopes",
        scopes,
        "--rate-per-minute",
        "600",
        env=fleet.env,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    key = next(line for line in created.stdout.splitlines() if line.startswith("hf_"))
    return OperatorKey(name=name, key=key)
