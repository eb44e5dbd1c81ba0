"""Seeding the event store fast: the domain builds the aggregates (so every stored event is
one the product could have stored), and the recorder inserts thousands of them per
transaction, instead of a command at a time.

One *slot* is the material for one give: the owner's order (petrova's, holding 1 unit of a
stock item), the requester's order (ivanov's, short of that unit) and a pending request of 1
unit between them: 7 events. A slot seeded as *given* has the give applied too: 12 events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.domain import Aggregate

from domain.exchange import give_reserve, request_reserve
from domain.order import CustomerOrder
from domain.stock import StockItem
from services.eventstore import ReserveStore, postgres_env

OWNER = "petrova"
REQUESTER = "ivanov"
WAREHOUSE = "Основной склад"
SLOTS_PER_SKU = 100
EVENTS_PER_SLOT = 7
EVENTS_PER_GIVEN_SLOT = 12


@dataclass(frozen=True)
class Slot:
    """What a give needs: the request to answer and the order that turns green."""

    request_id: str
    to_order_id: str


def _slot(run: str, i: int, now: datetime, given: bool) -> tuple[Slot, list[Aggregate]]:
    sku = f"BENCH-{run}-{i // SLOTS_PER_SKU}"
    line = [{"sku": sku, "warehouse": WAREHOUSE, "quantity": 1}]
    owner = CustomerOrder.place(order_id=f"{run}-a{i}", number=f"A{i}",
                                date=datetime(2020, 4, 30, 8, 42, 28), partner="ООО Ромашка",
                                manager=OWNER, lines=line)
    owner.place_reserve(WAREHOUSE, sku, 1)
    requester = CustomerOrder.place(order_id=f"{run}-b{i}", number=f"B{i}",
                                    date=datetime(2020, 5, 4, 10, 15), partner="ИП Васильев",
                                    manager=REQUESTER, lines=line)
    request = request_reserve(request_key=f"{run}-r{i}", from_order=owner, to_order=requester,
                              sku=sku, warehouse=WAREHOUSE, quantity=1, actor=REQUESTER,
                              now=now, ttl=timedelta(days=1))
    if given:
        give_reserve(request=request, from_order=owner, to_order=requester, quantity=None,
                     actor=OWNER, now=now)
    aggregates: list[Aggregate] = [owner, requester, request]
    if i % SLOTS_PER_SKU == 0:
        stock = StockItem(warehouse=WAREHOUSE, sku=sku)
        stock.set_level(SLOTS_PER_SKU)
        aggregates.append(stock)
    return Slot(request.request_id, requester.order_id), aggregates


def slots(run: str, start: int, count: int, *, given_every: int = 0,
          now: datetime | None = None) -> Iterator[tuple[Slot, list[Aggregate]]]:
    """Slots ``start`` .. ``start + count - 1``; every ``given_every``-th one already given."""
    now = now or datetime.now(UTC)
    for i in range(start, start + count):
        given = given_every > 0 and i % given_every == 0
        yield _slot(run, i, now, given)


@dataclass
class SeedResult:
    slots: list[Slot]
    events: int
    seconds: float


class Seeder:
    """Writes slots' events through the store's recorder, ``batch`` slots per transaction.

    The recorder is told to insert through its database function (one statement carrying an
    array of events) rather than its default pipelined ``executemany``: on the embedded
    PostgreSQL's Unix socket the pipelined insert of a thousand or more events at once hangs
    now and then (client and server both waiting to read; see docs/performance.md).
    """

    def __init__(self, database_url: str) -> None:
        env = postgres_env(database_url, pool_size=2)
        env["POSTGRES_ENABLE_DB_FUNCTIONS"] = "y"
        self.store = ReserveStore(env=env)

    def close(self) -> None:
        self.store.close()

    def seed(self, run: str, start: int, count: int, *, given_every: int = 0,
             batch: int = 1000, keep_slots: bool = True,
             progress: Callable[[int], Any] | None = None) -> SeedResult:
        mapper, recorder = self.store.mapper, self.store.recorder
        kept: list[Slot] = []
        events = 0
        pending: list[Any] = []
        started = time.perf_counter()
        for n, (slot, aggregates) in enumerate(slots(run, start, count,
                                                     given_every=given_every), 1):
            if keep_slots:
                kept.append(slot)
            for aggregate in aggregates:
                pending.extend(mapper.to_stored_event(e) for e in aggregate.collect_events())
            if n % batch == 0 or n == count:
                recorder.insert_events(pending)
                events += len(pending)
                pending = []
                if progress is not None:
                    progress(events)
        return SeedResult(kept, events, time.perf_counter() - started)

    def max_position(self) -> int:
        return int(self.store.recorder.max_notification_id() or 0)

    def mean_state_bytes(self, sample: int = 2000) -> float:
        """The mean size of a stored event's state: the bulk of a ``reserve.events`` message."""
        notes = self.store.recorder.select_notifications(start=0, limit=sample,
                                                         inclusive_of_start=False)
        return sum(len(n.state) for n in notes) / len(notes) if notes else 0.0
