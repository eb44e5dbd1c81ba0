"""`reserves replay` as an operator runs it: on a terminal and in a log, one projection or all."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg

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


def test_a_replay_already_running_stops_the_command(core: Core, database_url: str,
                                                    tmp_path: Path) -> None:
    _workload(core)
    with psycopg.connect(database_url, autocommit=True) as running:
        running.execute("SELECT pg_advisory_lock(7412002, 1)")  # the 'orders' replay's lock

        done = _replay(database_url=database_url, var=tmp_path, terminal=False)

    assert done.returncode == 3
    assert "replay of projection 'orders' is already running" in done.stderr
