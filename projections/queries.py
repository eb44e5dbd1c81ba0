"""Reads of the views the HTTP API serves; each returns the contract's JSON shape or None."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg_pool import ConnectionPool


def _iso(value: datetime) -> str:
    return value.isoformat()


class Views:
    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def stock(self, warehouse: str, sku: str) -> dict[str, Any]:
        """A stock item the service has never heard of has nothing on hand and nothing free."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT on_hand, reserved FROM rm_stock WHERE warehouse = %s AND sku = %s",
                (warehouse, sku),
            ).fetchone()
        on_hand, reserved = (int(row[0]), int(row[1])) if row else (0, 0)
        return {"warehouse": warehouse, "sku": sku, "on_hand": on_hand, "reserved": reserved,
                "free": on_hand - reserved}

    def reserves(self, warehouse: str, sku: str) -> dict[str, Any]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT r.order_id, o.number, o.date, o.manager, r.quantity "
                "FROM rm_reserves r JOIN rm_orders o USING (order_id) "
                "WHERE r.warehouse = %s AND r.sku = %s ORDER BY o.date, o.number, r.order_id",
                (warehouse, sku),
            ).fetchall()
        return {"reserves": [
            {"order_id": r[0], "number": r[1], "date": _iso(r[2]), "manager": r[3],
             "quantity": int(r[4])}
            for r in rows
        ]}

    def order(self, order_id: str) -> dict[str, Any] | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT order_id, number, date, partner, manager, status FROM rm_orders "
                "WHERE order_id = %s", (order_id,),
            ).fetchone()
            if row is None:
                return None
            lines = conn.execute(
                "SELECT sku, warehouse, ordered, reserved FROM rm_order_lines "
                "WHERE order_id = %s ORDER BY position", (order_id,),
            ).fetchall()
        closed = row[5] in ("shipped", "cancelled")
        return {
            "order_id": row[0], "number": row[1], "date": _iso(row[2]), "partner": row[3],
            "manager": row[4], "status": row[5],
            "lines": [
                {"sku": ln[0], "warehouse": ln[1], "ordered": int(ln[2]), "reserved": int(ln[3]),
                 "shortage": 0 if closed else max(int(ln[2]) - int(ln[3]), 0)}
                for ln in lines
            ],
        }

    def request(self, request_id: str) -> dict[str, Any] | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT request_id, status, from_order_id, to_order_id, sku, warehouse, requested, "
                "given, requester, owner, reason FROM rm_requests WHERE request_id = %s",
                (request_id,),
            ).fetchone()
        if row is None:
            return None
        keys = ("request_id", "status", "from_order_id", "to_order_id", "sku", "warehouse",
                "requested", "given", "requester", "owner", "reason")
        return dict(zip(keys, row, strict=True))

    def inbox(self, manager: str, limit: int = 200) -> dict[str, Any]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, kind, text, request_id, created_at FROM rm_inbox WHERE manager = %s "
                "ORDER BY position DESC, id LIMIT %s", (manager, limit),
            ).fetchall()
        return {"messages": [
            {"id": r[0], "kind": r[1], "text": r[2], "request_id": r[3], "created_at": _iso(r[4])}
            for r in rows
        ]}

    def due_requests(self, now: datetime, limit: int = 500) -> list[str]:
        """Pending requests past their expiry, for the expiry timer."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT request_id FROM rm_requests WHERE status = 'pending' AND expires_at <= %s "
                "ORDER BY expires_at LIMIT %s", (now, limit),
            ).fetchall()
        return [str(r[0]) for r in rows]
