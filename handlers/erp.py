"""ERP facts: applied all-or-nothing per batch, idempotent by ``event_id``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import RecordConflictError

from domain import errors
from domain import facts as f
from domain.ids import order_uuid, stock_item_uuid
from domain.order import CustomerOrder
from domain.stock import StockItem
from handlers.commands import MAX_ATTEMPTS, RetriesExhaustedError, backoff
from services.batch_store import load_events, save_batch
from services.eventstore import DuplicateReceiptError, Receipt, ReserveStore
from services.tracing import current_correlation_id


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


def _replay(events: Iterable[Any]) -> Aggregate | None:
    """The aggregate its events make (eventsourcing's ``project_aggregate`` without its
    per-event protocol check, which cost more than the event)."""
    aggregate = None
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class _Batch:
    """The aggregates one batch touches, loaded once and changed cumulatively.

    A batch holds one or more *messages* (a Kafka message, an HTTP call), each applied all or
    nothing: ``begin()`` marks where each aggregate stood, ``rollback()`` puts every aggregate
    the message touched back there (its pending events too), ``commit()`` keeps the changes.
    Aggregates are rebuilt from the events they were loaded from, so the rare refusal costs a
    replay of a few events and the common case costs nothing.
    """

    def __init__(self, store: ReserveStore,
                 loaded: dict[UUID, list[DomainEventProtocol[UUID]]] | None = None) -> None:
        self.store = store
        self.touched: dict[UUID, Aggregate] = {}
        self.loaded: dict[UUID, list[DomainEventProtocol[UUID]]] = (
            {} if loaded is None else loaded)
        self.looked_up: set[UUID] = set(self.loaded) if loaded is not None else set()
        self.marks: dict[UUID, int | None] = {}  # this message's starting points

    # -- loading --------------------------------------------------------------------------------

    def preload(self, ids: Iterable[UUID]) -> None:
        """Loads, with one query, the aggregates of ``ids`` not looked up yet."""
        wanted = [i for i in dict.fromkeys(ids) if i not in self.looked_up]
        if wanted:
            self.loaded.update(load_events(self.store, wanted))
            self.looked_up.update(wanted)

    def _get(self, uid: UUID) -> Aggregate | None:
        if uid not in self.marks:
            agg = self.touched.get(uid)
            self.marks[uid] = None if agg is None else len(agg.pending_events)
        if uid in self.touched:
            return self.touched[uid]
        self.preload((uid,))
        events = self.loaded.get(uid)
        if not events:
            return None
        found = cast(Aggregate, _replay(events))
        self.touched[uid] = found
        self.marks[uid] = 0
        return found

    def order(self, order_id: str) -> CustomerOrder | None:
        agg = self._get(order_uuid(order_id))
        assert agg is None or isinstance(agg, CustomerOrder)
        return agg

    def known_order(self, order_id: str) -> CustomerOrder:
        order = self.order(order_id)
        if order is None:
            raise errors.UnknownOrderError(f"Customer order {order_id!r} is unknown.")
        return order

    def stock_item(self, warehouse: str, sku: str) -> StockItem:
        uid = stock_item_uuid(warehouse, sku)
        agg = self._get(uid)
        if agg is None:
            agg = self.touched[uid] = StockItem(warehouse=warehouse, sku=sku)
        assert isinstance(agg, StockItem)
        return agg

    # -- one message at a time ------------------------------------------------------------------

    def begin(self) -> None:
        self.marks = {}

    def commit(self) -> list[tuple[UUID, int]]:
        """Keeps the message's changes; the (aggregate id, version) of the events it caused."""
        caused: list[tuple[UUID, int]] = []
        for uid, mark in self.marks.items():
            agg = self.touched.get(uid)
            if agg is not None:
                caused.extend((uid, e.originator_version)
                              for e in agg.pending_events[mark or 0:])
        self.marks = {}
        return caused

    def rollback(self) -> None:
        """Puts back every aggregate the message touched as it was before the message."""
        for uid, mark in self.marks.items():
            agg = self.touched.pop(uid, None)
            if agg is None or mark is None:
                continue  # it was not there before this message
            kept = agg.pending_events[:mark]
            rebuilt = _replay([*self.loaded.get(uid, ()), *kept])
            if rebuilt is not None:
                rebuilt.pending_events[:] = kept
                self.touched[uid] = rebuilt
        self.marks = {}

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


def aggregate_ids(facts: Iterable[f.Fact]) -> list[UUID]:
    """The aggregates these facts name (an order shipped also touches its lines' stock items,
    which are known only once the order is loaded)."""
    ids: list[UUID] = []
    for fact in facts:
        if isinstance(fact, f.StockLevelSet):
            ids.append(stock_item_uuid(fact.warehouse, fact.sku))
        else:
            ids.append(order_uuid(fact.order_id))
    return ids


