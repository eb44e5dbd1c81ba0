"""The benchmark's CPU meter finds the PostgreSQL server it runs against (bench/cpu.py)."""

from __future__ import annotations

import psutil
import pytest

from bench.cpu import postmaster_pid, tree_cpu_seconds

pytestmark = pytest.mark.integration


def test_the_postmaster_of_the_test_database_is_found(database_url: str) -> None:
    pid = postmaster_pid(database_url)
    assert pid is not None
    assert "postgres" in psutil.Process(pid).name()
    assert tree_cpu_seconds(pid) > 0  # its backends' work, this test's connection's included
