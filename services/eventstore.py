"""The event store: eventsourcing's PostgreSQL application recorder, plus message receipts.

A receipt remembers that a message (an ERP fact's ``event_id``, a command's idempotency key or
``command_id``) was processed and what its answer was. Receipts are written in the same
transaction as the events the message caused, so a message is in effect exactly once even when
it is delivered again after a crash.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    ApplicationRecorder,
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from domain import errors
from domain.ids import order_uuid, request_uuid, stock_item_uuid
from domain.order import CustomerOrder
from domain.request import ReserveRequest
from domain.stock import StockItem
from services.tracing import CORRELATIONS_TABLE, current_correlation_id

RECEIPTS_TABLE = "processed_messages"


@dataclass(frozen=True)
class Receipt:
    key: str
    fingerprint: str
    status: int
    body: dict[str, Any]


class DuplicateReceiptError(Exception):
    """Another transaction processed the same message first; the caller re-reads its receipt."""


# eventsourcing retries a failed database call ten times, each waiting out the connect timeout:
# close to a minute before a caller hears that PostgreSQL is down. One quick retry (a stale
# pooled connection after a restart) is enough; then callers get a prompt 503.
_quick_retry = retry((InterfaceError, OperationalError), max_attempts=2, wait=0.1)


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
        self._insert_receipts = SQL(
            "INSERT INTO {schema}.{table} (key, fingerprint, status, body) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::int[], %s::jsonb[]) "
            "ON CONFLICT (key) DO NOTHING RETURNING key"
        ).format(schema=schema, table=Identifier(RECEIPTS_TABLE))
        self.sql_create_statements.append(SQL(
            "CREATE TABLE IF NOT EXISTS {schema}.{table} (originator_id uuid NOT NULL, "
            "originator_version bigint NOT NULL, correlation_id text NOT NULL, "
            "PRIMARY KEY (originator_id, originator_version))"
        ).format(schema=schema, table=Identifier(CORRELATIONS_TABLE)))
        self._insert_correlations = SQL(
            "INSERT INTO {schema}.{table} SELECT o, v, %s FROM unnest(%s::uuid[], %s::bigint[]) "
            "AS k(o, v) ON CONFLICT DO NOTHING"
        ).format(schema=schema, table=Identifier(CORRELATIONS_TABLE))
        self._select_receipts = SQL(
            "SELECT key, fingerprint, status, body FROM {schema}.{table} WHERE key = ANY(%s)"
        ).format(schema=schema, table=Identifier(RECEIPTS_TABLE))

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        receipts: Sequence[Receipt] = kwargs.get("receipts", ())
        if receipts:
            curs.execute(
                self._insert_receipts,
                (
                    [r.key for r in receipts],
                    [r.fingerprint for r in receipts],
                    [r.status for r in receipts],
                    [json.dumps(r.body, ensure_ascii=False) for r in receipts],
                ),
            )
            if len(curs.fetchall()) != len(receipts):
                raise DuplicateReceiptError
        super()._insert_events(curs, stored_events, **kwargs)
        correlation: str | None = kwargs.get("correlation_id")
        if correlation and stored_events:  # the id that caused these events, same transaction
            curs.execute(self._insert_correlations, (
                correlation, [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events]))

    @_quick_retry
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """eventsourcing's insert, without psycopg's pipeline mode.

        In pipeline mode a large save (one ERP batch of 1,000 facts: 2,000 events) deadlocked
        now and then on a Unix socket, the server waiting in ClientRead and the client in
        ``Pipeline.sync``, holding the events table's lock for good (psycopg#685 is the closest
        report). The same statements sent one by one cost a few local round trips more.
        """
        with self.datastore.get_connection() as conn, conn.transaction(), \
                conn.cursor() as curs:
            self._insert_events(curs, stored_events, **kwargs)
            if not stored_events:
                return None
            self._insert_stored_events(curs, stored_events, **kwargs)  # lock, notify, insert
            return self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)

    def insert_receipt(self, receipt: Receipt) -> bool:
        """Stores a receipt alone (a refused command: no events). False if one was there."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                self._insert_receipts,
                ([receipt.key], [receipt.fingerprint], [receipt.status],
                 [json.dumps(receipt.body, ensure_ascii=False)]),
            )
            return len(curs.fetchall()) == 1

    def select_receipts(self, keys: Sequence[str]) -> dict[str, Receipt]:
        if not keys:
            return {}
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_receipts, (list(keys),))
            rows = curs.fetchall()
        return {
            row["key"]: Receipt(row["key"], row["fingerprint"], row["status"], row["body"])
            for row in rows
        }


def postgres_env(database_url: str, *, pool_size: int = 8) -> dict[str, str]:
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
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        "POSTGRES_PRE_PING": "y",
        "POSTGRES_CONNECT_TIMEOUT": "3",
        "POSTGRES_LOCK_TIMEOUT": "10",
        "CREATE_TABLE": "y",
    }


class ReserveStore(Application[UUID]):
    """The event-sourced application: loads and saves the exchange's aggregates."""

    name = "Reserves"

    def construct_recorder(self) -> ApplicationRecorder:
        factory = cast(PostgresFactory, self.factory)
        recorder = ReservesRecorder(factory.datastore, events_table_name="reserves_events")
        recorder.create_table()
        return recorder

    @property
    def reserves_recorder(self) -> ReservesRecorder:
        return cast(ReservesRecorder, self.recorder)

    # -- loading ----------------------------------------------------------------------------

    def _find(self, aggregate_id: UUID) -> Aggregate | None:
        try:
            return cast(Aggregate, self.repository.get(aggregate_id))
        except AggregateNotFoundError:
            return None

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
        try:
            uid = UUID(request_id)
        except ValueError:
            uid = None
        found = self._find(uid) if uid is not None else None
        if not isinstance(found, ReserveRequest):
            raise errors.RequestNotFoundError(f"Reserve request {request_id!r} is unknown.")
        return found

    def find_request_by_key(self, request_key: str) -> ReserveRequest | None:
        return cast("ReserveRequest | None", self._find(request_uuid(request_key)))

    # -- saving -----------------------------------------------------------------------------

    def save_all(self, aggregates: Iterable[Aggregate], receipts: Sequence[Receipt] = ()) -> None:
        """One atomic save of every aggregate's pending events and the receipts."""
        self.save(*aggregates, receipts=list(receipts), correlation_id=current_correlation_id())

    def receipt(self, key: str) -> Receipt | None:
        return self.reserves_recorder.select_receipts([key]).get(key)

    def receipts(self, keys: Sequence[str]) -> dict[str, Receipt]:
        return self.reserves_recorder.select_receipts(keys)

    def store_refusal(self, receipt: Receipt) -> bool:
        return self.reserves_recorder.insert_receipt(receipt)
