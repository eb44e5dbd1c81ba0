"""Rebuilds projections beside the live ones and switches them in atomically.

A replay builds each projection's tables in a schema of its own (``rm_replay_<name>``, with its
own tracking row), a page of the log per transaction, while the live tables keep serving and
the live projector keeps them current. When the shadow has nearly caught up, one short
transaction locks the live tracking rows (the live projector waits), applies the last events,
moves the live tables out and the shadow tables in (``ALTER TABLE … SET SCHEMA``) and sets the
live position: readers see either the old tables or the complete new ones, never a half-built
view. The old tables are dropped afterwards.

An interrupted replay leaves its shadow schema behind, never served; the next replay of that
projection resumes from the shadow's position (``restart=True`` starts again from 0). A
session advisory lock per projection refuses a second replay of it while one runs.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import Connection, pq
from psycopg.sql import SQL, Identifier
from psycopg_pool import ConnectionPool

from projections.batch import prefetch_pages, read_events
from projections.projector import PROJECTIONS, apply_page, lock_positions
from services.eventstore import ReserveStore

LOCK_CLASS = 7412002
SWITCH_LOCK_TIMEOUT = "10s"

Progress = Callable[[int, int, int], None]
"""Called after each batch with (position reached, newest position, events read so far)."""


COLLECT_EVERY_EVENTS = 500_000


@contextlib.contextmanager
def _few_collections() -> Iterator[None]:
    """Python's cyclic garbage collector, run by the build itself, rarely, while it builds.

    A replay keeps pages of decoded events and its caches alive across many allocations, so by
    default the collector runs passes over them again and again: measured, a third of the
    replay's CPU time with the default thresholds, and still 8 % of the 'orders' replay's with
    thresholds of 10,000/50/50. The objects a replay makes are freed by reference counting
    (measured: a full collection during a replay finds no garbage among ~72,000 objects, in
    30 to 90 ms); the build still calls ``gc.collect()`` every ``COLLECT_EVERY_EVENTS``
    events, so cycles it might make are freed too and memory stays bounded.
    """
    enabled = gc.isenabled()
    gc.freeze()  # what is alive at the start (modules, the store) is not scanned again
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.unfreeze()


class ReplayError(Exception):
    """A replay could not start; the message says why and what to do."""


def shadow_schema(name: str) -> str:
    return f"rm_replay_{name}"


def _retired_schema(name: str) -> str:
    return f"rm_retired_{name}"


@dataclass
class ReplayReport:
    projections: list[str]
    started_from: dict[str, int]
    position: int = 0
    events_read: int = 0
    seconds: float = 0.0
    switch_seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    processes: int = 1  # one per projection when rebuilt in parallel

    @property
    def rate(self) -> float:
        return self.events_read / self.seconds if self.seconds > 0 else 0.0


def _lock_key(name: str) -> int:
    return sorted(PROJECTIONS).index(name) + 1


def _acquire(conn: Connection[Any], name: str) -> None:
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                       (LOCK_CLASS, _lock_key(name))).fetchone()
    if row is not None and row[0]:
        return
    holder = conn.execute(
        "SELECT a.pid, a.client_addr, a.backend_start FROM pg_locks l "
        "JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' "
        "AND l.classid = %s AND l.objid = %s AND l.granted",
        (LOCK_CLASS, _lock_key(name))).fetchone()
    who = (f" (PostgreSQL backend pid {holder[0]}, from {holder[1] or 'local socket'}, "
           f"since {holder[2]:%Y-%m-%d %H:%M:%S})") if holder else ""
    raise ReplayError(f"a replay of projection {name!r} is already running{who}; "
                      "wait for it to finish or stop it first")


def _release(conn: Connection[Any]) -> None:
    """Gives the advisory locks back at once: closing the connection would too, but only once
    its backend has exited, which a replay run again right away may not wait for."""
    if conn.closed or conn.info.transaction_status != pq.TransactionStatus.IDLE:
        return  # a broken connection: its backend ends with it, locks and all
    with contextlib.suppress(psycopg.Error):
        conn.execute("SELECT pg_advisory_unlock_all()")


def _shadow_position(conn: Connection[Any], name: str) -> int | None:
    exists = conn.execute("SELECT to_regclass(%s)",
                          (f"{shadow_schema(name)}.rm_tracking",)).fetchone()
    if exists is None or exists[0] is None:
        return None
    row = conn.execute(SQL("SELECT position FROM {}.rm_tracking WHERE name = %s").format(
        Identifier(shadow_schema(name))), (name,)).fetchone()
    return int(row[0]) if row else None


def _create_shadow(conn: Connection[Any], name: str) -> None:
    schema = Identifier(shadow_schema(name))
    with conn.transaction():
        conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
        conn.execute(SQL("CREATE SCHEMA {}").format(schema))
        conn.execute(SQL("SET LOCAL search_path TO {}").format(schema))
        conn.execute(PROJECTIONS[name].ddl())
        conn.execute("CREATE TABLE rm_tracking (name text PRIMARY KEY, "
                     "position bigint NOT NULL DEFAULT 0)")
        conn.execute("INSERT INTO rm_tracking (name) VALUES (%s)", (name,))


def _start_position(conn: Connection[Any], name: str, restart: bool,
                    from_position: int | None) -> int:
    kept = None if restart else _shadow_position(conn, name)
    if from_position is not None and from_position != 0 and from_position != kept:
        raise ReplayError(
            f"projection {name!r} can be rebuilt from position 0, or continued from the "
            f"position its interrupted replay kept ({kept if kept is not None else 'none kept'})"
            f"; not from {from_position}: events before it would be missing from its tables")
    if kept is None or from_position == 0:
        _create_shadow(conn, name)
        return 0
    return kept


class Replay:
    def __init__(self, store: ReserveStore, pool: ConnectionPool[Any] | str, names: Sequence[str],
                 *, page: int = 2000, cache_rows: int = 10_000) -> None:
        unknown = [n for n in names if n not in PROJECTIONS]
        if unknown:
            raise ReplayError(f"unknown projection {unknown[0]!r}; known: "
                              f"{', '.join(sorted(PROJECTIONS))}")
        self.store = store
        self.pool = pool
        self.names = sorted(set(names))
        self.page = page
        self.cache_rows = cache_rows  # rows of each kind kept between pages, per projection

    def run(self, *, restart: bool = False, from_position: int | None = None,
            progress: Progress | None = None,
            ready: Callable[[], None] | None = None) -> ReplayReport:
        """Rebuilds the projections and switches them in. ``ready`` is called once their
        advisory locks are held and their start positions known, before any event is applied:
        a coordinator of replays in several processes starts them all or none (it raises to
        stop this one; a shadow is then kept, or new and empty when starting from 0)."""
        started = time.monotonic()
        with psycopg.connect(self._conninfo(), autocommit=True, connect_timeout=10) as conn:
            try:
                for name in self.names:
                    _acquire(conn, name)
                # a crash loses at most the last pages of a shadow, with their position: it resumes
                conn.execute("SET synchronous_commit = off")
                live = conn.execute("SELECT current_schema()").fetchone()
                assert live is not None
                positions = {n: _start_position(conn, n, restart, from_position)
                             for n in self.names}
                if ready is not None:
                    ready()
                report = ReplayReport(self.names, dict(positions))

                def search_path(name: str) -> None:
                    conn.execute(SQL("SET LOCAL search_path TO {}").format(
                        Identifier(shadow_schema(name))))

                caches = {n: PROJECTIONS[n].new_cache(self.cache_rows) for n in self.names}
                self._build(conn, positions, search_path, report, progress, caches)
                switch_started = time.monotonic()
                self._switch(conn, str(live[0]), positions, search_path, report, caches)
                report.switch_seconds = time.monotonic() - switch_started
                for name in self.names:
                    conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                        Identifier(_retired_schema(name))))
                    for table in PROJECTIONS[name].tables:
                        row = conn.execute(SQL("SELECT count(*) FROM {}.{}").format(
                            Identifier(str(live[0])), Identifier(table))).fetchone()
                        report.rows[table] = int(row[0]) if row else 0
            finally:
                _release(conn)
        report.position = min(positions.values(), default=0)
        report.seconds = time.monotonic() - started
        if progress is not None:
            progress(report.position, report.position, report.events_read)
        return report

    def _conninfo(self) -> str:
        """Where the replay's own connections go (``pool``: a pool, or its conninfo)."""
        if isinstance(self.pool, str):
            return self.pool
        conninfo = self.pool.conninfo
        return conninfo if isinstance(conninfo, str) else conninfo()

    def _head(self) -> int:
        return int(self.store.recorder.max_notification_id() or 0)

    def _build(self, conn: Connection[Any], positions: dict[str, int],
               search_path: Callable[[str], None], report: ReplayReport,
               progress: Progress | None, caches: dict[str, Any]) -> None:
        """Applies pages, one transaction each, until the shadows have caught up with the log
        (a thread reads and decodes the next page on a connection of its own while this one is
        written); the live tables are untouched."""
        head = self._head()
        wanted = frozenset().union(*(PROJECTIONS[n].events for n in self.names))
        collected = 0
        with psycopg.connect(self._conninfo(), autocommit=True, connect_timeout=10) as reader, \
                _few_collections():
            for page in prefetch_pages(self.store, min(positions.values(), default=0),
                                       self.page, conn=reader, wanted=wanted):
                with conn.transaction(), conn.cursor() as cur:
                    apply_page(cur, page.items, positions, search_path, caches, end=page.end)
                report.events_read += page.read
                collected += page.read
                if collected >= COLLECT_EVERY_EVENTS:
                    collected = 0
                    gc.collect()
                if progress is not None:
                    if page.end > head:
                        head = self._head()
                    progress(page.end, max(head, page.end), report.events_read)

    def _switch(self, conn: Connection[Any], live: str, positions: dict[str, int],
                search_path: Callable[[str], None], report: ReplayReport,
                caches: dict[str, Any]) -> None:
        """One transaction: hold the live projector, apply the last events, swap the tables."""
        live_schema = Identifier(live)
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(SQL("SET LOCAL lock_timeout = {}").format(SWITCH_LOCK_TIMEOUT))
            cur.execute(SQL("SET LOCAL search_path TO {}").format(live_schema))
            lock_positions(cur, self.names)
            head = self._head()
            position = min(positions.values(), default=0)
            wanted = frozenset().union(*(PROJECTIONS[n].events for n in self.names))
            while position < head:
                page = read_events(self.store, position, self.page, stop=head, wanted=wanted)
                if page is None:
                    break
                apply_page(cur, page.items, positions, search_path, caches, end=page.end)
                position = page.end
                report.events_read += page.read
            for name in self.names:
                shadow, retired = Identifier(shadow_schema(name)), Identifier(
                    _retired_schema(name))
                cur.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(retired))
                cur.execute(SQL("CREATE SCHEMA {}").format(retired))
                for table in PROJECTIONS[name].tables:
                    cur.execute(SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(
                        live_schema, Identifier(table), retired))
                    cur.execute(SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(
                        shadow, Identifier(table), live_schema))
                cur.execute(SQL("UPDATE {}.rm_tracking SET position = %s WHERE name = %s")
                            .format(live_schema), (max(positions[name], position), name))
                cur.execute(SQL("DROP SCHEMA {} CASCADE").format(shadow))
