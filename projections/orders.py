"""The 'orders' projection: rm_orders, rm_order_lines, rm_stock and rm_reserves.

A batch of events is applied in three steps: the rows it can touch are loaded with one query
per table, the events change them in memory in log order, and the changed rows are written
back with one statement per table. So a page of thousands of events costs a handful of round
trips, and the result equals applying the events one by one.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from psycopg import Cursor

from projections.batch import Item, upsert

NAME = "orders"
TABLES = ("rm_stock", "rm_orders", "rm_order_lines", "rm_reserves")
ORDER_EVENTS = frozenset({
    "OrderPlaced", "ReservePlaced", "ReserveMovedIn", "ReserveReleased", "ReserveMovedOut",
    "OrderShipped", "OrderCancelled", "OrderStatusChanged",
})
STOCK_EVENTS = frozenset({"StockItemRegistered", "StockLevelSet", "StockConsumed"})
EVENTS = ORDER_EVENTS | STOCK_EVENTS
_ADD = frozenset({"ReservePlaced", "ReserveMovedIn"})
_REMOVE = frozenset({"ReserveReleased", "ReserveMovedOut"})

StockKey = tuple[str, str]
ReserveKey = tuple[str, str, str]


@dataclass
class _Line:
    position: int
    ordered: int
    reserved: int


@dataclass
class _State:
    """The rows one batch may touch, as loaded, and which of them it changed."""

    orders: dict[UUID, dict[str, Any]] = field(default_factory=dict)
    lines: dict[str, dict[StockKey, _Line]] = field(default_factory=dict)
    stock: dict[StockKey, list[int]] = field(default_factory=dict)  # [on_hand, reserved]
    reserves: dict[ReserveKey, int] = field(default_factory=dict)
    dirty_orders: set[UUID] = field(default_factory=set)
    dirty_lines: set[tuple[str, str, str]] = field(default_factory=set)
    dirty_stock: set[StockKey] = field(default_factory=set)
    dirty_reserves: set[ReserveKey] = field(default_factory=set)

    def change_reserve(self, order_id: str, warehouse: str, sku: str, delta: int) -> None:
        self.lines[order_id][(warehouse, sku)].reserved += delta
        self.dirty_lines.add((order_id, warehouse, sku))
        self.stock.setdefault((warehouse, sku), [0, 0])[1] += delta
        self.dirty_stock.add((warehouse, sku))
        key = (warehouse, sku, order_id)
        self.reserves[key] = self.reserves.get(key, 0) + delta
        self.dirty_reserves.add(key)


class Cache:
    """The rows a replay wrote, kept between its batches so most of them need not be read
    again: only for a writer that owns its tables (a replay's shadow, under its lock).
    Bounded: the least recently used orders and stock items are forgotten."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self.orders: OrderedDict[UUID, tuple[dict[str, Any], dict[StockKey, _Line]]] = (
            OrderedDict())
        self.stock: OrderedDict[StockKey, list[int]] = OrderedDict()

    def fill(self, state: _State) -> None:
        for agg, row in state.orders.items():
            self.orders[agg] = (row, state.lines.get(row["order_id"], {}))
            self.orders.move_to_end(agg)
        for key, stock in state.stock.items():
            self.stock[key] = stock
            self.stock.move_to_end(key)
        while len(self.orders) > self.capacity:
            self.orders.popitem(last=False)
        while len(self.stock) > self.capacity:
            self.stock.popitem(last=False)


def _load(cur: Cursor[Any], items: list[Item], cache: Cache | None) -> _State:
    state = _State()
    placed = {e.originator_id for _, e, t in items if t == "OrderPlaced"}  # not stored yet
    aggregates = list({e.originator_id for _, e, t in items if t in ORDER_EVENTS} - placed)
    if cache is not None:
        for agg in aggregates:
            if agg in cache.orders:
                row, lines = cache.orders[agg]
                state.orders[agg] = row
                state.lines[row["order_id"]] = lines
        aggregates = [agg for agg in aggregates if agg not in state.orders]
    cached_order_ids = set(state.lines)
    for row in cur.execute(
        "SELECT aggregate_id, order_id, number, date, partner, manager, status FROM rm_orders "
        "WHERE aggregate_id = ANY(%s)", (aggregates,),
    ):
        state.orders[row[0]] = {"order_id": row[1], "number": row[2], "date": row[3],
                                "partner": row[4], "manager": row[5], "status": row[6]}
    order_ids = [o["order_id"] for o in state.orders.values()
                 if o["order_id"] not in cached_order_ids]
    for order_id, warehouse, sku, position, ordered, reserved in cur.execute(
        "SELECT order_id, warehouse, sku, position, ordered, reserved FROM rm_order_lines "
        "WHERE order_id = ANY(%s)", (order_ids,),
    ):
        state.lines.setdefault(order_id, {})[(warehouse, sku)] = _Line(position, ordered, reserved)
    stock_keys = {(e.warehouse, e.sku) for _, e, t in items
                  if t in STOCK_EVENTS or t in _ADD or t in _REMOVE}
    for order_id, lines in state.lines.items():
        for (warehouse, sku), line in lines.items():
            stock_keys.add((warehouse, sku))
            # rm_reserves holds exactly the lines' reserves above 0: no need to read it
            state.reserves[(warehouse, sku, order_id)] = line.reserved
    if cache is not None:
        for key in stock_keys:
            if key in cache.stock:
                state.stock[key] = cache.stock[key]
        stock_keys -= set(state.stock)
    if stock_keys:
        ws, ss = zip(*stock_keys, strict=True)
        for warehouse, sku, on_hand, reserved in cur.execute(
            "SELECT s.warehouse, s.sku, s.on_hand, s.reserved FROM rm_stock s "
            "JOIN unnest(%s::text[], %s::text[]) AS k(warehouse, sku) USING (warehouse, sku)",
            (list(ws), list(ss)),
        ):
            state.stock[(warehouse, sku)] = [on_hand, reserved]
    return state


