"""The load generator's own pauses must not be measured as the server's latency."""

from __future__ import annotations

import gc

from tests.bench.loadgen import no_collector_pauses


def test_the_generator_does_not_collect_garbage_while_it_times() -> None:
    assert gc.isenabled()

    with no_collector_pauses():
        assert not gc.isenabled()

    assert gc.isenabled()


def test_the_collector_comes_back_when_the_run_fails() -> None:
    try:
        with no_collector_pauses():
            raise ConnectionError("server went away")
    except ConnectionError:
        pass

    assert gc.isenabled()
