"""The ``reserves`` console script's operator commands, run as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from handlers.wire import parse_erp_body
from services.runtime import Core
from tests.support import ERP_TOKEN, TOKENS, seed_facts, uid


def _run(*args: str, database_url: str, kafka: str | None = None,
         var: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "RESERVES_VAR_DIR": str(var),
           "RESERVES_API_TOKENS": ",".join(f"{m}={t}" for t, m in TOKENS.items()),
           "RESERVES_ERP_TOKENS": ERP_TOKEN}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    if kafka:
        env["KAFKA_BOOTSTRAP_SERVERS"] = kafka
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_replay_command_rebuilds_the_views_and_reports_a_summary(
        core: Core, database_url: str, tmp_path: Path) -> None:
    owner, requester = uid("o-"), uid("r-")
    core.erp.ingest(parse_erp_body(seed_facts(owner, requester)))
    while core.projector.run_once():
        pass
    before = core.views.order(requester)
    with core.pool.connection() as conn:
        conn.execute("DELETE FROM rm_orders")  # a damaged view

    done = _run("replay", database_url=database_url, var=tmp_path)

    assert done.returncode == 0, done.stderr
    total = core.store.recorder.max_notification_id()
    assert f"replay done: {total} events" in done.stderr
    assert core.views.order(requester) == before


def test_republish_command_reemits_stored_events(core: Core, database_url: str, tmp_path: Path,
                                                 kafka_bootstrap: str) -> None:
    core.erp.ingest(parse_erp_body(seed_facts(uid("o-"), uid("r-"))))
    total = core.store.recorder.max_notification_id()
    assert total is not None and total > 3

    done = _run("republish", "--from", "2", "--to", "3", database_url=database_url,
                kafka=kafka_bootstrap, var=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "republished 2 events" in done.stderr


def test_republish_without_a_broker_explains_what_it_needs(core: Core, database_url: str,
                                                           tmp_path: Path) -> None:
    done = _run("republish", database_url=database_url, var=tmp_path)
    assert done.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in done.stderr


def test_a_malformed_setting_stops_the_command_with_its_name(tmp_path: Path) -> None:
    env = {**os.environ, "RESERVES_VAR_DIR": str(tmp_path), "RESERVE_REQUEST_TTL": "soon"}
    done = subprocess.run([sys.executable, "-m", "services.cli", "replay"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "RESERVE_REQUEST_TTL" in done.stderr
