"""The event store: eventsourcing's PostgreSQL application recorder, plus message receipts.

A receipt remembers that a message (an ERP fact's ``event_id``, a command's idempotency key or
``command_id``) was processed and what its answer was. Receipts are written in the same
transaction as the events the message caused, so a message is in effect exactly once even when
it is delivered again after a crash.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar, cast
from urllib.parse import unquote
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    ApplicationRecorder,
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory
from psycopg import Cursor
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Identifier

from domain import errors
from domain.ids import order_uuid, request_uuid, stock_item_uuid
from domain.order import CustomerOrder
from domain.request import ReserveRequest
from domain.stock import StockItem
from services.group_commit import DuplicateReceiptError as DuplicateReceiptError
from services.group_commit import GroupWriter, Save
from services.tracing import CORRELATIONS_TABLE, current_correlation_id

RECEIPTS_TABLE = "processed_messages"


@dataclass(frozen=True)
class Receipt:
    key: str
    fingerprint: str
    status: int
    body: dict[str, Any]


# eventsourcing retries a failed database call ten times, each waiting out the connect timeout:
# close to a minute before a caller hears that PostgreSQL is down. One quick retry (a stale
# pooled connection after a restart) is enough; then callers get a prompt 503.
# The pool does not test a connection before lending it (that cost a round trip per call, a
# quarter of a command's time): after a failure, every idle connection is tested at once and
# the broken ones dropped, so the one retry gets a live connection.
_R = TypeVar("_R")


def _quick_retry(func: Callable[..., _R]) -> Callable[..., _R]:
    @functools.wraps(func)
    def call(self: Any, *args: Any, **kwargs: Any) -> _R:
        try:
            return func(self, *args, **kwargs)
        except (InterfaceError, OperationalError):
            with contextlib.suppress(Exception):
                self.datastore.pool.check()
            time.sleep(0.1)
            return func(self, *args, **kwargs)
    return call


class ReservesRecorder(PostgresApplicationRecorder):
    """Writes receipts in the transaction that stores the events."""

    select_events = _quick_retry(PostgresApplicationRecorder.select_events.__wrapped__)
    select_notifications = _quick_retry(
        PostgresApplicationRecorder.select_notifications.__wrapped__)
    max_notification_id = _quick_retry(
        PostgresApplicationRecorder.max_notification_id.__wrapped__)

    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        schema = Identifier(self.datastore.schema)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "key text PRIMARY KEY, fingerprint text NOT NULL, status int NOT NULL, "
                "body jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
            ).format(schema=schema, table=Identifier(RECEIPTS_TABLE))
        )
        self.insert_receipts_sql = SQL(
            "INSERT INTO {schema}.{table} (key, fingerprint, status, body) "
            "SELECT * FROM unnest(%b::text[], %b::text[], %b::int[], %b::jsonb[]) "
            "ON CONFLICT (key) DO NOTHING RETURNING key"
        ).format(schema=schema, table=Identifier(RECEIPTS_TABLE)).as_bytes()
        self.sql_create_statements.append(SQL(
            "CREATE TABLE IF NOT EXISTS {schema}.{table} (originator_id uuid NOT NULL, "
            "originator_version bigint NOT NULL, correlation_id text NOT NULL, "
            "PRIMARY KEY (originator_id, originator_version))"
        ).format(schema=schema, table=Identifier(CORRELATIONS_TABLE)))
        table = Identifier(self.events_table_name)
        self.sql_create_statements.append(SQL(
            resources.files("services").joinpath("group_save.sql").read_text()
        ).format(schema=schema, events=table, receipts=Identifier(RECEIPTS_TABLE),
                 correlations=Identifier(CORRELATIONS_TABLE),
                 channel=Identifier(self.channel_name)))
        self.save_group_sql = SQL(
            "SELECT save_no, outcome, notification_id FROM {schema}.reserves_save_group("
            "%b::uuid[], %b::bigint[], %b::text[], %b::bytea[], %b::int[], %b::text[], "
            "%b::text[], %b::text[], %b::int[], %b::jsonb[], %b::int[], %b::text)"
        ).format(schema=schema).as_bytes()
        self.lock_timeout = f"{self.datastore.lock_timeout}s"
        self.writer = GroupWriter(self.datastore.get_connection, self.save_group_sql,
                                  lock_timeout=self.lock_timeout)
        # the statements below are also run by the HTTP API's commands on their event loop
        # (services/async_store.py), so they are public
        self.select_events_of_sql = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
            "WHERE originator_id = ANY(%b::uuid[]) ORDER BY originator_id, originator_version"
        ).format(schema=schema, table=table).as_bytes()
        self.select_receipts_sql = SQL(
            "SELECT key, fingerprint, status, body FROM {schema}.{table} "
            "WHERE key = ANY(%b::text[])"
        ).format(schema=schema, table=Identifier(RECEIPTS_TABLE)).as_bytes()

    @_quick_retry
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Saves through the group writer: this save and the others waiting meanwhile, in one
        transaction (services/group_commit.py). Raises RecordConflictError or
        DuplicateReceiptError for this save alone; returns once it is committed.

        Not through psycopg's pipeline mode, which eventsourcing uses: a large save there (one
        ERP batch of 1,000 facts: 2,000 events) deadlocked now and then on a Unix socket, the
        server waiting in ClientRead and the client in ``Pipeline.sync``, holding the events
        table's lock for good (psycopg#685 is the closest report).
        """
        receipts: Sequence[Receipt] = kwargs.get("receipts", ())
        if not stored_events and not receipts:
            return None
        ids = self.writer.submit(Save(stored_events, receipts, kwargs.get("correlation_id")))
        return list(ids) if stored_events else None

    def close(self) -> None:
        self.writer.close()

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        # one creator at a time: two processes replacing the same function at once fail
        curs.execute("SELECT pg_advisory_xact_lock(7412003)")
        super()._create_table(curs)

    @_quick_retry
    def select_events_of(self, aggregate_ids: Sequence[UUID]
                         ) -> list[tuple[UUID, list[StoredEvent]]]:
        """Every stored event of each aggregate, by aggregate, in version order."""
        with self.datastore.get_connection() as conn, \
                conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(self.select_events_of_sql, (list(aggregate_ids),), prepare=True)
            return events_by_aggregate(curs.fetchall())

    @_quick_retry
    def insert_receipt(self, receipt: Receipt) -> bool:
        """Stores a receipt alone (a refused command: no events). False if one was there."""
        # one statement on an autocommit connection is its own transaction
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                self.insert_receipts_sql,
                ([receipt.key], [receipt.fingerprint], [receipt.status],
                 [json.dumps(receipt.body, ensure_ascii=False)]),
            )
            return len(curs.fetchall()) == 1

    @_quick_retry
    def select_receipts(self, keys: Sequence[str]) -> dict[str, Receipt]:
        if not keys:
            return {}
        # one statement on an autocommit connection: no BEGIN and ROLLBACK round trips
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_receipts_sql, (list(keys),), prepare=True)
            return receipts_by_key(curs.fetchall())


