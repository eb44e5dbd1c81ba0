"""Group commit: concurrent saves written together, one transaction and one table lock.

Every save of the event store takes the events table's EXCLUSIVE lock (so that notification
ids commit in the order they were issued) and holds it through its commit. Saved one by one,
concurrent commands queue on that lock and each pays its own commit (one WAL flush): the
service then does no more saves per second than one connection commits transactions,
whatever the concurrency.

The :class:`GroupWriter` is one thread that takes every save that has queued while it was
busy (up to ``max_items``) and writes them with one statement, a database function
(services/group_save.sql): one round trip, one lock, one commit whatever the group's size.
Each save still gets its own answer:

- a save whose events collide with stored ones (a version another writer stored first) or with
  an earlier save of the same group fails with :class:`RecordConflictError`, alone;
- a save whose receipt key was stored before (by anyone, or earlier in the group) fails with
  :class:`DuplicateReceiptError`, alone, and its other receipts are taken back;
- the others are committed together, and only after the commit does any caller hear "saved".

The checks run under the table lock, which every writer of the events table takes (this
recorder's saves, in every process), so nothing can insert an event between a check and the
insert. Receipts are written by refusals without that lock; that race is settled by the
receipts' primary key (``ON CONFLICT DO NOTHING RETURNING``). If the statement still fails a
constraint, the group is rolled back and each of its saves is written again on its own, so
one bad save never fails another.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from eventsourcing.persistence import IntegrityError, RecordConflictError, StoredEvent
from psycopg import Connection
from psycopg.rows import DictRow, tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

if TYPE_CHECKING:
    from services.eventstore import Receipt

log = logging.getLogger(__name__)


class DuplicateReceiptError(Exception):
    """Another transaction processed the same message first; the caller re-reads its receipt."""


@dataclass
class Save:
    """One caller's save: its events, its receipts and who caused them; answered by ``done``."""

    events: Sequence[StoredEvent]
    receipts: Sequence[Receipt] = ()
    correlation_id: str | None = None
    done: Future[Sequence[int]] = field(default_factory=Future)


Connect = Callable[[], AbstractContextManager[Connection[DictRow]]]


