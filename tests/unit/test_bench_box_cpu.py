"""The bench's CPU split: each group is charged what its processes used inside the run, a process
started during the run counts whole, and the box's total holds them all."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.bench.box_cpu import cpu_split

# /proc counts in clock ticks (10 ms) and truncates user and system time apart: up to two ticks
TICK = 0.02

# Burns `seconds` of CPU, then says so: /proc's truncated figure can sit just under the burn for
# good, so the tests wait for the word, never poll /proc for the total.
BURN = (
    "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"
    "print('burnt', flush=True)\n"
)


@pytest.fixture
def burner() -> Iterator[subprocess.Popen[bytes]]:
    """A process that, once started, burns 0.4 s of CPU when told to (a line on stdin), then waits
    to be reaped."""
    script = "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"
    script += BURN.format(seconds=0.4) + "sys.stdin.read()\n"
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"  # its start-up is behind it
    yield process
    process.kill()
    process.wait()


def test_a_group_is_charged_what_its_processes_used_inside_the_block(
    burner: subprocess.Popen[bytes],
) -> None:
    assert burner.stdin is not None
    with cpu_split({"burner": lambda: [burner.pid], "nobody": list}) as split:
        burner.stdin.write(b"go\n")
        burner.stdin.flush()
        assert burner.stdout is not None
        assert burner.stdout.readline() == b"burnt\n"

    assert 0.4 - TICK <= split["burner"] <= 0.6
    assert split["nobody"] == 0
    assert split["box"] >= split["burner"] - TICK
    assert split["other"] >= 0


def test_a_process_started_inside_the_block_counts_whole() -> None:
    started: list[int] = []
    with cpu_split({"late": lambda: list(started)}) as split:
        process = subprocess.Popen(
            [sys.executable, "-c", BURN.format(seconds=0.3) + "input()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        started.append(process.pid)
        assert process.stdout is not None
        assert process.stdout.readline() == b"burnt\n"
    process.kill()
    process.wait()

    assert split["late"] >= 0.3 - TICK  # the burn and the interpreter's start-up


def test_the_load_generator_is_this_process_and_the_children_it_reaped() -> None:
    with cpu_split({}) as split:
        subprocess.run(
            [sys.executable, "-c", BURN.format(seconds=0.3)], check=True, stdout=subprocess.DEVNULL
        )

    assert split["load generator"] >= 0.3 - TICK
    assert split["box"] >= 0.3 - TICK