def _apply(state: _State, type_name: str, e: Any) -> None:
    if type_name in STOCK_EVENTS:
        key = (e.warehouse, e.sku)
        row = state.stock.setdefault(key, [0, 0])
        if type_name != "StockItemRegistered":
            row[0] = e.on_hand
        state.dirty_stock.add(key)
        return
    if type_name == "OrderPlaced":
        state.orders[e.originator_id] = {"order_id": e.order_id, "number": e.number,
                                         "date": e.date, "partner": e.partner,
                                         "manager": e.manager, "status": "new"}
        state.dirty_orders.add(e.originator_id)
        merged: dict[StockKey, int] = {}
        for line in e.lines:
            key = (line["warehouse"], line["sku"])
            merged[key] = merged.get(key, 0) + int(line["quantity"])
        lines = state.lines.setdefault(e.order_id, {})
        for index, (key, ordered) in enumerate(merged.items()):
            lines[key] = _Line(index, ordered, 0)
            state.dirty_lines.add((e.order_id, *key))
        return
    order = state.orders.get(e.originator_id)
    assert order is not None, f"order {e.originator_id} projected before it was placed"
    order_id = order["order_id"]
    if type_name in _ADD:
        state.change_reserve(order_id, e.warehouse, e.sku, e.quantity)
    elif type_name in _REMOVE:
        state.change_reserve(order_id, e.warehouse, e.sku, -e.quantity)
    elif type_name in ("OrderShipped", "OrderCancelled"):
        for (warehouse, sku), line in list(state.lines.get(order_id, {}).items()):
            if line.reserved > 0:
                state.change_reserve(order_id, warehouse, sku, -line.reserved)
    elif type_name == "OrderStatusChanged":
        order["status"] = e.status
        state.dirty_orders.add(e.originator_id)


def _write(cur: Cursor[Any], state: _State) -> None:
    orders = [(agg, state.orders[agg]) for agg in state.dirty_orders]
    upsert(cur, "rm_orders", ("order_id", "aggregate_id", "number", "date", "partner", "manager",
                              "status"),
           ("text", "uuid", "text", "timestamp", "text", "text", "text"),
           [(o["order_id"], agg, o["number"], o["date"], o["partner"], o["manager"], o["status"])
            for agg, o in orders], conflict=("order_id",), update=("status",))
    lines = [(o, w, s, state.lines[o][(w, s)]) for o, w, s in state.dirty_lines]
    upsert(cur, "rm_order_lines", ("order_id", "warehouse", "sku", "position", "ordered",
                                   "reserved"),
           ("text", "text", "text", "int", "bigint", "bigint"),
           [(o, w, s, ln.position, ln.ordered, ln.reserved) for o, w, s, ln in lines],
           conflict=("order_id", "warehouse", "sku"), update=("reserved",))
    upsert(cur, "rm_stock", ("warehouse", "sku", "on_hand", "reserved"),
           ("text", "text", "bigint", "bigint"),
           [(w, s, *state.stock[(w, s)]) for w, s in state.dirty_stock],
           conflict=("warehouse", "sku"), update=("on_hand", "reserved"))
    kept = [(*k, state.reserves[k]) for k in state.dirty_reserves if state.reserves[k] > 0]
    gone = [k for k in state.dirty_reserves if state.reserves[k] <= 0]
    upsert(cur, "rm_reserves", ("warehouse", "sku", "order_id", "quantity"),
           ("text", "text", "text", "bigint"), kept,
           conflict=("warehouse", "sku", "order_id"), update=("quantity",))
    if gone:
        ws, ss, os_ = zip(*gone, strict=True)
        cur.execute(
            "DELETE FROM rm_reserves r USING unnest(%s::text[], %s::text[], %s::text[]) "
            "AS k(warehouse, sku, order_id) WHERE (r.warehouse, r.sku, r.order_id) = "
            "(k.warehouse, k.sku, k.order_id)", (list(ws), list(ss), list(os_)))


def apply(cur: Cursor[Any], items: list[Item], cache: Cache | None = None) -> None:
    """Applies a batch of this projection's events, in log order."""
    if not items:
        return
    state = _load(cur, items, cache)
    for _, event, type_name in items:
        _apply(state, type_name, event)
    _write(cur, state)
    if cache is not None:
        cache.fill(state)
