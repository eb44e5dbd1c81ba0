"""The event store's reads and writes for the commands of the HTTP API, on its event loop.

A command sent through a thread (``run_in_threadpool``, as before) paid, for each of its
round trips to PostgreSQL, the wake-up of that thread and of the group writer's, and the GIL
handed back and forth with every other thread of the process: on this 2-core machine about
215 µs of CPU per round trip with 32 callers, against 87 µs awaited on the event loop
(docs/performance.md, "Commands on the event loop"). Here the same statements run on an
:class:`~psycopg_pool.AsyncConnectionPool` and the saves go through an
:class:`~services.group_commit.AsyncGroupWriter` on the same loop.

Everything else is shared with :class:`~services.eventstore.ReserveStore`: the statements,
the codec (its mapper), the rebuilding of aggregates and the not-found errors, so the two paths
cannot disagree on what is stored or how it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

import psycopg
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from domain.ids import order_uuid
from domain.order import CustomerOrder
from domain.request import ReserveRequest
from services.eventstore import (
    Receipt,
    ReserveStore,
    as_request,
    events_by_aggregate,
    orders_among,
    receipts_by_key,
    request_id_uuid,
)
from services.group_commit import AsyncGroupWriter, Save, fail_waiting

P = ParamSpec("P")
R = TypeVar("R")


def _quick_retry(func: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """As the thread path's recorder does: one retry after a connection failed (a stale pooled
    connection after a database restart), the idle ones checked first; then the error."""
    @functools.wraps(func)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await func(*args, **kwargs)
        except (psycopg.InterfaceError, psycopg.OperationalError):
            store: AsyncStore = args[0]  # type: ignore[assignment]
            with contextlib.suppress(Exception):
                await store.pool.check()
            await asyncio.sleep(0.1)
            return await func(*args, **kwargs)
    return call


Stored = dict[UUID, list[StoredEvent]]


class LoadBatcher:
    """Concurrent loads merged into one query: while ``max_in_flight`` queries are running,
    the loads asked for meanwhile wait and then go together, as one ``= ANY(ids)`` statement
    (group commit's idea, for reads). Alone, a load goes at once. Each caller gets the stored
    events of its own aggregates, from which it rebuilds objects of its own: two commands
    never share an aggregate.

    One query in flight merged the most and did best (quick serve runs at 32 clients: 492 and
    550 gives/s with one, 464 and 484 with two, 439 and 445 with four, 371 and 382 without
    merging; docs/performance.md)."""

    def __init__(self, query: Callable[[list[UUID]], Coroutine[Any, Any, Stored]],
                 max_in_flight: int = 1) -> None:
        self._query = query
        self.max_in_flight = max_in_flight
        self._waiting: list[tuple[Sequence[UUID], asyncio.Future[Stored]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.queries = 0  # statements run, and loads answered: for tests and metrics
        self.loads = 0

    async def load(self, ids: Sequence[UUID]) -> Stored:
        done: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._waiting.append((ids, done))
        if self._in_flight < self.max_in_flight:
            self._start()
        return await done

    def _start(self) -> None:
        batch, self._waiting = self._waiting, []
        self._in_flight += 1
        task = asyncio.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[Sequence[UUID], asyncio.Future[Stored]]]) -> None:
        try:
            wanted = list(dict.fromkeys(i for ids, _ in batch for i in ids))
            stored = await self._query(wanted)
            self.queries += 1
            for ids, done in batch:
                if not done.done():
                    done.set_result({i: stored[i] for i in ids if i in stored})
                    self.loads += 1
        except BaseException as e:
            fail_waiting((done for _, done in batch), e)
        finally:
            self._in_flight -= 1
            if self._waiting and self._in_flight < self.max_in_flight:
                self._start()


class AsyncStore:
    """Loads and saves aggregates for commands awaited on one event loop."""

    def __init__(self, store: ReserveStore, conninfo: str, *, max_size: int = 16,
                 timeout: float = 3.0) -> None:
        self.store = store
        recorder = store.reserves_recorder
        self.recorder = recorder
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo, min_size=1, max_size=max_size, open=False, timeout=timeout,
            kwargs={"autocommit": True, "connect_timeout": 3})
        self.writer = AsyncGroupWriter(self.pool, recorder.save_group_sql,
                                       lock_timeout=recorder.lock_timeout)
        self.loads = LoadBatcher(self._select_events_of)

    async def open(self) -> None:
        await self.pool.open()

    async def close(self) -> None:
        """Writes what is queued, then closes the pool (always: a pool left open while its
        loop ends can hang that loop's shutdown)."""
        try:
            await self.writer.close()
        finally:
            await self.pool.close()

    # -- loading ----------------------------------------------------------------------------

    async def _select_events_of(self, ids: list[UUID]) -> Stored:
        async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            await curs.execute(self.recorder.select_events_of_sql, (ids,), prepare=True)
            return dict(events_by_aggregate(await curs.fetchall()))

    @_quick_retry
    async def _load(self, ids: Sequence[UUID]) -> dict[UUID, Aggregate]:
        stored = await self.loads.load(ids)
        return self.store.aggregates_of((i, stored[i]) for i in ids if i in stored)

    async def get_request(self, request_id: str) -> ReserveRequest:
        uid = request_id_uuid(request_id)
        return as_request(None if uid is None else (await self._load([uid])).get(uid),
                          request_id)

    async def get_orders(self, *order_ids: str) -> list[CustomerOrder]:
        return orders_among(await self._load([order_uuid(o) for o in order_ids]), order_ids)

    # -- receipts and saving ----------------------------------------------------------------

    @_quick_retry
    async def receipt(self, key: str) -> Receipt | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as curs:
            await curs.execute(self.recorder.select_receipts_sql, ([key],), prepare=True)
            return receipts_by_key(await curs.fetchall()).get(key)

    @_quick_retry
    async def store_refusal(self, receipt: Receipt) -> bool:
        """Stores a refused command's receipt (no events); False if one was there."""
        async with self.pool.connection() as conn, conn.cursor() as curs:
            await curs.execute(self.recorder.insert_receipts_sql, (
                [receipt.key], [receipt.fingerprint], [receipt.status],
                [json.dumps(receipt.body, ensure_ascii=False)]))
            return len(await curs.fetchall()) == 1

    @_quick_retry
    async def _submit(self, save: Save) -> Sequence[int]:
        return await self.writer.submit(save)

    async def save_all(self, aggregates: Iterable[Aggregate],
                       receipts: Sequence[Receipt] = ()) -> None:
        """One atomic save of the aggregates' pending events and the receipts, in a group
        with the other saves queued meanwhile (raises RecordConflictError or
        DuplicateReceiptError for this save alone)."""
        save = self.store.save_of(aggregates, receipts)
        if save.events or save.receipts:
            await self._submit(save)
