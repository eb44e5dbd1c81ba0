"""Projects stored events into the read models: rows and tracking position in one transaction.

The read models form named projections, each with its own tables and its own position in the
event store's notification log ('orders': orders, lines, stock, reserves; 'requests': reserve
requests and inboxes). The live projector reads one page of the log for all of them and
applies to each the events it has not applied yet, so a projection just rebuilt by
``reserves replay`` (and switched in further ahead) is never given an event twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from eventsourcing.persistence import Notification
from psycopg import Connection, Cursor
from psycopg_pool import ConnectionPool

from projections import orders, requests
from projections.batch import Item, Target, Writes, read_page
from services.eventstore import ReserveStore
from services.tracing import correlation_ids, log_correlated

log = logging.getLogger(__name__)

# Events a run reads at most: a full page means the projector is behind and runs again at once.
PAGE = 2000


@dataclass(frozen=True)
class Projection:
    name: str
    tables: tuple[str, ...]
    events: frozenset[str]
    apply: Callable[[Cursor[Any], list[Item], Any, Target], None]
    schema_file: str
    new_cache: Callable[[int], Any] = lambda capacity: None

    def ddl(self) -> str:
        return resources.files("projections").joinpath(self.schema_file).read_text()


PROJECTIONS: dict[str, Projection] = {
    p.name: p for p in (
        Projection(orders.NAME, orders.TABLES, orders.EVENTS, orders.apply, "schema_orders.sql",
                   orders.Cache),
        Projection(requests.NAME, requests.TABLES, requests.EVENTS, requests.apply,
                   "schema_requests.sql", requests.Cache),
    )
}
READ_MODEL_TABLES = tuple(t for p in PROJECTIONS.values() for t in p.tables)


def create_schema(conn: Connection[Any]) -> None:
    """The read models' tables and their tracking rows (one per projection, and 'relay')."""
    for projection in PROJECTIONS.values():
        conn.execute(projection.ddl())
    conn.execute(resources.files("projections").joinpath("schema.sql").read_text())


def tracked_position(pool: ConnectionPool[Any], name: str) -> int:
    with pool.connection() as conn:
        row = conn.execute("SELECT position FROM rm_tracking WHERE name = %s",
                           (name,)).fetchone()
    return int(row[0]) if row else 0


def projection_positions(pool: ConnectionPool[Any]) -> dict[str, int]:
    """Each projection's position in the log: the last event its tables reflect. Projection
    lag is ``max_notification_id() - position``."""
    with pool.connection() as conn:
        rows = conn.execute("SELECT name, position FROM rm_tracking WHERE name = ANY(%s)",
                            (list(PROJECTIONS),)).fetchall()
    return {str(name): int(position) for name, position in rows}


def lock_positions(cur: Cursor[Any], names: Sequence[str]) -> dict[str, int]:
    """Locks the projections' tracking rows (always in name order: no deadlock between the
    live projector and a replay's switch) and returns their positions."""
    rows = cur.execute(
        "SELECT name, position FROM rm_tracking WHERE name = ANY(%s) ORDER BY name FOR UPDATE",
        (list(names),)).fetchall()
    return {str(name): int(position) for name, position in rows}


def apply_page(cur: Cursor[Any], items: list[Item], positions: dict[str, int],
               set_search_path: Callable[[str], None] | None = None,
               caches: dict[str, Any] | None = None, end: int | None = None) -> None:
    """Applies a page to each named projection (the events after its own position) and moves
    its tracking row to the page's end (``end``, or the last item's position), inside the
    caller's transaction. ``caches``: a replay's own caches, by projection (the live projector
    has none: it is not alone).

    The projections' writes and their tracking rows go as one statement (:class:`Writes`):
    after all of them have read what they need, or after each when ``set_search_path`` moves
    the next one to tables of its own."""
    if end is None:
        if not items:
            return
        end = items[-1][0]
    writes = Writes()
    for name, position in positions.items():
        if end <= position:
            continue
        projection = PROJECTIONS[name]
        if set_search_path is not None:
            writes.flush(cur)
            set_search_path(name)
        projection.apply(cur, [i for i in items if i[0] > position and i[2] in projection.events],
                         (caches or {}).get(name), writes)
        writes.execute(b"UPDATE rm_tracking SET position = %s WHERE name = %s", (end, name))
        positions[name] = end
    writes.flush(cur)


class Projector:
    """The live projector: applies the log to every projection, a page per transaction."""

    def __init__(self, store: ReserveStore, pool: ConnectionPool[Any],
                 names: Sequence[str] = tuple(PROJECTIONS)) -> None:
        self.store = store
        self.pool = pool
        self.names = tuple(names)

    def positions(self) -> dict[str, int]:
        return projection_positions(self.pool)

    def position(self) -> int:
        """The position every projection has reached."""
        return min(self.positions().values(), default=0)

    def run_once(self, limit: int = PAGE) -> int:
        """Projects the next page of events; returns how many it read (0: caught up).

        The tracking rows are locked first and read inside the transaction, so a replay's
        switch or a second projector never makes an event apply twice. The page is read through
        the event store's own connections: the views may live in another database (the
        reliability checker projects into a scratch one). When the projector is behind,
        pages are full (``limit`` events: a handful of statements for all of them), when it is
        caught up they hold what arrived since the last one.
        """
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            positions = lock_positions(cur, self.names)
            items = read_page(self.store, min(positions.values(), default=0), limit)
            apply_page(cur, items, positions)
            if items and log.isEnabledFor(logging.INFO):
                notifications = [Notification(id=position, originator_id=e.originator_id,
                                              originator_version=e.originator_version,
                                              topic="", state=b"")
                                 for position, e, _ in items]
                log_correlated(log, "projected", notifications,
                               correlation_ids(cur, notifications))
            return len(items)