def events_by_aggregate(rows: Iterable[Sequence[Any]]) -> list[tuple[UUID, list[StoredEvent]]]:
    """Rows of (originator_id, originator_version, topic, state), in version order per
    aggregate, as each aggregate's stored events."""
    by_id: dict[UUID, list[StoredEvent]] = {}
    for originator_id, version, topic, state in rows:
        by_id.setdefault(originator_id, []).append(StoredEvent(
            originator_id=originator_id, originator_version=version, topic=topic,
            state=bytes(state)))
    return list(by_id.items())


def receipts_by_key(rows: Iterable[Any]) -> dict[str, Receipt]:
    """Rows of the receipts table (as dicts) by key."""
    return {row["key"]: Receipt(row["key"], row["fingerprint"], row["status"], row["body"])
            for row in rows}


SESSION_OPTIONS = "-c jit=off -c max_parallel_workers_per_gather=0"
"""What every PostgreSQL session of the service is started with. Its statements are lookups by
key and pages by position; costed from missing or stale statistics (a table just filled by a
seed or an ERP backfill, before autovacuum's ANALYZE) a load of 60 aggregates was planned as a
parallel scan with JIT compilation: 48-55 ms instead of 0.3-1.7 ms (docs/performance.md)."""


def apply_session_options(environ: MutableMapping[str, str] = os.environ) -> None:
    """Puts :data:`SESSION_OPTIONS` in libpq's ``PGOPTIONS`` for this process and its children:
    the one setting every connection reads, eventsourcing's pool too (it connects from parts
    of the URL, without ``options``). An operator's own ``PGOPTIONS`` comes after ours, so its
    settings win; a ``DATABASE_URL`` with ``options=`` replaces them for the connections made
    from the URL, as libpq does."""
    current = environ.get("PGOPTIONS", "")
    if SESSION_OPTIONS not in current:
        environ["PGOPTIONS"] = f"{SESSION_OPTIONS} {current}".strip()


