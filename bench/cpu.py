"""CPU time by process during a run, per give: the service, PostgreSQL, the broker and the
harness itself.

Throughput on this 2-core machine swings by 5–10 % between runs minutes apart (the raw commit
baseline does too), which hides a change worth 3 %; the CPU a give costs each process moves
much less, and it says where the two cores go (docs/performance.md, "CPU per give").

A process's CPU is its own (user + system) plus that of its children, live ones read directly
and exited ones from what their parent reaped: a PostgreSQL backend that ends between two
samples still counts, under the postmaster.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import psutil
import psycopg


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and all its descendants, exited ones included (reaped)."""
    root = psutil.Process(pid)
    times = root.cpu_times()
    total = float(times.user + times.system + times.children_user + times.children_system)
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # exited meanwhile: its parent reaps it
            t = child.cpu_times()
            total += t.user + t.system
    return total


def postmaster_pid(database_url: str) -> int | None:
    """The PostgreSQL server's main process, from ``postmaster.pid`` in its data directory;
    None when that cannot be read (a server on another machine, or not ours to read)."""
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        first = (Path(str(row[0])) / "postmaster.pid").read_text().splitlines()[0] if row else ""
        pid = int(first)
    except (psycopg.Error, OSError, ValueError, IndexError):
        return None
    return pid if psutil.pid_exists(pid) else None


class CpuMeter:
    """Samples the CPU seconds of the named processes (each with its descendants); the
    harness is this process alone (a profiler it started is not counted)."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}

    def sample(self) -> dict[str, float]:
        seconds: dict[str, float] = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(psutil.Error):
                seconds[name] = tree_cpu_seconds(pid)
        times = psutil.Process(os.getpid()).cpu_times()
        seconds["harness"] = float(times.user + times.system)
        return seconds


def ms_per(before: Mapping[str, float], after: Mapping[str, float], count: int
           ) -> dict[str, float]:
    """Milliseconds of CPU per unit (``count`` of them) by process, between two samples."""
    if count <= 0:
        return {}
    return {name: (after[name] - before[name]) * 1000 / count
            for name in after if name in before}


def describe(per_give: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {ms:.2f}" for name, ms in per_give.items())
