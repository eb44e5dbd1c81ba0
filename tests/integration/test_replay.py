"""Replays rebuild exactly the views that incremental projection built, beside the live ones."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from projections.projector import PROJECTIONS, READ_MODEL_TABLES, create_schema
from projections.replay import Replay, ReplayError, shadow_schema
from services.runtime import Core
from tests.workload import Workload


def _dump(core: Core, tables: tuple[str, ...] = READ_MODEL_TABLES
          ) -> dict[str, list[tuple[Any, ...]]]:
    with core.pool.connection() as conn:
        return {
            table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in tables
        }


def _catch_up(core: Core, limit: int = 500) -> None:
    while core.projector.run_once(limit):
        pass


def _workload(core: Core, steps: int, seed: int) -> Workload:
    work = Workload(core, seed=seed)
    for i in range(steps):
        work.step()
        if i % 37 == 0:
            _catch_up(core, limit=7)  # small, uneven pages: page edges must not matter
    _catch_up(core)
    return work


def _schema_exists(core: Core, name: str) -> bool:
    with core.pool.connection() as conn:
        row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                           (name,)).fetchone()
    return bool(row == (1,))


def test_replay_rebuilds_views_equal_to_incremental_ones(core: Core) -> None:
    work = _workload(core, 400, seed=20201)
    incremental = _dump(core)
    assert sum(v for k, v in work.counts.items() if k.endswith(":ok")) > 200, work.counts
    assert work.counts.get("give:ok", 0) > 10, work.counts
    assert work.counts.get("expire:ok", 0) + work.counts.get("decline:ok", 0) > 3, work.counts
    assert len(incremental["rm_inbox"]) > 10

    seen: list[tuple[int, int]] = []
    report = Replay(core.store, core.pool, list(PROJECTIONS), page=97).run(
        progress=lambda position, head, read: seen.append((position, head)))

    head = core.store.recorder.max_notification_id()
    assert report.position == head
    assert _dump(core) == incremental
    assert core.projector.positions() == {name: head for name in PROJECTIONS}
    assert report.rows["rm_inbox"] == len(incremental["rm_inbox"])
    assert len(seen) > 3 and seen[-1] == (head, head)
    assert [p for p, _ in seen] == sorted(p for p, _ in seen)
    assert not _schema_exists(core, shadow_schema("orders"))
    assert not _schema_exists(core, "rm_retired_orders")


def test_replay_equals_incremental_views_whatever_its_page_and_cache(core: Core) -> None:
    """A replay inserts the rows a page creates with COPY and updates the others; rows come
    from its cache or, once forgotten, from its shadow tables: the result is the same."""
    _workload(core, 250, seed=4242)
    incremental = _dump(core)
    for page, cache_rows in ((13, 1), (1, 3), (5000, 10_000)):
        Replay(core.store, core.pool, list(PROJECTIONS), page=page, cache_rows=cache_rows).run()
        assert _dump(core) == incremental, (page, cache_rows)


def test_an_interrupted_replay_of_one_projection_resumes_between_its_events(
        core: Core) -> None:
    """Replaying 'requests' alone skips the order events without decoding them: a page may
    end on skipped events, and the position kept is still where the next page starts."""
    _workload(core, 200, seed=6)
    incremental = _dump(core)

    class Stop(Exception):
        pass

    def stop(position: int, head: int, read: int) -> None:
        if read >= 60:
            raise Stop

    with pytest.raises(Stop):
        Replay(core.store, core.pool, ["requests"], page=7).run(progress=stop)
    report = Replay(core.store, core.pool, ["requests"], page=7).run()
    assert report.started_from["requests"] >= 60
    assert report.position == core.store.recorder.max_notification_id()
    assert _dump(core) == incremental


def test_replay_of_one_projection_leaves_the_other_alone(core: Core) -> None:
    _workload(core, 150, seed=11)
    before = _dump(core)
    with core.pool.connection() as conn:
        conn.execute("DELETE FROM rm_inbox")  # a damaged view of the 'requests' projection
        conn.execute("UPDATE rm_stock SET on_hand = -1")  # ... and one of 'orders'

    Replay(core.store, core.pool, ["requests"]).run()

    after = _dump(core)
    assert after["rm_inbox"] == before["rm_inbox"]
    assert after["rm_requests"] == before["rm_requests"]
    assert {row[2] for row in after["rm_stock"]} == {-1}  # not rebuilt: not asked for


def test_an_interrupted_replay_is_never_served_and_resumes(core: Core) -> None:
    _workload(core, 200, seed=5)
    incremental = _dump(core)

    class Stop(Exception):
        pass

    def stop_after_two(position: int, head: int, read: int) -> None:
        if read >= 100:
            raise Stop

    with pytest.raises(Stop):
        Replay(core.store, core.pool, list(PROJECTIONS), page=50).run(progress=stop_after_two)
    assert _dump(core) == incremental  # the live tables are untouched
    assert _schema_exists(core, shadow_schema("orders"))

    report = Replay(core.store, core.pool, list(PROJECTIONS), page=50).run()

    assert report.started_from == {"orders": 100, "requests": 100}
    assert report.events_read == (core.store.recorder.max_notification_id() or 0) - 100
    assert _dump(core) == incremental


def test_replay_from_a_position_it_cannot_start_at_is_refused(core: Core) -> None:
    _workload(core, 30, seed=3)
    with pytest.raises(ReplayError, match="not from 7"):
        Replay(core.store, core.pool, ["orders"]).run(from_position=7)


def test_a_second_replay_of_the_same_projection_is_refused(core: Core) -> None:
    _workload(core, 30, seed=4)
    with psycopg.connect(core.database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(7412002, 1)")  # what a running replay holds
        with pytest.raises(ReplayError, match=r"'orders' is already running .*backend pid"):
            Replay(core.store, core.pool, ["orders"]).run()
        Replay(core.store, core.pool, ["requests"]).run()  # another projection may run


def test_switch_under_live_projection_and_readers(core: Core) -> None:
    work = _workload(core, 150, seed=8)
    known = work.orders[0]
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                order = core.views.order(known)
                assert order is not None and order["lines"], order
                core.views.inbox("ivanov")
                reads[0] += 1
            except BaseException as e:
                errors.append(e)
                return

    def live() -> None:
        while not stop.is_set():
            try:
                work.step()
                core.projector.run_once(50)
            except BaseException as e:
                errors.append(e)
                return

    threads = [threading.Thread(target=reader), threading.Thread(target=live)]
    for t in threads:
        t.start()
    try:
        report = Replay(core.store, core.pool, list(PROJECTIONS), page=40).run()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    assert reads[0] > 0
    _catch_up(core)
    after = _dump(core)
    assert report.position > 0
    Replay(core.store, core.pool, list(PROJECTIONS)).run()
    assert _dump(core) == after  # nothing applied twice or lost across the switch


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


def test_a_database_from_before_the_split_keeps_its_position(core: Core) -> None:
    _workload(core, 40, seed=2)
    head = core.store.recorder.max_notification_id()
    with core.pool.connection() as conn:
        conn.execute("DELETE FROM rm_tracking WHERE name = ANY(%s)", (list(PROJECTIONS),))
        conn.execute("INSERT INTO rm_tracking (name, position) VALUES ('views', %s)", (head,))
        create_schema(conn)
        names = conn.execute("SELECT name FROM rm_tracking ORDER BY name").fetchall()

    assert names == [("orders",), ("relay",), ("requests",)]
    assert core.projector.positions() == {"orders": head, "requests": head}
    assert core.projector.run_once() == 0  # nothing applied twice