def postgres_env(database_url: str, *, pool_size: int = 8, overflow: int = 16) -> dict[str, str]:
    """Translates a ``DATABASE_URL`` into eventsourcing's POSTGRES_* settings."""
    params = conninfo_to_dict(database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(params.get("dbname") or "postgres"),
        "POSTGRES_HOST": unquote(str(params.get("host") or "127.0.0.1")),
        "POSTGRES_PORT": str(params.get("port") or "5432"),
        "POSTGRES_USER": str(params.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(params.get("password") or ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(overflow),  # request threads beyond the pool wait less
                "POSTGRES_CONNECT_TIMEOUT": "3",
        "POSTGRES_LOCK_TIMEOUT": "10",
        "CREATE_TABLE": "y",
    }


def _mutate_all(aggregate: Any, events: Iterable[Any]) -> Any:
    """eventsourcing's ``project_aggregate`` without its ``assert isinstance(event,
    CanMutateProtocol)`` per event (a runtime-protocol check: the slowest step of a load)."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


def request_id_uuid(request_id: str) -> UUID | None:
    """A request id as the aggregate's UUID; None when it is not a UUID at all."""
    try:
        return UUID(request_id)
    except ValueError:
        return None


def as_request(found: Aggregate | None, request_id: str) -> ReserveRequest:
    """What was loaded for ``request_id``, as a request; RequestNotFoundError if nothing (or
    no request) was."""
    if not isinstance(found, ReserveRequest):
        raise errors.RequestNotFoundError(f"Reserve request {request_id!r} is unknown.")
    return found


def orders_among(found: Mapping[UUID, Aggregate], order_ids: Sequence[str]) -> list[CustomerOrder]:
    """The orders ``order_ids`` among loaded aggregates, in that order; OrderNotFoundError
    names the first one absent."""
    orders = []
    for order_id in order_ids:
        order = found.get(order_uuid(order_id))
        if not isinstance(order, CustomerOrder):
            raise errors.OrderNotFoundError(f"Customer order {order_id!r} is unknown.")
        orders.append(order)
    return orders


class ReserveStore(Application[UUID]):
    """The event-sourced application: loads and saves the exchange's aggregates."""

    name = "Reserves"

    def construct_recorder(self) -> ApplicationRecorder:
        factory = cast(PostgresFactory, self.factory)
        recorder = ReservesRecorder(factory.datastore, events_table_name="reserves_events")
        recorder.create_table()
        return recorder

    def close(self) -> None:
        self.reserves_recorder.close()  # the group writer first: it uses the pool
        super().close()

    @property
    def reserves_recorder(self) -> ReservesRecorder:
        return cast(ReservesRecorder, self.recorder)

    # -- loading ----------------------------------------------------------------------------

    def _find(self, aggregate_id: UUID) -> Aggregate | None:
        try:
            return cast(Aggregate, self.repository.get(aggregate_id, projector_func=_mutate_all))
        except AggregateNotFoundError:
            return None

    def _find_many(self, aggregate_ids: Sequence[UUID]) -> dict[UUID, Aggregate]:
        """Several aggregates with one query (``Repository.get`` costs a query each)."""
        return self.aggregates_of(self.reserves_recorder.select_events_of(aggregate_ids))

    def aggregates_of(self, stored: Iterable[tuple[UUID, Sequence[StoredEvent]]]
                      ) -> dict[UUID, Aggregate]:
        """Aggregates rebuilt from their stored events (by aggregate, in version order)."""
        found: dict[UUID, Aggregate] = {}
        to_event = self.mapper.to_domain_event
        for aggregate_id, events in stored:
            aggregate = _mutate_all(None, (to_event(s) for s in events))
            if aggregate is not None:
                found[aggregate_id] = cast(Aggregate, aggregate)
        return found

    def get_orders(self, *order_ids: str) -> list[CustomerOrder]:
        """The orders, loaded together; OrderNotFoundError names the first one unknown."""
        return orders_among(self._find_many([order_uuid(o) for o in order_ids]), order_ids)

    def find_order(self, order_id: str) -> CustomerOrder | None:
        return cast("CustomerOrder | None", self._find(order_uuid(order_id)))

    def get_order(self, order_id: str) -> CustomerOrder:
        order = self.find_order(order_id)
        if order is None:
            raise errors.OrderNotFoundError(f"Customer order {order_id!r} is unknown.")
        return order

    def find_stock_item(self, warehouse: str, sku: str) -> StockItem | None:
        return cast("StockItem | None", self._find(stock_item_uuid(warehouse, sku)))

    def get_request(self, request_id: str) -> ReserveRequest:
        uid = request_id_uuid(request_id)
        return as_request(None if uid is None else self._find(uid), request_id)

    def find_request_by_key(self, request_key: str) -> ReserveRequest | None:
        return cast("ReserveRequest | None", self._find(request_uuid(request_key)))

    # -- saving -----------------------------------------------------------------------------

    def save_all(self, aggregates: Iterable[Aggregate], receipts: Sequence[Receipt] = ()) -> None:
        """One atomic save of every aggregate's pending events and the receipts.

        ``Application.save`` without its checks of each object against typing protocols
        (``isinstance`` on a runtime protocol costs tens of microseconds in Python 3.11, a
        tenth of a give's own time): the objects here are always aggregates."""
        processing: ProcessingEvent[UUID] = ProcessingEvent()
        for aggregate in aggregates:
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
        processing.saved_kwargs.update(receipts=list(receipts),
                                       correlation_id=current_correlation_id())
        self._record(processing)

    def save_of(self, aggregates: Iterable[Aggregate], receipts: Sequence[Receipt] = ()) -> Save:
        """What :meth:`save_all` writes, for a writer on an event loop: the aggregates' pending
        events as stored events, the receipts and the current correlation id."""
        to_stored = self.mapper.to_stored_event
        events = [to_stored(e) for aggregate in aggregates for e in aggregate.collect_events()]
        return Save(events, list(receipts), current_correlation_id())

    def receipt(self, key: str) -> Receipt | None:
        return self.reserves_recorder.select_receipts([key]).get(key)

    def receipts(self, keys: Sequence[str]) -> dict[str, Receipt]:
        return self.reserves_recorder.select_receipts(keys)

    def store_refusal(self, receipt: Receipt) -> bool:
        return self.reserves_recorder.insert_receipt(receipt)