class GroupWriter:
    """The single writer thread; :meth:`submit` blocks its caller until its save is durable."""

    def __init__(self, connect: Connect, statement: Any, *,
                 lock_timeout: str = "10s", max_items: int = 256, max_events: int = 20_000,
                 name: str = "group-writer") -> None:
        self._connect = connect
        self._statement = statement
        self._lock_timeout = lock_timeout
        self.max_items = max_items
        self.max_events = max_events
        self._queue: queue.SimpleQueue[Save | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._name = name
        self._held: Save | None = None
        self.groups = 0  # groups written, and saves in them: for tests and metrics
        self.saves = 0

    def submit(self, save: Save) -> Sequence[int]:
        """Queues ``save`` and waits for its own outcome (notification ids, or the error)."""
        self._start()
        self._queue.put(save)
        return save.done.result()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)

    def _start(self) -> None:
        if self._thread is not None and not self._closed:
            return
        with self._lock:
            if self._closed:
                raise RuntimeError("the event store was closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            group = self._take()
            if group is None:
                return
            try:
                self._write(group)
            except BaseException as e:
                for save in group:
                    if not save.done.done():
                        save.done.set_exception(e)

    def _take(self) -> list[Save] | None:
        """Blocks for the first save, then takes what else has queued meanwhile."""
        first = self._held or self._queue.get()
        self._held = None
        if first is None:
            return None
        group, self._held = fill_group(first, self._queued, lambda save: len(save.events),
                                       self.max_items, self.max_events)
        return group

    def _queued(self) -> Save | None:
        try:
            nxt = self._queue.get_nowait()
        except queue.Empty:
            return None
        if nxt is None:
            self._queue.put(None)  # close after this group
        return nxt

    def _write(self, group: list[Save]) -> None:
        try:
            ids = self._write_group(group)
        except IntegrityError:
            if len(group) == 1:
                raise
            # Not foreseen by the checks: write each save on its own, so only its own fails.
            log.warning("a group of %d saves failed a constraint; writing them one by one",
                        len(group))
            for save in group:
                try:
                    self._finish([save], self._write_group([save]))
                except BaseException as e:
                    save.done.set_exception(e)
            return
        self._finish(group, ids)

    def _finish(self, group: list[Save], ids: dict[int, Sequence[int]]) -> None:
        self.groups += 1
        self.saves += len(group)
        for n, save in enumerate(group):
            if not save.done.done():
                save.done.set_result(ids.get(n, ()))

    def _write_group(self, group: list[Save]) -> dict[int, Sequence[int]]:
        """One statement (``reserves_save_group``, services/group_save.sql), so one round trip
        and one commit, for the group. Refused saves get their exception set here (their
        callers only see it after the commit decided the group); returns the notification ids
        of the others, by index."""
        with self._connect() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(self._statement, group_params(group, self._lock_timeout), prepare=True)
            rows = curs.fetchall()
        ids, refused = group_outcomes(rows)
        for n, error in refused.items():
            if not group[n].done.done():
                group[n].done.set_exception(error)
        return ids


Item = TypeVar("Item")


def fill_group(first: Item, queued: Callable[[], Item | None], events_of: Callable[[Item], int],
               max_items: int, max_events: int) -> tuple[list[Item], Item | None]:
    """A group: ``first``, then what ``queued`` hands over (None: nothing more for now), up to
    ``max_items`` saves and ``max_events`` events. Returns it and the save that would have
    passed ``max_events``, which starts the next group."""
    group, events = [first], events_of(first)
    while len(group) < max_items and events < max_events:
        item = queued()
        if item is None:
            break
        if events + events_of(item) > max_events:
            return group, item
        group.append(item)
        events += events_of(item)
    return group, None


def group_params(group: Sequence[Save], lock_timeout: str) -> tuple[Any, ...]:
    """The arguments of ``reserves_save_group`` for ``group``: the events and receipts of every
    save, each tagged with its save's index."""
    events = [e for save in group for e in save.events]
    event_saves = [n for n, save in enumerate(group) for _ in save.events]
    correlations = [save.correlation_id for save in group for _ in save.events]
    receipts = [r for save in group for r in save.receipts]
    key_saves = [n for n, save in enumerate(group) for _ in save.receipts]
    return (
        [e.originator_id for e in events], [e.originator_version for e in events],
        [e.topic for e in events], [e.state for e in events], event_saves, correlations,
        [r.key for r in receipts], [r.fingerprint for r in receipts],
        [r.status for r in receipts], [Jsonb(r.body) for r in receipts], key_saves,
        lock_timeout,
    )


def group_outcomes(rows: Sequence[Any]
                   ) -> tuple[dict[int, Sequence[int]], dict[int, Exception]]:
    """``reserves_save_group``'s rows (save_no, outcome, notification_id) read back: the
    notification ids of each saved save, and the error of each refused one, by index."""
    ids: dict[int, list[int]] = {}
    refused: dict[int, Exception] = {}
    for save_no, outcome, notification_id in rows:
        n = int(save_no)
        if outcome == "ok":
            ids.setdefault(n, []).append(int(notification_id))
        elif n not in refused:
            refused[n] = (
                RecordConflictError(f"save {n} of the group: a version was stored first")
                if outcome == "version" else
                DuplicateReceiptError("a receipt of this save was written first"))
    return dict(ids), refused


Waiting = tuple[Save, "asyncio.Future[Sequence[int]]"]  # a save and its caller's answer


class AsyncGroupWriter:
    """The :class:`GroupWriter` on an event loop, for callers on that loop (the HTTP API's
    commands): one task takes every save queued while it was writing and writes them with the
    same statement, on a connection of ``pool``. No thread: a save costs its caller no wake-up
    of another thread, only the statement's round trip, shared with the group.

    Both writers can run at once (the API's saves here, the consumers' through the threads'
    writer): the events table's lock orders their groups, as it orders any two writers."""

    def __init__(self, pool: AsyncConnectionPool[Any], statement: Any, *,
                 lock_timeout: str = "10s", max_items: int = 256,
                 max_events: int = 20_000) -> None:
        self._pool = pool
        self._statement = statement
        self._lock_timeout = lock_timeout
        self.max_items = max_items
        self.max_events = max_events
        self._queue: asyncio.Queue[Waiting | None] = asyncio.Queue()  # None: close
        self._task: asyncio.Task[None] | None = None
        self._held: Waiting | None = None
        self._closed = False
        self.groups = 0  # groups written, and saves in them: for tests and metrics
        self.saves = 0

    async def submit(self, save: Save) -> Sequence[int]:
        """Queues ``save`` and waits for its own outcome (notification ids, or the error).
        A caller that is cancelled while it waits does not take its save back: the group it
        is in is written or refused as a whole, like a request whose client went away."""
        if self._closed:
            raise RuntimeError("the event store was closed")
        if self._task is None or self._task.done():  # not started, or cancelled with its loop
            self._task = asyncio.create_task(self._run(), name="group-writer")
        done: asyncio.Future[Sequence[int]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((save, done))
        return await asyncio.shield(done)

    async def close(self) -> None:
        """Writes what is queued, then stops."""
        self._closed = True
        if self._task is not None and not self._task.done():
            self._queue.put_nowait(None)
            await self._task

    async def _run(self) -> None:
        while (group := await self._take()) is not None:
            try:
                await self._write(group)
            except BaseException as e:
                fail_waiting((done for _, done in group), e)

    async def _take(self) -> list[Waiting] | None:
        """Waits for the first save, then takes what else has queued meanwhile."""
        first = self._held or await self._queue.get()
        self._held = None
        if first is None:
            return None
        group, self._held = fill_group(first, self._queued, lambda item: len(item[0].events),
                                       self.max_items, self.max_events)
        return group

    def _queued(self) -> Waiting | None:
        try:
            item = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if item is None:
            self._queue.put_nowait(None)  # close after this group
        return item

    async def _write(self, group: list[Waiting]) -> None:
        saves = [save for save, _ in group]
        try:
            ids, refused = await self._write_group(saves)
        except psycopg.IntegrityError:
            if len(saves) <= 1:
                raise
            log.warning("a group of %d saves failed a constraint; writing them one by one",
                        len(saves))
            await self._one_by_one(group)
            return
        self._finish(group, ids, refused)

    async def _one_by_one(self, group: list[Waiting]) -> None:
        for item in group:
            try:
                ids, refused = await self._write_group([item[0]])
            except Exception as e:
                if not item[1].done():
                    item[1].set_exception(e)
                continue
            self._finish([item], ids, refused)

    def _finish(self, group: list[Waiting], ids: dict[int, Sequence[int]],
                refused: dict[int, Exception]) -> None:
        self.groups += 1
        self.saves += len(group)
        for n, (_, done) in enumerate(group):
            if not done.done():
                if n in refused:
                    done.set_exception(refused[n])
                else:
                    done.set_result(ids.get(n, ()))

    async def _write_group(self, saves: Sequence[Save]
                           ) -> tuple[dict[int, Sequence[int]], dict[int, Exception]]:
        async with self._pool.connection() as conn, conn.cursor() as curs:
            await curs.execute(self._statement, group_params(saves, self._lock_timeout),
                               prepare=True)
            return group_outcomes(await curs.fetchall())


def fail_waiting(waiting: Iterable[asyncio.Future[Any]], error: BaseException) -> None:
    """Gives ``error`` to every future still waiting; raises it again if it is a cancellation
    (the task that called this is being cancelled: it must end)."""
    for done in waiting:
        if not done.done():
            done.set_exception(error)
    if isinstance(error, asyncio.CancelledError):
        raise error
