"""One provider sandbox process for the outbound-client tests, reset before each test that asks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.sandbox import SandboxServer


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path_factory.mktemp("sandbox")) as server:
        yield server


@pytest.fixture
def fresh_sandbox(sandbox: SandboxServer) -> SandboxServer:
    """Faults, recorded calls and rate limits cleared (seeded provider state stays, as it would)."""
    sandbox.reset()
    return sandbox
