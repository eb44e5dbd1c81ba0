"""What the projections share: a decoded page of the log, and set-based writes of a batch."""

from __future__ import annotations

from collections.abc import Sequence
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


def upsert(cur: Cursor[Any], table: str, columns: Sequence[str], types: Sequence[str],
           rows: Sequence[Sequence[Any]], *, conflict: Sequence[str],
           update: Sequence[str] = ()) -> None:
    """Writes ``rows`` with one statement, whatever their number (arrays and unnest)."""
    if not rows:
        return
    on_conflict = (
        SQL("DO UPDATE SET {}").format(SQL(", ").join(
            SQL("{c} = EXCLUDED.{c}").format(c=Identifier(c)) for c in update))
        if update else SQL("DO NOTHING")
    )
    statement = SQL(
        "INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT ({conflict}) {on_conflict}"
    ).format(
        table=Identifier(table),
        columns=SQL(", ").join(Identifier(c) for c in columns),
        arrays=SQL(", ").join(SQL("%s::{}[]").format(SQL(t)) for t in types),
        conflict=SQL(", ").join(Identifier(c) for c in conflict),
        on_conflict=on_conflict,
    )
    cur.execute(statement, [list(column) for column in zip(*rows, strict=True)])
