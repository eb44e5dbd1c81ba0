"""What the projections share: a decoded page of the log, and set-based writes of a batch."""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import resolve_topic, retry
from psycopg import Connection, Cursor
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from services.eventstore import ReserveStore

Item = tuple[int, Any, str]
"""One stored event: its position in the log, the event, and its type's name."""


class _Stored(NamedTuple):
    """What the mapper reads of a stored event (eventsourcing's ``StoredEvent`` fields), made
    from a plain row: no per-row dict and dataclass as ``select_notifications`` builds."""

    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes


@functools.lru_cache(maxsize=8)
def _select_sql(schema: str, table: str, stop: bool, skip: bool = False) -> bytes:
    """``skip``: the first parameter is an array of topics whose state is not sent (NULL)."""
    return SQL(
        "SELECT notification_id, originator_id, originator_version, topic, {state} "
        "FROM {schema}.{table} WHERE notification_id > %s{stop} "
        "ORDER BY notification_id LIMIT %s"
    ).format(schema=Identifier(schema), table=Identifier(table),
             state=SQL("CASE WHEN topic = ANY(%s::text[]) THEN NULL ELSE state END")
             if skip else SQL("state"),
             stop=SQL(" AND notification_id <= %s") if stop else SQL("")).as_bytes(None)


_names: dict[str, str] = {}
"""Each topic seen (a handful) and the name of the class the mapper makes of it: which
topics a reader skips is known from them without decoding anything."""


def _class_name(topic: str) -> str:
    name = _names.get(topic)
    if name is None:
        name = _names[topic] = resolve_topic(topic).__name__
    return name


@dataclass(frozen=True)
class Page:
    """A page of the log: the events wanted, decoded, and where the page ends (the position
    of the last event read, wanted or not)."""

    end: int
    items: list[Item]
    read: int  # events read, wanted or not


def read_events(store: ReserveStore, after: int, limit: int, *, stop: int | None = None,
                conn: Connection[Any] | None = None,
                wanted: Collection[str] | None = None) -> Page | None:
    """Up to ``limit`` events after position ``after`` (and at most ``stop``), or None at the
    end of the log; on ``conn`` if given (a reader of its own), else on a pooled connection.
    With ``wanted`` (event class names) the other events are not decoded, only skipped."""
    recorder = store.recorder
    assert isinstance(recorder, PostgresApplicationRecorder)
    skip = None if wanted is None or conn is None else \
        [topic for topic, name in list(_names.items()) if name not in wanted]
    statement = _select_sql(recorder.datastore.schema, recorder.events_table_name,
                            stop is not None, skip is not None)
    params: tuple[Any, ...] = (after, stop, limit) if stop is not None else (after, limit)
    if conn is None:
        rows = _select_pooled(recorder, statement, params)
    else:
        # binary: no bytea in hex to parse (half the client's CPU for a page); and the state
        # of the events not wanted (their topic seen before) is not sent at all
        with conn.cursor(row_factory=tuple_row, binary=True) as cur:
            rows = cur.execute(statement, params if skip is None else (skip, *params),
                               prepare=True).fetchall()
    if not rows:
        return None
    to_event = store.mapper.to_domain_event
    items: list[Item] = []
    append = items.append
    if wanted is None:
        for position, originator_id, version, topic, state in rows:
            event = to_event(cast(StoredEvent, _Stored(originator_id, version, topic, state)))
            append((position, event, type(event).__name__))
    else:
        names = _names
        for position, originator_id, version, topic, state in rows:
            name = names.get(topic) or _class_name(topic)  # without decoding the state
            if name in wanted:
                event = to_event(cast(StoredEvent, _Stored(originator_id, version, topic,
                                                           state)))
                append((position, event, name))
    return Page(int(rows[-1][0]), items, len(rows))


def read_page(store: ReserveStore, after: int, limit: int, stop: int | None = None,
              conn: Connection[Any] | None = None) -> list[Item]:
    """Up to ``limit`` events after position ``after`` (and at most ``stop``), decoded."""
    page = read_events(store, after, limit, stop=stop, conn=conn)
    return page.items if page is not None else []


