"""Reads the console needs beyond the API's views: a manager's orders, the requests they
answer or made, and which Discussions messages they have not seen yet. Parameterised SQL over
the rm_* read models; ``console_seen`` is the console's own table of "last seen" marks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import ConnectionPool

SCHEMA = """
CREATE TABLE IF NOT EXISTS console_seen (
    manager text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0
);
"""
SCHEMA_LOCK = 7412001  # the same advisory lock the service's schema creation takes
ORDER_FILTERS = ("all", "short", "green")


@dataclass(frozen=True)
class OrderRow:
    order_id: str
    number: str
    date: datetime
    partner: str
    status: str
    shortage: int


@dataclass(frozen=True)
class RequestRow:
    request_id: str
    status: str
    from_order_id: str
    from_order_number: str
    from_order_date: datetime
    to_order_id: str
    to_order_number: str
    sku: str
    warehouse: str
    requested: int
    given: int
    requester: str
    owner: str
    reason: str | None
    requested_at: datetime


_REQUEST_COLUMNS = ("request_id, status, from_order_id, from_order_number, from_order_date, "
                    "to_order_id, to_order_number, sku, warehouse, requested, given, requester, "
                    "owner, reason, requested_at")


def _request(row: tuple[Any, ...]) -> RequestRow:
    values = list(row)
    values[9], values[10] = int(values[9]), int(values[10])
    return RequestRow(*values)


class ConsoleQueries:
    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def create_schema(self) -> None:
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            conn.execute(SCHEMA)

    def my_orders(self, manager: str, text: str = "", show: str = "all",
                  limit: int = 200) -> list[OrderRow]:
        """The manager's orders, newest first; ``text`` matches number or partner, ``show``
        keeps only orders short of stock or only green ones."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT o.order_id, o.number, o.date, o.partner, o.status, "
                "  CASE WHEN o.status IN ('shipped', 'cancelled') THEN 0 ELSE "
                "  COALESCE(SUM(GREATEST(l.ordered - l.reserved, 0)), 0) END AS shortage "
                "FROM rm_orders o LEFT JOIN rm_order_lines l USING (order_id) "
                "WHERE o.manager = %s AND (o.number ILIKE %s OR o.partner ILIKE %s) "
                "GROUP BY o.order_id ORDER BY o.date DESC, o.number DESC LIMIT %s",
                (manager, pattern, pattern, limit),
            ).fetchall()
        orders = [OrderRow(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows]
        if show == "short":
            return [o for o in orders if o.shortage > 0]
        if show == "green":
            return [o for o in orders if o.status == "green"]
        return orders

    def incoming(self, owner: str) -> list[RequestRow]:
        """Pending requests addressed to ``owner``, oldest first (answer in turn)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM rm_requests "  # noqa: S608 - constant columns
                "WHERE owner = %s AND status = 'pending' ORDER BY requested_at, request_id",
                (owner,),
            ).fetchall()
        return [_request(r) for r in rows]

    def outgoing(self, requester: str, limit: int = 50) -> list[RequestRow]:
        """The requests ``requester`` made, newest first."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM rm_requests "  # noqa: S608 - constant columns
                "WHERE requester = %s ORDER BY requested_at DESC, request_id LIMIT %s",
                (requester, limit),
            ).fetchall()
        return [_request(r) for r in rows]

    def seen_position(self, manager: str) -> int:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT position FROM console_seen WHERE manager = %s",
                               (manager,)).fetchone()
        return int(row[0]) if row else 0

    def unread(self, manager: str) -> int:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM rm_inbox i WHERE i.manager = %s AND i.position > "
                "COALESCE((SELECT position FROM console_seen WHERE manager = %s), 0)",
                (manager, manager),
            ).fetchone()
        return int(row[0]) if row else 0

    def mark_seen(self, manager: str, position: int) -> None:
        """Remembers that ``manager`` has seen their Discussions up to ``position``; a mark
        never moves back (two tabs)."""
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO console_seen (manager, position) VALUES (%s, %s) "
                "ON CONFLICT (manager) DO UPDATE "
                "SET position = GREATEST(console_seen.position, EXCLUDED.position)",
                (manager, position),
            )

    def unseen_ids(self, manager: str, after: int) -> set[str]:
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT id FROM rm_inbox WHERE manager = %s AND position > %s",
                                (manager, after)).fetchall()
        return {str(r[0]) for r in rows}

    def inbox_position(self, manager: str) -> int:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT COALESCE(MAX(position), 0) FROM rm_inbox WHERE manager = %s",
                               (manager,)).fetchone()
        return int(row[0]) if row else 0

    def pulse(self, manager: str) -> tuple[int, int]:
        """What the live channel watches: the views' position (any change to what pages show)
        and the manager's unread count."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT (SELECT sum(position) FROM rm_tracking WHERE name IN ('orders', "
                "'requests')), "  # the projections' positions (reserves replay splits them)
                "(SELECT count(*) FROM rm_inbox i WHERE i.manager = %s AND i.position > "
                " COALESCE((SELECT position FROM console_seen WHERE manager = %s), 0))",
                (manager, manager),
            ).fetchone()
        assert row is not None
        return int(row[0] or 0), int(row[1])
