"""Projects stored events into the read models, rows and tracking position in one transaction.

The projector reads the event store's own notification log, so it never misses an event and
a replay from position 0 rebuilds exactly what the incremental runs built.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import resources
from typing import Any
from uuid import uuid5

from eventsourcing.domain import DomainEvent
from psycopg import Connection, Cursor
from psycopg_pool import ConnectionPool

from domain import messages
from domain.ids import event_uuid
from services.eventstore import ReserveStore
from services.tracing import correlation_ids, log_correlated

log = logging.getLogger(__name__)

TRACKING_NAME = "views"
READ_MODEL_TABLES = ("rm_stock", "rm_orders", "rm_order_lines", "rm_reserves", "rm_requests",
                     "rm_inbox")


def create_schema(conn: Connection[Any]) -> None:
    """The read models' tables and their tracking rows ('views', 'relay')."""
    conn.execute(resources.files("projections").joinpath("schema.sql").read_text())


def tracked_position(pool: ConnectionPool[Any], name: str) -> int:
    with pool.connection() as conn:
        row = conn.execute("SELECT position FROM rm_tracking WHERE name = %s",
                           (name,)).fetchone()
    return int(row[0]) if row else 0


def _order_id(cur: Cursor[Any], event: DomainEvent) -> str:
    row = cur.execute("SELECT order_id FROM rm_orders WHERE aggregate_id = %s",
                      (event.originator_id,)).fetchone()
    assert row is not None, f"order {event.originator_id} projected before it was placed"
    return str(row[0])


def _change_reserve(cur: Cursor[Any], order_id: str, warehouse: str, sku: str, delta: int) -> None:
    cur.execute(
        "UPDATE rm_order_lines SET reserved = reserved + %s "
        "WHERE order_id = %s AND warehouse = %s AND sku = %s",
        (delta, order_id, warehouse, sku),
    )
    cur.execute(
        "INSERT INTO rm_stock (warehouse, sku, reserved) VALUES (%s, %s, %s) "
        "ON CONFLICT (warehouse, sku) "
        "DO UPDATE SET reserved = rm_stock.reserved + EXCLUDED.reserved",
        (warehouse, sku, delta),
    )
    if delta > 0:
        cur.execute(
            "INSERT INTO rm_reserves (warehouse, sku, order_id, quantity) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (warehouse, sku, order_id) "
            "DO UPDATE SET quantity = rm_reserves.quantity + EXCLUDED.quantity",
            (warehouse, sku, order_id, delta),
        )
    else:
        cur.execute(
            "UPDATE rm_reserves SET quantity = quantity + %s "
            "WHERE warehouse = %s AND sku = %s AND order_id = %s AND quantity + %s > 0",
            (delta, warehouse, sku, order_id, delta),
        )
        if cur.rowcount == 0:
            cur.execute(
                "DELETE FROM rm_reserves WHERE warehouse = %s AND sku = %s AND order_id = %s",
                (warehouse, sku, order_id),
            )


def _release_all(cur: Cursor[Any], order_id: str) -> None:
    lines = cur.execute(
        "SELECT warehouse, sku, reserved FROM rm_order_lines WHERE order_id = %s AND reserved > 0",
        (order_id,),
    ).fetchall()
    for warehouse, sku, reserved in lines:
        _change_reserve(cur, order_id, warehouse, sku, -reserved)


def _inbox(cur: Cursor[Any], event: DomainEvent, position: int, manager: str, kind: str,
           text: str, suffix: str = "") -> None:
    """One message to one manager; its id is derived from the event (and ``suffix`` when one
    event tells two people), so a replay writes the same ids."""
    event_id = event_uuid(event.originator_id, event.originator_version)
    message_id = str(uuid5(event_id, suffix)) if suffix else str(event_id)
    cur.execute(
        "INSERT INTO rm_inbox (id, manager, kind, text, request_id, created_at, position) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        (message_id, manager, kind, text, str(event.originator_id), event.timestamp, position),
    )


def _request(cur: Cursor[Any], event: DomainEvent) -> dict[str, Any]:
    cur.execute("SELECT * FROM rm_requests WHERE request_id = %s", (str(event.originator_id),))
    row = cur.fetchone()
    assert row is not None and cur.description is not None
    return dict(zip([d.name for d in cur.description], row, strict=True))