@retry((InterfaceError, OperationalError), max_attempts=2, wait=0.1)  # as the recorder's reads
def _select_pooled(recorder: PostgresApplicationRecorder, statement: bytes,
                   params: tuple[int, ...]) -> list[tuple[Any, ...]]:
    with recorder.datastore.get_connection() as conn, \
            conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(statement, params, prepare=True).fetchall()


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
        arrays=SQL(", ").join(SQL("%b::{}[]").format(SQL(t)) for t in types),
        conflict=SQL(", ").join(Identifier(c) for c in conflict),
        on_conflict=on_conflict,
    ).as_bytes(None)


class Writes:
    """Write statements nobody reads a result of, sent as one: each becomes a data-modifying
    ``WITH`` query of a single statement, so a page's writes to every table cost one round
    trip instead of one each (the live projector writes a handful of rows per run, where the
    round trips are most of its cost).

    It takes ``execute`` as a cursor does, so the writers below accept either. The parts run
    on one snapshot and do not see each other's rows: only statements on different rows (or
    tables) may go together, which holds for a projection's writes of one batch (each row is
    written once, by one statement)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._params: list[Any] = []

    def execute(self, statement: bytes | str, params: Sequence[Any] = ()) -> None:
        self._parts.append(statement.encode() if isinstance(statement, str) else statement)
        self._params.extend(params)

    def __len__(self) -> int:
        return len(self._parts)

    def flush(self, cur: Cursor[Any]) -> None:
        """Runs what was written so far, as one statement, on ``cur``."""
        parts, params = self._parts, self._params
        if not parts:
            return
        self._parts, self._params = [], []
        if len(parts) == 1:
            cur.execute(parts[0], params)
            return
        cur.execute(b"WITH " + b", ".join(b"w%d AS (%s)" % (i, part)
                                          for i, part in enumerate(parts)) + b" SELECT 1",
                    params)


Target = Cursor[Any] | Writes
"""Where a writer's statements go: at once (a cursor), or together later (:class:`Writes`)."""


def upsert(cur: Target, table: str, columns: Sequence[str], types: Sequence[str],
           rows: Sequence[Sequence[Any]], *, conflict: Sequence[str],
           update: Sequence[str] = ()) -> None:
    """Writes ``rows`` with one statement, whatever their number (arrays and unnest)."""
    if not rows:
        return
    statement = _upsert_sql(table, tuple(columns), tuple(types), tuple(conflict), tuple(update))
    cur.execute(statement, [list(column) for column in zip(*rows, strict=True)])


@functools.lru_cache(maxsize=64)
def _copy_sql(table: str, columns: tuple[str, ...]) -> bytes:
    return SQL("COPY {table} ({columns}) FROM STDIN").format(
        table=Identifier(table), columns=SQL(", ").join(Identifier(c) for c in columns),
    ).as_bytes(None)


def insert_new(cur: Cursor[Any], table: str, columns: Sequence[str],
               rows: Sequence[Sequence[Any]]) -> None:
    """Writes rows known not to be in ``table`` yet with ``COPY``: the rows are formatted in C,
    a quarter of the client's work of an array ``upsert`` and half the server's. Only for a
    writer that owns the table (a replay's shadow): a row already there fails the batch."""
    if not rows:
        return
    with cur.copy(_copy_sql(table, tuple(columns))) as copy:
        for row in rows:
            copy.write_row(row)


def prefetch_pages(store: ReserveStore, after: int, limit: int, *, depth: int = 2,
                   conn: Connection[Any] | None = None,
                   wanted: Collection[str] | None = None) -> Iterator[Page]:
    """Pages of the log after ``after`` until it is caught up, read and decoded by a thread
    (on ``conn``, which it then owns, if given) while the caller applies the previous page.
    At most ``depth`` pages wait in memory."""
    pages: queue.Queue[Page | BaseException | None] = queue.Queue(maxsize=depth)
    stopped = threading.Event()

    def put(value: Page | BaseException | None) -> bool:
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
            while page := read_events(store, position, limit, conn=conn, wanted=wanted):
                if not put(page):
                    return
                position = page.end
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
