"""The sandbox in process, on a clock the test moves (rate limits refill only when it says so)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from workers.sandbox.server import SandboxState, create_sandbox_app


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(clock: FakeClock) -> Iterator[TestClient]:
    app = create_sandbox_app()
    app.state.sandbox = SandboxState(clock=clock)
    with TestClient(app) as test_client:
        yield test_client
