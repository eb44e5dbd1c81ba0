"""Every pool of the service opens its sessions without parallel plans or JIT compilation,
eventsourcing's own pool (which connects from parts of the URL) included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from psycopg.rows import tuple_row

from services.eventstore import apply_session_options
from services.runtime import Core
from tests.support import make_settings

SHOW = ("SELECT current_setting('jit') AS jit, "
        "current_setting('max_parallel_workers_per_gather') AS workers, "
        "current_setting('work_mem') AS work_mem")


def _settings(conn: Any) -> tuple[str, str, str]:
    jit, workers, work_mem = conn.cursor(row_factory=tuple_row).execute(SHOW).fetchone()
    return jit, workers, work_mem


def test_the_stores_and_the_views_sessions_plan_without_workers_or_jit(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGOPTIONS", "-c work_mem=8MB")  # the operator's own, kept
    apply_session_options()
    core = Core(make_settings(tmp_path, database_url), database_url)
    try:
        with core.store.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            events = _settings(conn)
        with core.pool.connection() as conn:
            views = _settings(conn)
    finally:
        core.close()
    assert events == ("off", "0", "8MB")
    assert views == ("off", "0", "8MB")


def test_an_operators_setting_wins_over_the_services(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGOPTIONS", "-c max_parallel_workers_per_gather=2")
    apply_session_options()
    core = Core(make_settings(tmp_path, database_url), database_url)
    try:
        with core.pool.connection() as conn:
            jit, workers, _ = _settings(conn)
    finally:
        core.close()
    assert (jit, workers) == ("off", "2")
