"""What the projections share: a decoded page of the log, and set-based writes of a batch."""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from psycopg import Cursor
from psycopg.sql import SQL, Identifier

from services.eventstore import ReserveStore

Item = tuple[int, Any, str]
"""One stored event: its position in the log, the event, and its type's name."""


def read_page(store: ReserveStore, after: int, limit: int, stop: int | None = None) -> list[Item]:
    """Up to ``limit`` events after position ``after`` (and at most ``stop``), decoded."""
    notifications = store.recorder.select_notifications(
        start=after, limit=limit, stop=stop, inclusive_of_start=False)
    to_event = store.mapper.to_domain_event
    items: list[Item] = []
    for notification in notifications:
        event = to_event(notification)
        items.append((int(notification.id), event, type(event).__name__))
    return items


@functools.lru_cache(maxsize=64)
def _upsert_sql(table: str, columns: tuple[str, ...], types: tuple[str, ...],
                conflict: tuple[str, ...], update: tuple[str, ...]) -> bytes:
    on_conflict = (
        SQL("DO UPDATE SET {}").format(SQL(", ").join(
            SQL("{c} = EXCLUDED.{c}").format(c=Identifier(c)) for c in update))
        if update else SQL("DO NOTHING")
    )
    return SQL(
        "INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT ({conflict}) {on_conflict}"
    ).format(
        table=Identifier(table),
        columns=SQL(", ").join(Identifier(c) for c in columns),
        arrays=SQL(", ").join(SQL("%s::{}[]").format(SQL(t)) for t in types),
        conflict=SQL(", ").join(Identifier(c) for c in conflict),
        on_conflict=on_conflict,
    ).as_bytes(None)


def upsert(cur: Cursor[Any], table: str, columns: Sequence[str], types: Sequence[str],
           rows: Sequence[Sequence[Any]], *, conflict: Sequence[str],
           update: Sequence[str] = ()) -> None:
    """Writes ``rows`` with one statement, whatever their number (arrays and unnest)."""
    if not rows:
        return
    statement = _upsert_sql(table, tuple(columns), tuple(types), tuple(conflict), tuple(update))
    cur.execute(statement, [list(column) for column in zip(*rows, strict=True)])


def prefetch_pages(store: ReserveStore, after: int, limit: int,
                   depth: int = 2) -> Iterator[list[Item]]:
    """Pages of the log after ``after`` until it is caught up, read and decoded by a thread
    while the caller applies the previous page (decoding is CPU, applying mostly waits on
    PostgreSQL). At most ``depth`` pages wait in memory."""
    pages: queue.Queue[list[Item] | BaseException | None] = queue.Queue(maxsize=depth)
    stopped = threading.Event()

    def put(value: list[Item] | BaseException | None) -> bool:
        while not stopped.is_set():
            try:
                pages.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        position = after
        try:
            while items := read_page(store, position, limit):
                if not put(items):
                    return
                position = items[-1][0]
        except BaseException as e:  # handed to the caller's thread, raised there
            put(e)
            return
        put(None)

    reader = threading.Thread(target=read, name="replay-reader", daemon=True)
    reader.start()
    try:
        while (page := pages.get()) is not None:
            if isinstance(page, BaseException):
                raise page
            yield page
    finally:
        stopped.set()
        reader.join()
