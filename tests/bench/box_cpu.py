"""Where a run's CPU went on the whole box: the server, its PostgreSQL backends, Redis, the load
generator and the rest, from /proc and getrusage.

The server's own CPU hides what a request costs the box: hookfleet's inbox INSERT and relay mark
run in PostgreSQL and the load generator shares the same cores, so a bar stated as a share of the
bare app's rate is a budget of the box's CPU per request, and the split shows what spends it.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import psycopg

TICKS = os.sysconf("SC_CLK_TCK")
# /proc/stat's first line: user nice system idle iowait irq softirq steal guest guest_nice.
# Busy is what ran here; idle, iowait and steal (another tenant's time) are not, and guest time is
# already inside user.
_BUSY_FIELDS = (0, 1, 2, 5, 6)


def proc_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def processes_cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """User and system CPU of each of these processes that is still there."""
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return used


def cpu_seconds(pid: int) -> float:
    """CPU of `pid` and its descendants (uvicorn's workers, Celery's prefork children)."""
    return sum(processes_cpu_seconds(proc_tree(pid)).values())


def box_busy_seconds() -> float:
    """CPU seconds every core of this machine has spent busy since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return sum(int(fields[i]) for i in _BUSY_FIELDS) / TICKS


def _own_and_children_seconds() -> float:
    """This process and its reaped children (wrk) together: the load generator's CPU."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def database_backends(database_url: str) -> list[int]:
    """The PostgreSQL backends connected to this database now (the servers' pools and kept
    connections; they live across a run), not the one asking."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(pid) for (pid,) in rows]


@contextmanager
def cpu_split(groups: Mapping[str, Callable[[], list[int]]]) -> Iterator[dict[str, float]]:
    """CPU seconds spent inside the block by each group of processes (listed as it begins and as
    it ends: a process started inside it, such as a new database connection's backend, counts
    whole), by the load generator (this process and the children it reaped), by the box as a whole
    and by the rest of the box; the dict is filled when the block ends."""
    split: dict[str, float] = {}
    before = {name: processes_cpu_seconds(members()) for name, members in groups.items()}
    load_before, box_before = _own_and_children_seconds(), box_busy_seconds()
    yield split
    box = box_busy_seconds() - box_before
    for name, members in groups.items():
        after = processes_cpu_seconds({*before[name], *members()})
        split[name] = sum(used - before[name].get(pid, 0.0) for pid, used in after.items())
    split["load generator"] = _own_and_children_seconds() - load_before
    split["other"] = max(0.0, box - sum(split.values()))
    split["box"] = box
