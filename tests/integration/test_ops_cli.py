"""`reserves replay` as an operator runs it: on a terminal and in a log, one projection or all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
from eventsourcing.utils import resolve_topic

from projections.projector import PROJECTIONS, READ_MODEL_TABLES
from services.runtime import Core
from tests.support import ERP_TOKEN, TOKENS
from tests.workload import Workload


def _replay(*args: str, database_url: str, var: Path, terminal: bool
            ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "RESERVES_VAR_DIR": str(var),
           "RESERVES_API_TOKENS": ",".join(f"{m}={t}" for t, m in TOKENS.items()),
           "RESERVES_ERP_TOKENS": ERP_TOKEN, "TTY_COMPATIBLE": "1" if terminal else "0",
           "COLUMNS": "160"}
    env.pop("FORCE_COLOR", None)
    return subprocess.run([sys.executable, "-m", "services.cli", "replay", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def _workload(core: Core) -> int:
    work = Workload(core, seed=99)
    for _ in range(120):
        work.step()
    while core.projector.run_once():
        pass
    return core.store.recorder.max_notification_id() or 0


def test_replay_on_a_terminal_shows_a_progress_bar_and_a_summary(
        core: Core, database_url: str, tmp_path: Path) -> None:
    head = _workload(core)

    done = _replay("--page", "50", database_url=database_url, var=tmp_path, terminal=True)

    assert done.returncode == 0, done.stderr
    assert "\x1b[" in done.stderr  # drawn and redrawn in place
    shown = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", done.stderr)
    assert "replaying orders+requests" in shown
    assert f"position {head}/{head}" in shown
    assert "events/s" in shown and "ETA" in shown
    assert f"replay done: {head} events into orders, requests" in shown
    assert "rebuilt tables" in shown and "rm_inbox" in shown


def test_replay_in_a_log_of_one_projection(core: Core, database_url: str,
                                           tmp_path: Path) -> None:
    head = _workload(core)

    done = _replay("--projection", "requests", database_url=database_url, var=tmp_path,
                   terminal=False)

    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stderr  # plain lines, no terminal control codes
    assert f"replay done: {head} events into requests" in done.stderr
    assert "rows: rm_requests=" in done.stderr and "rm_orders" not in done.stderr
    assert "one process per projection" not in done.stderr


def test_a_replay_already_running_stops_the_command(core: Core, database_url: str,
                                                    tmp_path: Path) -> None:
    _workload(core)
    with psycopg.connect(database_url, autocommit=True) as running:
        running.execute("SELECT pg_advisory_lock(7412002, 1)")  # the 'orders' replay's lock

        done = _replay(database_url=database_url, var=tmp_path, terminal=False)

    assert done.returncode == 3
    assert "replay of projection 'orders' is already running" in done.stderr


def _views(core: Core) -> dict[str, list[tuple[object, ...]]]:
    with core.pool.connection() as conn:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
                for table in READ_MODEL_TABLES}


def test_a_replay_of_every_projection_runs_one_process_each_and_equals_the_live_views(
        core: Core, database_url: str, tmp_path: Path) -> None:
    head = _workload(core)
    live = _views(core)
    with core.pool.connection() as conn:
        conn.execute("DELETE FROM rm_inbox")  # damaged views of both projections
        conn.execute("UPDATE rm_stock SET on_hand = -1")

    done = _replay("--page", "37", database_url=database_url, var=tmp_path, terminal=False)

    assert done.returncode == 0, done.stderr
    assert f"replay done: {head} events into orders, requests in " in done.stderr
    assert "one process per projection" in done.stderr
    assert "rows: rm_stock=" in done.stderr and "rm_inbox=" in done.stderr
    assert _views(core) == live
    assert core.projector.positions() == {name: head for name in PROJECTIONS}
    assert core.projector.run_once() == 0  # nothing left to apply, nothing applied twice

    again = _replay("--one-process", database_url=database_url, var=tmp_path, terminal=False)
    assert again.returncode == 0, again.stderr
    assert "one process per projection" not in again.stderr
    assert _views(core) == live


def _poison_a_request_event(database_url: str) -> int:
    """Stores an event of the 'requests' projection whose state is not JSON: its replay fails
    on it, the 'orders' replay skips it without decoding it. Returns its position."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT originator_id, originator_version, topic "
                            "FROM reserves_events ORDER BY notification_id").fetchall()
        originator, topic = next(
            (o, t) for o, _, t in rows
            if resolve_topic(t).__name__ in PROJECTIONS["requests"].events)
        last = max(v for o, v, _ in rows if o == originator)
        row = conn.execute(
            "INSERT INTO reserves_events (originator_id, originator_version, topic, state) "
            "VALUES (%s, %s, %s, %s) RETURNING notification_id",
            (originator, last + 1, topic, b"not json")).fetchone()
    assert row is not None
    return int(row[0])


def test_a_failing_projection_process_fails_the_command_and_keeps_the_views(
        core: Core, database_url: str, tmp_path: Path) -> None:
    _workload(core)
    live = _views(core)
    poison = _poison_a_request_event(database_url)

    done = _replay("--page", "25", database_url=database_url, var=tmp_path, terminal=False)

    assert done.returncode == 1, done.stderr
    assert "replay failed: the replay of 'requests' failed: " in done.stderr
    assert "replay done" not in done.stderr
    assert _views(core) == live  # 'requests' never switched; 'orders', if it did, is the same
    with psycopg.connect(database_url, autocommit=True) as conn:
        kept = conn.execute("SELECT position FROM rm_replay_requests.rm_tracking").fetchone()
        assert kept is not None and kept[0] < poison  # resumable from before the poison
        conn.execute("DELETE FROM reserves_events WHERE notification_id = %s", (poison,))

    resumed = _replay(database_url=database_url, var=tmp_path, terminal=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from {" in resumed.stderr and "'requests'" in resumed.stderr
    assert _views(core) == live


def test_ctrl_c_stops_every_projection_process_and_the_next_replay_resumes(
        core: Core, database_url: str, tmp_path: Path) -> None:
    head = _workload(core)
    live = _views(core)
    env = {**os.environ, "DATABASE_URL": database_url, "RESERVES_VAR_DIR": str(tmp_path),
           "RESERVES_API_TOKENS": ",".join(f"{m}={t}" for t, m in TOKENS.items()),
           "RESERVES_ERP_TOKENS": ERP_TOKEN, "TTY_COMPATIBLE": "0"}
    with psycopg.connect(database_url) as holder:
        # the live projector's hold on its positions: both switches wait on it
        holder.execute("SELECT * FROM rm_tracking WHERE name = ANY(%s) FOR UPDATE",
                       (list(PROJECTIONS),))
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "replay"], env=env,
                                stderr=subprocess.PIPE, text=True)
        try:
            with psycopg.connect(database_url, autocommit=True) as watch:
                waiting = 0
                while waiting < len(PROJECTIONS) and proc.poll() is None:
                    row = watch.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE '%%FROM rm_tracking%%FOR UPDATE'").fetchone()
                    waiting = int(row[0]) if row else 0
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        holder.rollback()

    assert proc.returncode == 130, stderr
    assert "replay stopped" in stderr and "replay done" not in stderr
    assert "'orders' was stopped" in stderr and "'requests' was stopped" in stderr
    assert _views(core) == live
    resumed = _replay(database_url=database_url, var=tmp_path, terminal=False)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {{'orders': {head}, 'requests': {head}}}" in resumed.stderr
    assert _views(core) == live
