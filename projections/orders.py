"""The 'orders' projection: rm_orders, rm_order_lines, rm_stock and rm_reserves.

A batch of events is applied in three steps: the rows it can touch are loaded with one query
per table, the events change them in memory in log order, and the changed rows are written
back with one statement per table. So a page of thousands of events costs a handful of round
trips, and the result equals applying the events one by one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from psycopg import Cursor

from projections.batch import Item, Target, insert_new, upsert

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
    """The rows one batch may touch, as loaded, and which of them it changed. Rows the batch
    creates (orders placed in it, stock items not found) are told apart from the rows already
    stored, so that a writer owning its tables can insert them with ``COPY``."""

    orders: dict[UUID, dict[str, Any]] = field(default_factory=dict)
    lines: dict[str, dict[StockKey, _Line]] = field(default_factory=dict)
    stock: dict[StockKey, list[int]] = field(default_factory=dict)  # [on_hand, reserved]
    reserves: dict[ReserveKey, int] = field(default_factory=dict)
    dirty_orders: set[UUID] = field(default_factory=set)
    dirty_lines: set[tuple[str, str, str]] = field(default_factory=set)
    dirty_stock: set[StockKey] = field(default_factory=set)
    dirty_reserves: set[ReserveKey] = field(default_factory=set)
    new_orders: set[str] = field(default_factory=set)  # order ids placed in this batch
    new_stock: set[StockKey] = field(default_factory=set)  # stock items not stored before
    held: set[ReserveKey] = field(default_factory=set)  # rm_reserves rows stored before

    def stock_row(self, key: StockKey) -> list[int]:
        row = self.stock.get(key)
        if row is None:
            row = self.stock[key] = [0, 0]
            self.new_stock.add(key)
        return row

    def change_reserve(self, order_id: str, warehouse: str, sku: str, delta: int) -> None:
        self.lines[order_id][(warehouse, sku)].reserved += delta
        self.dirty_lines.add((order_id, warehouse, sku))
        self.stock_row((warehouse, sku))[1] += delta
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
    placed: set[UUID] = set()  # not stored yet
    aggregates: set[UUID] = set()
    stock_keys: set[StockKey] = set()
    for _, e, t in items:
        if t in STOCK_EVENTS or t in _ADD or t in _REMOVE:
            stock_keys.add((e.warehouse, e.sku))
        if t == "OrderPlaced":
            placed.add(e.originator_id)
        elif t in ORDER_EVENTS:
            aggregates.add(e.originator_id)
    aggregates -= placed
    if cache is not None and aggregates:
        for agg in list(aggregates):
            hit = cache.orders.get(agg)
            if hit is not None:
                row, lines = hit
                state.orders[agg] = row
                state.lines[row["order_id"]] = lines
                aggregates.discard(agg)
    if aggregates:
        loaded = [
            (row[0], {"order_id": row[1], "number": row[2], "date": row[3], "partner": row[4],
                      "manager": row[5], "status": row[6]})
            for row in cur.execute(
                "SELECT aggregate_id, order_id, number, date, partner, manager, status "
                "FROM rm_orders WHERE aggregate_id = ANY(%b::uuid[])", (list(aggregates),))
        ]
        state.orders.update(loaded)
        order_ids = [o["order_id"] for _, o in loaded]
        for order_id in order_ids:
            state.lines[order_id] = {}
        if order_ids:
            for order_id, warehouse, sku, position, ordered, reserved in cur.execute(
                "SELECT order_id, warehouse, sku, position, ordered, reserved "
                "FROM rm_order_lines WHERE order_id = ANY(%b::text[])", (order_ids,),
            ):
                state.lines[order_id][(warehouse, sku)] = _Line(position, ordered, reserved)
    for order_id, lines in state.lines.items():
        for key, line in lines.items():
            stock_keys.add(key)
            # rm_reserves holds exactly the lines' reserves above 0: no need to read it
            reserve = (key[0], key[1], order_id)
            state.reserves[reserve] = line.reserved
            if line.reserved > 0:
                state.held.add(reserve)
    if cache is not None:
        for key in list(stock_keys):
            stock = cache.stock.get(key)
            if stock is not None:
                state.stock[key] = stock
                stock_keys.discard(key)
    if stock_keys:
        ws, ss = zip(*stock_keys, strict=True)
        for warehouse, sku, on_hand, reserved in cur.execute(
            "SELECT s.warehouse, s.sku, s.on_hand, s.reserved FROM rm_stock s "
            "JOIN unnest(%b::text[], %b::text[]) AS k(warehouse, sku) USING (warehouse, sku)",
            (list(ws), list(ss)),
        ):
            state.stock[(warehouse, sku)] = [on_hand, reserved]
    return state


def _stock(state: _State, e: Any) -> None:
    key = (e.warehouse, e.sku)
    state.stock_row(key)
    state.dirty_stock.add(key)


def _stock_level(state: _State, e: Any) -> None:
    key = (e.warehouse, e.sku)
    state.stock_row(key)[0] = e.on_hand
    state.dirty_stock.add(key)


def _placed(state: _State, e: Any) -> None:
    order_id = e.order_id
    state.orders[e.originator_id] = {"order_id": order_id, "number": e.number, "date": e.date,
                                     "partner": e.partner, "manager": e.manager,
                                     "status": "new"}
    state.dirty_orders.add(e.originator_id)
    state.new_orders.add(order_id)
    merged: dict[StockKey, int] = {}
    for line in e.lines:
        key = (line["warehouse"], line["sku"])
        merged[key] = merged.get(key, 0) + int(line["quantity"])
    lines = state.lines.setdefault(order_id, {})
    for index, (key, ordered) in enumerate(merged.items()):
        lines[key] = _Line(index, ordered, 0)
        state.dirty_lines.add((order_id, *key))


def _order_id(state: _State, e: Any) -> str:
    order = state.orders.get(e.originator_id)
    assert order is not None, f"order {e.originator_id} projected before it was placed"
    return str(order["order_id"])


def _added(state: _State, e: Any) -> None:
    state.change_reserve(_order_id(state, e), e.warehouse, e.sku, e.quantity)


def _removed(state: _State, e: Any) -> None:
    state.change_reserve(_order_id(state, e), e.warehouse, e.sku, -e.quantity)


def _closed(state: _State, e: Any) -> None:  # shipped or cancelled: its reserves are freed
    order_id = _order_id(state, e)
    for (warehouse, sku), line in list(state.lines.get(order_id, {}).items()):
        if line.reserved > 0:
            state.change_reserve(order_id, warehouse, sku, -line.reserved)


def _status(state: _State, e: Any) -> None:
    _order_id(state, e)
    state.orders[e.originator_id]["status"] = e.status
    state.dirty_orders.add(e.originator_id)


_HANDLERS: dict[str, Callable[[_State, Any], None]] = {
    "StockItemRegistered": _stock, "StockLevelSet": _stock_level, "StockConsumed": _stock_level,
    "OrderPlaced": _placed, "ReservePlaced": _added, "ReserveMovedIn": _added,
    "ReserveReleased": _removed, "ReserveMovedOut": _removed, "OrderShipped": _closed,
    "OrderCancelled": _closed, "OrderStatusChanged": _status,
}
assert set(_HANDLERS) == EVENTS


def _split(rows: list[Any], new: Callable[[Any], bool], copy_new: bool
           ) -> tuple[list[Any], list[Any]]:
    """(rows to insert with COPY, rows to upsert); everything is upserted unless ``copy_new``."""
    if not copy_new:
        return [], rows
    inserted: list[Any] = []
    upserted: list[Any] = []
    for row in rows:
        (inserted if new(row) else upserted).append(row)
    return inserted, upserted


_ORDER_COLUMNS = ("order_id", "aggregate_id", "number", "date", "partner", "manager", "status")
_LINE_COLUMNS = ("order_id", "warehouse", "sku", "position", "ordered", "reserved")
_STOCK_COLUMNS = ("warehouse", "sku", "on_hand", "reserved")
_RESERVE_COLUMNS = ("warehouse", "sku", "order_id", "quantity")


def _write(cur: Cursor[Any], out: Target, state: _State, copy_new: bool) -> None:
    """Writes the changed rows back: one statement per table to ``out`` (and with
    ``copy_new`` the new rows with COPY on ``cur``, at once)."""
    new_orders = state.new_orders
    orders = [(o["order_id"], agg, o["number"], o["date"], o["partner"], o["manager"],
               o["status"]) for agg in state.dirty_orders for o in (state.orders[agg],)]
    inserted, upserted = _split(orders, lambda r: r[0] in new_orders, copy_new)
    insert_new(cur, "rm_orders", _ORDER_COLUMNS, inserted)
    upsert(out, "rm_orders", _ORDER_COLUMNS,
           ("text", "uuid", "text", "timestamp", "text", "text", "text"),
           upserted, conflict=("order_id",), update=("status",))
    lines = [(o, w, s, ln.position, ln.ordered, ln.reserved)
             for o, w, s in state.dirty_lines for ln in (state.lines[o][(w, s)],)]
    inserted, upserted = _split(lines, lambda r: r[0] in new_orders, copy_new)
    insert_new(cur, "rm_order_lines", _LINE_COLUMNS, inserted)
    upsert(out, "rm_order_lines", _LINE_COLUMNS,
           ("text", "text", "text", "int", "bigint", "bigint"), upserted,
           conflict=("order_id", "warehouse", "sku"), update=("reserved",))
    new_stock = state.new_stock
    stock = [(w, s, *state.stock[(w, s)]) for w, s in state.dirty_stock]
    inserted, upserted = _split(stock, lambda r: (r[0], r[1]) in new_stock, copy_new)
    insert_new(cur, "rm_stock", _STOCK_COLUMNS, inserted)
    upsert(out, "rm_stock", _STOCK_COLUMNS, ("text", "text", "bigint", "bigint"),
           upserted, conflict=("warehouse", "sku"), update=("on_hand", "reserved"))
    kept = [(*k, q) for k in state.dirty_reserves if (q := state.reserves[k]) > 0]
    held = state.held
    inserted, upserted = _split(kept, lambda r: r[:3] not in held, copy_new)
    insert_new(cur, "rm_reserves", _RESERVE_COLUMNS, inserted)
    upsert(out, "rm_reserves", _RESERVE_COLUMNS, ("text", "text", "text", "bigint"), upserted,
           conflict=("warehouse", "sku", "order_id"), update=("quantity",))
    gone = [k for k in state.dirty_reserves
            if state.reserves[k] <= 0 and (k in held or not copy_new)]
    if gone:
        ws, ss, os_ = zip(*gone, strict=True)
        out.execute(
            "DELETE FROM rm_reserves r USING unnest(%b::text[], %b::text[], %b::text[]) "
            "AS k(warehouse, sku, order_id) WHERE (r.warehouse, r.sku, r.order_id) = "
            "(k.warehouse, k.sku, k.order_id)", (list(ws), list(ss), list(os_)))


def apply(cur: Cursor[Any], items: list[Item], cache: Cache | None = None,
          out: Target | None = None) -> None:
    """Applies a batch of this projection's events, in log order. With a ``cache`` (a replay,
    which owns its tables) the rows the batch creates are inserted with COPY. The other writes
    go to ``out`` (default: ``cur``, at once)."""
    if not items:
        return
    state = _load(cur, items, cache)
    handlers = _HANDLERS
    for _, event, type_name in items:
        handlers[type_name](state, event)
    _write(cur, cur if out is None else out, state, copy_new=cache is not None)
    if cache is not None:
        cache.fill(state)