def _set_request(cur: Cursor[Any], event: DomainEvent, **fields: Any) -> None:
    assignments = ", ".join(f"{name} = %s" for name in fields)
    cur.execute(f"UPDATE rm_requests SET {assignments} WHERE request_id = %s",  # noqa: S608 - names are ours
                (*fields.values(), str(event.originator_id)))


# -- one function per event type: the map of what each fact does to the views ---------------

def on_order_placed(cur: Cursor[Any], e: Any, position: int) -> None:
    cur.execute(
        "INSERT INTO rm_orders (order_id, aggregate_id, number, date, partner, manager, status) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'new')",
        (e.order_id, e.originator_id, e.number, e.date, e.partner, e.manager),
    )
    merged: dict[tuple[str, str], int] = {}
    for line in e.lines:
        key = (line["warehouse"], line["sku"])
        merged[key] = merged.get(key, 0) + int(line["quantity"])
    for index, ((warehouse, sku), ordered) in enumerate(merged.items()):
        cur.execute(
            "INSERT INTO rm_order_lines (order_id, warehouse, sku, position, ordered) "
            "VALUES (%s, %s, %s, %s, %s)",
            (e.order_id, warehouse, sku, index, ordered),
        )


def on_reserve_added(cur: Cursor[Any], e: Any, position: int) -> None:
    _change_reserve(cur, _order_id(cur, e), e.warehouse, e.sku, e.quantity)


def on_reserve_removed(cur: Cursor[Any], e: Any, position: int) -> None:
    _change_reserve(cur, _order_id(cur, e), e.warehouse, e.sku, -e.quantity)


def on_order_closed(cur: Cursor[Any], e: Any, position: int) -> None:
    _release_all(cur, _order_id(cur, e))


def on_status_changed(cur: Cursor[Any], e: Any, position: int) -> None:
    cur.execute("UPDATE rm_orders SET status = %s WHERE order_id = %s", (e.status, e.order_id))


def on_stock_registered(cur: Cursor[Any], e: Any, position: int) -> None:
    cur.execute(
        "INSERT INTO rm_stock (warehouse, sku) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (e.warehouse, e.sku),
    )


def on_stock_level(cur: Cursor[Any], e: Any, position: int) -> None:
    cur.execute(
        "INSERT INTO rm_stock (warehouse, sku, on_hand) VALUES (%s, %s, %s) "
        "ON CONFLICT (warehouse, sku) DO UPDATE SET on_hand = EXCLUDED.on_hand",
        (e.warehouse, e.sku, e.on_hand),
    )


def on_requested(cur: Cursor[Any], e: Any, position: int) -> None:
    cur.execute(
        "INSERT INTO rm_requests (request_id, status, from_order_id, to_order_id, sku, warehouse, "
        "requested, requester, owner, from_order_number, from_order_date, to_order_number, "
        "requested_at, expires_at) VALUES (%s, 'pending', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
        "%s, %s)",
        (str(e.originator_id), e.from_order_id, e.to_order_id, e.sku, e.warehouse, e.requested,
         e.requester, e.owner, e.from_order_number, e.from_order_date, e.to_order_number,
         e.requested_at, e.expires_at),
    )
    _inbox(cur, e, position, e.owner, "reserve_requested", messages.request_text(
        e.requester, e.requested, e.sku, e.warehouse, e.from_order_number, e.to_order_number))


def on_given(cur: Cursor[Any], e: Any, position: int) -> None:
    _set_request(cur, e, status="given", given=e.quantity)
    r = _request(cur, e)
    _inbox(cur, e, position, r["requester"], "reserve_given", messages.success_text(
        e.quantity, r["sku"], r["from_order_number"], r["from_order_date"]))
    _inbox(cur, e, position, r["owner"], "reserve_given_out", messages.given_out_text(
        e.quantity, r["sku"], r["from_order_number"], r["to_order_number"], r["requester"]),
        suffix="owner")


def on_declined(cur: Cursor[Any], e: Any, position: int) -> None:
    _set_request(cur, e, status="declined", reason=e.reason)
    r = _request(cur, e)
    _inbox(cur, e, position, r["requester"], "reserve_declined", messages.declined_text(
        r["owner"], r["requested"], r["sku"], r["from_order_number"], e.reason))


