"""A seeded random workload of ERP facts and commands, played straight into a Core."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from domain import commands as c
from handlers.erp import FactRefusedError
from handlers.wire import parse_erp_body
from services.runtime import Core
from tests.support import envelope, uid

MANAGERS = ("ivanov", "petrova", "sidorov")


class Workload:
    def __init__(self, core: Core, seed: int, skus: int = 3) -> None:
        self.core = core
        self.rng = random.Random(seed)
        self.items = [("W1", f"SKU-{i}") for i in range(skus)]
        self.orders: list[str] = []
        self.requests: list[str] = []
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        core.commands.clock = lambda: self.now
        self.counts: dict[str, int] = {}

    def _count(self, what: str, ok: bool) -> None:
        key = f"{what}:{'ok' if ok else 'refused'}"
        self.counts[key] = self.counts.get(key, 0) + 1

    def _facts(self, *facts: dict[str, Any]) -> bool:
        try:
            self.core.erp.ingest(parse_erp_body(list(facts)))
        except FactRefusedError:
            return False
        return True

    def step(self) -> None:
        rng = self.rng
        roll = rng.random()
        warehouse, sku = rng.choice(self.items)
        if roll < 0.12 or not self.orders:
            ok = self._facts(envelope("StockLevelSet", {"warehouse": warehouse, "sku": sku,
                                                        "on_hand": rng.randint(0, 50)}))
            order_id = uid("o-")
            ok = self._facts(envelope("CustomerOrderPlaced", {
                "order_id": order_id, "number": f"N{len(self.orders)}",
                "date": (datetime(2020, 1, 1) + timedelta(hours=len(self.orders))).isoformat(),
                "partner": "p", "manager": rng.choice(MANAGERS),
                "lines": [{"sku": s, "warehouse": w, "quantity": rng.randint(1, 10)}
                          for w, s in rng.sample(self.items, rng.randint(1, len(self.items)))],
            })) and ok
            self.orders.append(order_id)
            self._count("place", ok)
        elif roll < 0.3:
            order_id = rng.choice(self.orders)
            line = self._some_line(order_id)
            quantity = rng.randint(1, 5)
            if line is not None and rng.random() < 0.8:
                warehouse, sku, shortage = line
                quantity = rng.randint(1, shortage)
            ok = self._facts(envelope("ReservePlaced", {
                "order_id": order_id, "sku": sku, "warehouse": warehouse,
                "quantity": quantity}))
            self._count("reserve", ok)
        elif roll < 0.35:
            ok = self._facts(envelope("ReserveReleased", {
                "order_id": rng.choice(self.orders), "sku": sku, "warehouse": warehouse,
                "quantity": rng.randint(1, 3)}))
            self._count("release", ok)
        elif roll < 0.38:
            kind = rng.choice(("OrderShipped", "OrderCancelled"))
            ok = self._facts(envelope(kind, {"order_id": rng.choice(self.orders)}))
            self._count(kind, ok)
        elif roll < 0.65:
            to_order, from_order = rng.choice(self.orders), rng.choice(self.orders)
            quantity = rng.randint(1, 5)
            holder = self._holder(warehouse, sku)
            if holder is not None and rng.random() < 0.85:
                from_order, to_order, most = holder
                quantity = rng.randint(1, most)
            actor = self._manager(to_order)
            out = self.core.commands.execute(
                c.RequestReserve(from_order, to_order, sku, warehouse, quantity), actor)
            if out.ok:
                self.requests.append(out.body["request_id"])
            self._count("request", out.ok)
        elif self.requests:
            open_ones = [r for r in self.requests[-30:]
                         if not self.core.store.get_request(r).is_final]
            request_id = (rng.choice(open_ones) if open_ones and rng.random() < 0.85
                          else rng.choice(self.requests))
            request = self.core.store.get_request(request_id)
            choice = rng.random()
            if choice < 0.5:
                qty = rng.choice((None, rng.randint(1, request.requested)))
                out = self.core.commands.execute(c.GiveReserve(request_id, qty), request.owner)
                self._count("give", out.ok)
            elif choice < 0.7:
                out = self.core.commands.execute(
                    c.DeclineReserveRequest(request_id, "нужен самим"), request.owner)
                self._count("decline", out.ok)
            elif choice < 0.85:
                out = self.core.commands.execute(c.CancelReserveRequest(request_id),
                                                 request.requester)
                self._count("cancel", out.ok)
            else:
                self.now += timedelta(hours=rng.randint(1, 30))
                out = self.core.commands.execute(c.ExpireReserveRequest(request_id), "system")
                self._count("expire", out.ok)

    def _some_line(self, order_id: str) -> tuple[str, str, int] | None:
        order = self.core.store.get_order(order_id)
        lines = [(ln.warehouse, ln.sku, ln.shortage) for ln in order.lines.values()
                 if ln.shortage and order.is_active]
        return self.rng.choice(lines) if lines else None

    def _holder(self, warehouse: str, sku: str) -> tuple[str, str, int] | None:
        """An order holding this item, another manager's order short of it, and the most
        that may be asked, if there are such orders."""
        sample = self.rng.sample(self.orders, min(len(self.orders), 20))
        orders = [self.core.store.get_order(o) for o in sample]
        holders = [o for o in orders if o.is_active and o.held(warehouse, sku) > 0]
        for holder in holders:
            for other in orders:
                short = other.shortage(warehouse, sku)
                if other.manager != holder.manager and short > 0:
                    return holder.order_id, other.order_id, min(short,
                                                                holder.held(warehouse, sku))
        return None

    def _manager(self, order_id: str) -> str:
        return self.core.store.get_order(order_id).manager