def _shipped_stock_ids(batch: _Batch, facts: Sequence[f.Fact]) -> list[UUID]:
    """The stock items that the orders shipped in ``facts`` hold lines of: from the stored
    order, or from the order placed earlier in the same facts."""
    placed = {fact.order_id: fact for fact in facts if isinstance(fact, f.CustomerOrderPlaced)}
    ids: list[UUID] = []
    for fact in facts:
        if not isinstance(fact, f.OrderShipped):
            continue
        if fact.order_id in placed:
            ids.extend(stock_item_uuid(ln.warehouse, ln.sku) for ln in placed[fact.order_id].lines)
        events = batch.loaded.get(order_uuid(fact.order_id))
        if events:
            order = _replay(events)
            if isinstance(order, CustomerOrder):
                ids.extend(stock_item_uuid(ln.warehouse, ln.sku) for ln in order.lines.values())
    return ids


@dataclass(frozen=True)
class Message:
    """One unit of ERP facts, applied all or nothing: one Kafka message, one HTTP call."""

    envelopes: list[Envelope]
    correlation_id: str | None = None


Outcome = IngestResult | FactRefusedError


class ErpIngest:
    def __init__(self, store: ReserveStore) -> None:
        self.store = store

    def ingest(self, envelopes: list[Envelope]) -> IngestResult:
        """Applies the batch in order, or nothing of it. Seen ``event_id``s are duplicates."""
        [outcome] = self._ingest([Message(envelopes, current_correlation_id())])
        if isinstance(outcome, FactRefusedError):
            raise outcome
        return outcome

    def ingest_messages(self, messages: Sequence[Message]) -> list[Outcome]:
        """Applies each message all or nothing, in order, and stores every accepted one in one
        transaction: a refused message (its ``FactRefusedError`` in the answer) changes
        nothing, the others are stored. When the batch keeps losing races to other writers,
        the messages are stored one by one instead (each can still be refused on its own)."""
        if not messages:
            return []
        try:
            return self._ingest(messages)
        except RetriesExhaustedError:
            if len(messages) == 1:
                raise
        outcomes: list[Outcome] = []
        for message in messages:
            outcomes.extend(self._ingest([message]))
        return outcomes

    def _ingest(self, messages: Sequence[Message]) -> list[Outcome]:
        keys = [receipt_key(e.event_id) for m in messages for e in m.envelopes]
        facts = [e.fact for m in messages for e in m.envelopes]
        for attempt in range(MAX_ATTEMPTS):
            seen = self.store.receipts(keys)
            batch = _Batch(self.store)
            batch.preload(aggregate_ids(facts))
            if any(isinstance(fact, f.OrderShipped) for fact in facts):
                batch.preload(_shipped_stock_ids(batch, facts))
            outcomes, receipts, correlations = self._apply(batch, messages, seen)
            if any(isinstance(o, FactRefusedError) for o in outcomes) \
                    and set(self.store.receipts(keys)) != set(seen):
                # A twin of a message may have been stored between reading the receipts and
                # loading the aggregates (then "placed before" means "a duplicate"): again.
                continue
            try:
                save_batch(self.store, batch.touched.values(), receipts, correlations)
            except (RecordConflictError, DuplicateReceiptError):
                backoff(attempt)
                continue
            return outcomes
        raise RetriesExhaustedError(f"an ERP batch lost {MAX_ATTEMPTS} races in a row")

    @staticmethod
    def _apply(batch: _Batch, messages: Sequence[Message], seen: dict[str, Receipt]
               ) -> tuple[list[Outcome], list[Receipt], dict[tuple[UUID, int], str]]:
        outcomes: list[Outcome] = []
        receipts: dict[str, Receipt] = {}
        correlations: dict[tuple[UUID, int], str] = {}
        for message in messages:
            batch.begin()
            mine: dict[str, Receipt] = {}
            try:
                duplicates = ErpIngest._apply_message(batch, message.envelopes, seen,
                                                      receipts, mine)
            except FactRefusedError as refused:
                batch.rollback()
                outcomes.append(refused)
                continue
            caused = batch.commit()
            if message.correlation_id:
                for key in caused:
                    correlations[key] = message.correlation_id
            receipts.update(mine)
            outcomes.append(IngestResult(accepted=len(mine), duplicates=duplicates))
        return outcomes, list(receipts.values()), correlations

    @staticmethod
    def _apply_message(batch: _Batch, envelopes: list[Envelope], seen: dict[str, Receipt],
                       earlier: dict[str, Receipt], mine: dict[str, Receipt]) -> int:
        duplicates = 0
        for index, envelope in enumerate(envelopes):
            key = receipt_key(envelope.event_id)
            before = seen.get(key) or earlier.get(key) or mine.get(key)
            if before is not None:
                if before.fingerprint != envelope.fingerprint:
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
            mine[key] = Receipt(key, envelope.fingerprint, 200, {})
        return duplicates