def on_cancelled(cur: Cursor[Any], e: Any, position: int) -> None:
    _set_request(cur, e, status="cancelled")
    r = _request(cur, e)
    _inbox(cur, e, position, r["owner"], "request_cancelled", messages.cancelled_text(
        r["requester"], r["requested"], r["sku"], r["from_order_number"]))


def on_expired(cur: Cursor[Any], e: Any, position: int) -> None:
    _set_request(cur, e, status="expired")
    r = _request(cur, e)
    _inbox(cur, e, position, r["requester"], "request_expired", messages.expired_text(
        r["requested"], r["sku"], r["from_order_number"]))


def _ignore(cur: Cursor[Any], e: Any, position: int) -> None:
    """Recorded for history; no view changes."""


Handler = Callable[[Cursor[Any], Any, int], None]
HANDLERS: dict[str, Handler] = {
    "OrderPlaced": on_order_placed,
    "ReservePlaced": on_reserve_added,
    "ReserveMovedIn": on_reserve_added,
    "ReserveReleased": on_reserve_removed,
    "ReserveMovedOut": on_reserve_removed,
    "OrderShipped": on_order_closed,
    "OrderCancelled": on_order_closed,
    "OrderStatusChanged": on_status_changed,
    "StockItemRegistered": on_stock_registered,
    "StockLevelSet": on_stock_level,
    "StockConsumed": on_stock_level,
    "ReserveRequested": on_requested,
    "ReserveGiven": on_given,
    "ReserveRequestDeclined": on_declined,
    "ReserveRequestCancelled": on_cancelled,
    "ReserveRequestExpired": on_expired,
}


class Projector:
    """Applies the notification log to every read model, a page per transaction."""

    def __init__(self, store: ReserveStore, pool: ConnectionPool[Any],
                 name: str = TRACKING_NAME) -> None:
        self.store = store
        self.pool = pool
        self.name = name

    def position(self) -> int:
        return tracked_position(self.pool, self.name)

    def _apply_page(self, cur: Cursor[Any], position: int, limit: int) -> tuple[int, int]:
        """Applies up to ``limit`` events after ``position``; returns (applied, new position)."""
        notifications = self.store.recorder.select_notifications(
            start=position, limit=limit, inclusive_of_start=False)
        for notification in notifications:
            event = self.store.mapper.to_domain_event(notification)
            HANDLERS.get(type(event).__name__, _ignore)(cur, event, notification.id)
        if notifications:
            position = int(notifications[-1].id)
            cur.execute("UPDATE rm_tracking SET position = %s WHERE name = %s",
                        (position, self.name))
            if log.isEnabledFor(logging.INFO):
                log_correlated(log, f"projected into {self.name}", notifications,
                               correlation_ids(cur, notifications))
        return len(notifications), position

    def run_once(self, limit: int = 500) -> int:
        """Projects the next page of events; returns how many it applied (0: caught up).

        The tracking row is locked first and read inside the transaction, so a concurrent
        replay or a second projector never applies an event twice.
        """
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            applied, _ = self._apply_page(cur, self._locked_position(cur), limit)
            return applied

    def _locked_position(self, cur: Cursor[Any]) -> int:
        row = cur.execute("SELECT position FROM rm_tracking WHERE name = %s FOR UPDATE",
                          (self.name,)).fetchone()
        return int(row[0]) if row else 0

    def replay(self, progress: Callable[[int, int], None] | None = None,
               page: int = 2000) -> int:
        """Rebuilds every view from position 0 in one transaction; readers see the old views
        until it commits. Returns the position reached."""
        end = self.store.recorder.max_notification_id() or 0
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            self._locked_position(cur)
            self.reset(cur)
            position = 0
            while position < end:
                applied, position = self._apply_page(cur, position, page)
                if not applied:
                    break
                if progress is not None:
                    progress(position, end)
            return position

    def reset(self, cur: Cursor[Any]) -> None:
        """Empties every view and rewinds tracking, inside the caller's transaction."""
        for table in READ_MODEL_TABLES:
            cur.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        cur.execute("UPDATE rm_tracking SET position = 0 WHERE name = %s", (self.name,))
