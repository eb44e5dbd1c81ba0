"""ERP facts: applied all-or-nothing per batch, idempotent by ``event_id``."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import RecordConflictError

from domain import errors
from domain import facts as f
from domain.ids import order_uuid, stock_item_uuid
from domain.order import CustomerOrder
from domain.stock import StockItem
from handlers.commands import MAX_ATTEMPTS, RetriesExhaustedError, backoff
from services.eventstore import DuplicateReceiptError, Receipt, ReserveStore


@dataclass(frozen=True)
class Envelope:
    event_id: str
    fact: f.Fact
    fingerprint: str


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int


class FactRefusedError(Exception):
    """A fact contradicts what the service knows; nothing of its batch was applied."""

    def __init__(self, index: int, event_id: str, error: errors.DomainError) -> None:
        self.index, self.event_id, self.error = index, event_id, error
        super().__init__(f"Event #{index + 1} ({event_id!r}) was refused: {error.message}")


def receipt_key(event_id: str) -> str:
    return f"erp:{event_id}"


class _Batch:
    """The aggregates one batch touches, loaded once and changed cumulatively."""

    def __init__(self, store: ReserveStore) -> None:
        self.store = store
        self.touched: dict[UUID, Aggregate] = {}

    def order(self, order_id: str) -> CustomerOrder | None:
        uid = order_uuid(order_id)
        if uid not in self.touched:
            found = self.store.find_order(order_id)
            if found is None:
                return None
            self.touched[uid] = found
        agg = self.touched[uid]
        assert isinstance(agg, CustomerOrder)
        return agg

    def known_order(self, order_id: str) -> CustomerOrder:
        order = self.order(order_id)
        if order is None:
            raise errors.UnknownOrderError(f"Customer order {order_id!r} is unknown.")
        return order

    def stock_item(self, warehouse: str, sku: str) -> StockItem:
        uid = stock_item_uuid(warehouse, sku)
        if uid not in self.touched:
            found = self.store.find_stock_item(warehouse, sku)
            self.touched[uid] = found if found is not None else StockItem(warehouse=warehouse,
                                                                           sku=sku)
        agg = self.touched[uid]
        assert isinstance(agg, StockItem)
        return agg

    def apply(self, fact: f.Fact) -> None:
        match fact:
            case f.StockLevelSet(warehouse, sku, on_hand):
                self.stock_item(warehouse, sku).set_level(on_hand)
            case f.CustomerOrderPlaced(order_id, number, date, partner, manager, lines):
                if self.order(order_id) is not None:
                    raise errors.OrderExistsError(f"Customer order {order_id!r} was placed before.")
                self.touched[order_uuid(order_id)] = CustomerOrder.place(
                    order_id=order_id, number=number, date=date, partner=partner,
                    manager=manager,
                    lines=[{"sku": ln.sku, "warehouse": ln.warehouse, "quantity": ln.quantity}
                           for ln in lines],
                )
            case f.ReservePlaced(order_id, sku, warehouse, quantity):
                self.known_order(order_id).place_reserve(warehouse, sku, quantity)
            case f.ReserveReleased(order_id, sku, warehouse, quantity):
                self.known_order(order_id).release_reserve(warehouse, sku, quantity)
            case f.OrderShipped(order_id):
                for line in self.known_order(order_id).ship():
                    self.stock_item(line.warehouse, line.sku).consume(line.reserved, order_id)
            case f.OrderCancelled(order_id):
                self.known_order(order_id).cancel()


class ErpIngest:
    def __init__(self, store: ReserveStore) -> None:
        self.store = store

    def ingest(self, envelopes: list[Envelope]) -> IngestResult:
        """Applies the batch in order, or nothing of it. Seen ``event_id``s are duplicates."""
        keys = [receipt_key(e.event_id) for e in envelopes]
        for attempt in range(MAX_ATTEMPTS):
            seen = self.store.receipts(keys)
            try:
                batch, receipts, duplicates = self._apply(envelopes, seen)
            except FactRefusedError:
                # A twin of this batch may have been stored between reading the receipts and
                # loading the aggregates (then "placed before" means "a duplicate"): judge again.
                if set(self.store.receipts(keys)) != set(seen):
                    continue
                raise
            try:
                self.store.save_all(batch.touched.values(), list(receipts.values()))
            except (RecordConflictError, DuplicateReceiptError):
                backoff(attempt)
                continue
            return IngestResult(accepted=len(receipts), duplicates=duplicates)
        raise RetriesExhaustedError(f"an ERP batch lost {MAX_ATTEMPTS} races in a row")

    def _apply(self, envelopes: list[Envelope], seen: dict[str, Receipt]
               ) -> tuple[_Batch, dict[str, Receipt], int]:
        batch = _Batch(self.store)
        receipts: dict[str, Receipt] = {}
        duplicates = 0
        for index, envelope in enumerate(envelopes):
            key = receipt_key(envelope.event_id)
            earlier = seen.get(key) or receipts.get(key)
            if earlier is not None:
                if earlier.fingerprint != envelope.fingerprint:
                    raise FactRefusedError(index, envelope.event_id, errors.InvalidInputError(
                        "this event_id was used before for a different fact",
                        code="event_id_reused",
                    ))
                duplicates += 1
                continue
            try:
                batch.apply(envelope.fact)
            except errors.DomainError as e:
                raise FactRefusedError(index, envelope.event_id, e) from None
            receipts[key] = Receipt(key, envelope.fingerprint, 200, {})
        return batch, receipts, duplicates
