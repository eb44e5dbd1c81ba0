"""Starting a process beside running ones: schema creation must not wait on their work."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg

from services.runtime import Core
from tests.support import make_settings


def test_a_process_starts_while_a_projector_holds_its_tracking_rows(
        core: Core, database_url: str, tmp_path: Path) -> None:
    """A role restarting beside a running projector deadlocked with it: its schema creation
    held the DDL's table locks while it waited on a tracking row the projector was updating."""
    started: list[Core] = []
    with psycopg.connect(database_url) as busy:  # a projector's open page transaction
        busy.execute("SELECT name FROM rm_tracking WHERE name = ANY(%s) FOR UPDATE",
                     (["orders", "requests", "relay"],))
        busy.execute("UPDATE rm_tracking SET position = position")
        worker = threading.Thread(
            target=lambda: started.append(Core(make_settings(tmp_path, database_url),
                                               database_url)), daemon=True)
        worker.start()
        worker.join(timeout=30)
        assert started, "a new process waited on the tracking rows a running projector holds"
        busy.rollback()
    started[0].close()
