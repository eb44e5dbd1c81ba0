"""The benchmark's CPU meter (bench/cpu.py): a process tree's CPU, exited children included."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from bench.cpu import CpuMeter, ms_per, postmaster_pid, tree_cpu_seconds

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def test_an_exited_child_still_counts_under_its_parent() -> None:
    before = tree_cpu_seconds(os.getpid())
    subprocess.run([sys.executable, "-c", BURN], check=True)
    assert tree_cpu_seconds(os.getpid()) - before >= 0.25


def test_a_live_child_counts_too() -> None:
    child = subprocess.Popen([sys.executable, "-c", BURN + "import sys; sys.stdin.read()\n"],
                             stdin=subprocess.PIPE)
    try:
        proc = psutil.Process(child.pid)
        deadline = time.monotonic() + 30
        while sum(proc.cpu_times()[:2]) < 0.25:  # until it has burnt its share
            assert time.monotonic() < deadline, "the child never ran"
            time.sleep(0.01)
        meter = CpuMeter({"child-parent": os.getpid(), "absent": None})
        sample = meter.sample()
        assert set(sample) == {"child-parent", "harness"}
        assert sample["child-parent"] - sample["harness"] >= 0.25  # the child's, not ours
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()


def test_ms_per_unit_by_process() -> None:
    assert ms_per({"a": 1.0, "b": 2.0}, {"a": 1.5, "b": 2.0, "c": 9.0}, 250) == {
        "a": 2.0, "b": 0.0}
    assert ms_per({"a": 1.0}, {"a": 2.0}, 0) == {}


def test_an_unreachable_server_has_no_postmaster() -> None:
    assert postmaster_pid("postgresql://nobody@127.0.0.1:1/none") is None
