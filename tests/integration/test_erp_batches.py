"""ERP facts in batches (``ErpIngest.ingest_messages``), on real PostgreSQL, every backend.

A batch holds many messages (Kafka messages); each is applied all or nothing, in order, and
the accepted ones are stored in one transaction. What must hold: a refused message changes
nothing and the others are stored, messages of one order apply in order, an ``event_id``
seen before (in the batch, or stored) is a duplicate, and a batch that fails before its
commit and is delivered again is stored once.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import OperationalError, RecordConflictError

from handlers import erp as erp_module
from handlers.erp import FactRefusedError, IngestResult, Message
from handlers.wire import parse_erp_body
from services import batch_store
from services.runtime import Core
from tests.support import SKU, WAREHOUSE, envelope, uid

pytestmark = pytest.mark.integration


def placed(order_id: str, quantity: int = 10, event_id: str | None = None) -> dict[str, Any]:
    return envelope("CustomerOrderPlaced", {
        "order_id": order_id, "number": f"N-{order_id}", "date": "2020-05-01T09:00:00",
        "partner": "ООО Ромашка", "manager": "ivanov",
        "lines": [{"sku": SKU, "warehouse": WAREHOUSE, "quantity": quantity}]}, event_id)


def reserve(type_: str, order_id: str, quantity: int, event_id: str | None = None
            ) -> dict[str, Any]:
    return envelope(type_, {"order_id": order_id, "sku": SKU, "warehouse": WAREHOUSE,
                            "quantity": quantity}, event_id)


def level(sku: str, on_hand: int) -> dict[str, Any]:
    return envelope("StockLevelSet", {"warehouse": WAREHOUSE, "sku": sku, "on_hand": on_hand})


def message(body: dict[str, Any] | list[dict[str, Any]], cid: str | None = None) -> Message:
    return Message(parse_erp_body(body), cid)


def accepted(outcome: IngestResult | FactRefusedError) -> tuple[int, int]:
    assert isinstance(outcome, IngestResult), outcome
    return outcome.accepted, outcome.duplicates


def head(core: Core) -> int:
    return core.store.recorder.max_notification_id() or 0


def receipts(core: Core, *bodies: dict[str, Any]) -> set[str]:
    found = core.store.receipts([f"erp:{b['event_id']}" for b in bodies])
    return {k.removeprefix("erp:") for k in found}


def correlations(database_url: str, order_id: str) -> list[tuple[int, str]]:
    from domain.ids import order_uuid
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT originator_version, correlation_id FROM event_correlations "
                            "WHERE originator_id = %s ORDER BY 1", (order_uuid(order_id),))
        return [(int(v), str(c)) for v, c in rows.fetchall()]


def test_a_refused_message_mid_batch_changes_nothing_and_the_others_are_stored(
        core: Core, database_url: str) -> None:
    order, sku = uid("o-"), uid("SKU-")
    m1 = [placed(order), reserve("ReservePlaced", order, 2)]
    m2 = [reserve("ReservePlaced", order, 1), reserve("ReserveReleased", order, 50)]  # refused
    m3 = reserve("ReservePlaced", order, 3)
    m4 = level(sku, 7)  # a stock item new in this batch
    m5 = [level(sku, 9), reserve("ReservePlaced", uid("unknown-"), 1)]  # refused
    outcomes = core.erp.ingest_messages([message(m1, "c1"), message(m2, "c2"), message(m3, "c3"),
                                         message(m4, "c4"), message(m5, "c5")])

    assert accepted(outcomes[0]) == (2, 0)
    assert isinstance(outcomes[1], FactRefusedError) and outcomes[1].index == 1
    assert "cannot release 50" in str(outcomes[1])
    assert accepted(outcomes[2]) == (1, 0)
    assert accepted(outcomes[3]) == (1, 0)
    assert isinstance(outcomes[4], FactRefusedError) and outcomes[4].index == 1
    stored = core.store.get_order(order)
    assert stored.held(WAREHOUSE, SKU) == 5  # 2 + 3: nothing of the refused message
    stock = core.store.find_stock_item(WAREHOUSE, sku)
    assert stock is not None and stock.on_hand == 7  # m5's level was rolled back with it
    assert receipts(core, *m1, *m2, m3, m4, *m5) == {b["event_id"] for b in (*m1, m3, m4)}
    # each stored event carries the correlation id of the message that caused it
    assert {c for _, c in correlations(database_url, order)} == {"c1", "c3"}
    assert [v for v, _ in correlations(database_url, order)] == list(range(1, stored.version + 1))


def test_messages_of_one_order_apply_in_order(core: Core) -> None:
    order = uid("o-")
    outcomes = core.erp.ingest_messages([
        message(placed(order, quantity=10)),
        message(reserve("ReservePlaced", order, 4)),
        message(reserve("ReserveReleased", order, 4)),  # valid only after the one before
        message(reserve("ReservePlaced", order, 10)),  # valid only after the release
    ])
    assert [accepted(o) for o in outcomes] == [(1, 0)] * 4
    assert core.store.get_order(order).held(WAREHOUSE, SKU) == 10
    assert core.store.get_order(order).status == "green"


def test_duplicates_in_a_batch_and_across_batches_change_nothing(core: Core) -> None:
    order = uid("o-")
    first, fact = placed(order), reserve("ReservePlaced", order, 2)
    outcomes = core.erp.ingest_messages([message(first), message(fact), message(fact),
                                         message([fact, reserve("ReservePlaced", order, 1)])])
    assert [accepted(o) for o in outcomes] == [(1, 0), (1, 0), (0, 1), (1, 1)]
    assert core.store.get_order(order).held(WAREHOUSE, SKU) == 3
    end = head(core)

    again = core.erp.ingest_messages([message(first), message(fact)])  # the batch redelivered
    assert [accepted(o) for o in again] == [(0, 1), (0, 1)]
    assert head(core) == end
    assert core.store.get_order(order).held(WAREHOUSE, SKU) == 3


def test_an_event_id_reused_for_another_fact_in_the_batch_is_refused(core: Core) -> None:
    order = uid("o-")
    fact = reserve("ReservePlaced", order, 2)
    twisted = reserve("ReservePlaced", order, 5, event_id=fact["event_id"])
    outcomes = core.erp.ingest_messages([message(placed(order)), message(fact),
                                         message(twisted)])
    assert isinstance(outcomes[2], FactRefusedError)
    assert outcomes[2].error.code == "event_id_reused"
    assert core.store.get_order(order).held(WAREHOUSE, SKU) == 2


def test_a_batch_that_fails_before_its_commit_is_stored_once_when_delivered_again(
        core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database goes away during the save: nothing is stored, the consumer does not
    commit its offsets and the batch comes again; it is then stored once, and a third
    delivery (a crash after the commit, before the offsets were) is all duplicates."""
    order = uid("o-")
    batch = [message(placed(order)), message(reserve("ReservePlaced", order, 4))]
    real_save = batch_store.save_batch
    calls: list[int] = []

    def failing_save(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(erp_module, "save_batch", failing_save)
    with pytest.raises(OperationalError):
        core.erp.ingest_messages(batch)
    assert calls and core.store.find_order(order) is None
    assert core.store.receipts([f"erp:{e.event_id}" for m in batch for e in m.envelopes]) == {}

    monkeypatch.setattr(erp_module, "save_batch", real_save)
    assert [accepted(o) for o in core.erp.ingest_messages(batch)] == [(1, 0), (1, 0)]
    end = head(core)
    assert [accepted(o) for o in core.erp.ingest_messages(batch)] == [(0, 1), (0, 1)]
    assert head(core) == end
    assert core.store.get_order(order).held(WAREHOUSE, SKU) == 4


def test_a_batch_that_loses_a_race_is_loaded_again_and_stored_once(
        core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer (a give, an HTTP post of the same facts) stored first: the save fails
    as a whole, and the batch is judged again on what is stored now."""
    order = uid("o-")
    core.erp.ingest(parse_erp_body([placed(order)]))
    fact = reserve("ReservePlaced", order, 3)
    real_save = batch_store.save_batch
    raced: list[int] = []

    def racing_save(*args: Any, **kwargs: Any) -> None:
        if not raced:  # the twin lands between our load and our save
            raced.append(1)
            core.erp.ingest(parse_erp_body([fact]))
        real_save(*args, **kwargs)

    monkeypatch.setattr(erp_module, "save_batch", racing_save)
    [outcome] = core.erp.ingest_messages([message(fact)])
    assert accepted(outcome) == (0, 1)  # judged again: the twin's receipt is there now
    assert core.store.get_order(order).held(WAREHOUSE, SKU) == 3


def test_a_batch_that_keeps_losing_races_is_stored_message_by_message(
        core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    order = uid("o-")
    real_save = batch_store.save_batch
    monkeypatch.setattr(erp_module, "backoff", lambda attempt: None)

    def save(store: Any, aggregates: Any, receipts: Any, correlations: Any) -> None:
        if len(receipts) > 1:  # a whole batch always conflicts; one message alone does not
            raise RecordConflictError("lost again")
        real_save(store, aggregates, receipts, correlations)

    monkeypatch.setattr(erp_module, "save_batch", save)
    outcomes = core.erp.ingest_messages([message(placed(order)),
                                         message(reserve("ReservePlaced", order, 2))])
    assert [accepted(o) for o in outcomes] == [(1, 0), (1, 0)]
    assert core.store.get_order(order).held(WAREHOUSE, SKU) == 2


def test_a_shipped_order_consumes_its_stock_in_a_batch(core: Core) -> None:
    order, sku = uid("o-"), uid("SKU-")
    core.erp.ingest(parse_erp_body([
        envelope("StockLevelSet", {"warehouse": WAREHOUSE, "sku": sku, "on_hand": 10}),
        envelope("CustomerOrderPlaced", {
            "order_id": order, "number": "N1", "date": "2020-05-01T09:00:00",
            "partner": "p", "manager": "ivanov",
            "lines": [{"sku": sku, "warehouse": WAREHOUSE, "quantity": 5}]}),
        envelope("ReservePlaced", {"order_id": order, "sku": sku, "warehouse": WAREHOUSE,
                                   "quantity": 4})]))
    [outcome] = core.erp.ingest_messages([message(envelope("OrderShipped",
                                                           {"order_id": order}))])
    assert accepted(outcome) == (1, 0)
    stock = core.store.find_stock_item(WAREHOUSE, sku)
    assert stock is not None and stock.on_hand == 6
    assert core.store.get_order(order).status == "shipped"
