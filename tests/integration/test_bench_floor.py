"""The benchmark's floor app (bench/floor.py) stores one row per answered request, in each mode
that writes, answers every request of a short closed-loop run, and has its CPU measured."""

from __future__ import annotations

import psycopg
import pytest

from bench.floor import MODES, floor

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", MODES)
def test_every_answered_request_of_the_floor_is_one_stored_row(database_url: str,
                                                               mode: str) -> None:
    run = floor(database_url, mode, concurrency=8, seconds=0.5, warmup=0)
    assert run.failed == 0
    assert run.ok > 0 and len(run.latencies) == run.ok
    assert run.cpu_ms["app"] > 0 and run.cpu_ms["harness"] > 0  # CPU per request, measured
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM bench_floor").fetchone()
    assert row is not None
    # the group writer answers a request only after the commit that holds its row
    assert row[0] == (0 if mode == "none" else run.ok)
