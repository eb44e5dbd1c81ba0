"""A full replay rebuilds exactly the views that incremental projection built."""

from __future__ import annotations

from typing import Any

from projections.projector import READ_MODEL_TABLES
from services.runtime import Core
from tests.workload import Workload


def _dump(core: Core) -> dict[str, list[tuple[Any, ...]]]:
    with core.pool.connection() as conn:
        return {
            table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in READ_MODEL_TABLES
        }


def _catch_up(core: Core, limit: int = 500) -> None:
    while core.projector.run_once(limit):
        pass


def test_replay_rebuilds_views_equal_to_incremental_ones(core: Core) -> None:
    work = Workload(core, seed=20201)
    for i in range(400):
        work.step()
        if i % 37 == 0:
            _catch_up(core, limit=7)  # small, uneven pages: page edges must not matter
    _catch_up(core)
    incremental = _dump(core)
    assert sum(v for k, v in work.counts.items() if k.endswith(":ok")) > 200, work.counts
    assert work.counts.get("give:ok", 0) > 10, work.counts
    assert work.counts.get("expire:ok", 0) + work.counts.get("decline:ok", 0) > 3, work.counts
    assert len(incremental["rm_inbox"]) > 10

    reached = core.projector.replay()

    assert reached == core.store.recorder.max_notification_id()
    assert _dump(core) == incremental


def test_views_keep_stock_arithmetic_after_a_workload(core: Core) -> None:
    work = Workload(core, seed=7)
    for _ in range(300):
        work.step()
    _catch_up(core)
    with core.pool.connection() as conn:
        mismatched = conn.execute(
            "SELECT s.warehouse, s.sku, s.reserved, COALESCE(SUM(r.quantity), 0) "
            "FROM rm_stock s LEFT JOIN rm_reserves r USING (warehouse, sku) "
            "GROUP BY s.warehouse, s.sku, s.reserved "
            "HAVING s.reserved <> COALESCE(SUM(r.quantity), 0)").fetchall()
        negative = conn.execute(
            "SELECT count(*) FROM rm_order_lines WHERE reserved < 0 OR reserved > ordered"
        ).fetchone()
    assert mismatched == []
    assert negative == (0,)
