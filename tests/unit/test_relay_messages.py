"""The relay builds ``reserve.events`` and ``order.status`` messages straight from the stored
state; they must be byte for byte what decoding to domain events and encoding them gives
(``event_message``, the reference), for every event type the domain stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Notification
from eventsourcing.utils import clear_topic_cache, get_topic, register_topic

from domain.exchange import give_reserve, request_reserve
from domain.order import CustomerOrder
from domain.stock import StockItem
from projections.relay import (
    MessageBuilder,
    Row,
    _NotFast,
    encode,
    event_message,
    status_message,
)

WAREHOUSE = "Основной склад"
NOW = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TTL = timedelta(hours=24)


def new_app() -> Application[UUID]:
    return Application[UUID](env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def _order(order_id: str, manager: str, sku: str, quantity: int,
           lines: list[dict[str, Any]] | None = None) -> CustomerOrder:
    return CustomerOrder.place(order_id=order_id, number=f"N-{order_id}",
                               date=datetime(2020, 4, 30, 8, 42, 28), partner="ООО «Ромашка» \"x\"",
                               manager=manager,
                               lines=lines or [{"sku": sku, "warehouse": WAREHOUSE,
                                                "quantity": quantity}])


def every_event_type() -> list[Aggregate]:
    """Aggregates whose pending events cover every event class of the domain."""
    sku = "SKU-😀-\u2028"
    stock = StockItem(warehouse=WAREHOUSE, sku=sku)
    stock.set_level(10)
    owner = _order("a-1", "petrova", sku, 8)
    owner.place_reserve(WAREHOUSE, sku, 8)
    requester = _order("b-1", "ivanov", sku, 8)
    given = request_reserve(request_key="r-1", from_order=owner, to_order=requester, sku=sku,
                            warehouse=WAREHOUSE, quantity=3, actor="ivanov", now=NOW, ttl=TTL)
    give_reserve(request=given, from_order=owner, to_order=requester, quantity=2,
                 actor="petrova", now=NOW)
    declined = request_reserve(request_key="r-2", from_order=owner, to_order=requester,
                               sku=sku, warehouse=WAREHOUSE, quantity=1, actor="ivanov",
                               now=NOW, ttl=TTL)
    declined.decline("не отдам \\ \n", "petrova", NOW)
    cancelled = request_reserve(request_key="r-3", from_order=owner, to_order=requester,
                                sku=sku, warehouse=WAREHOUSE, quantity=1, actor="ivanov",
                                now=NOW, ttl=TTL)
    cancelled.cancel("ivanov", NOW)
    expired = request_reserve(request_key="r-4", from_order=owner, to_order=requester,
                              sku=sku, warehouse=WAREHOUSE, quantity=1, actor="ivanov",
                              now=NOW, ttl=TTL)
    expired.expire(NOW + 2 * TTL)
    owner.release_reserve(WAREHOUSE, sku, 1)
    for line in owner.ship():
        stock.consume(line.reserved, owner.order_id)
    gone = _order("c-1", "sidorov", sku, 1, lines=[
        {"sku": sku, "warehouse": WAREHOUSE, "quantity": 1},
        {"sku": "other", "warehouse": "W2", "quantity": 2}])
    gone.cancel()
    return [stock, owner, requester, given, declined, cancelled, expired, gone]


def _rows(app: Application[UUID], aggregates: list[Aggregate]) -> list[Row]:
    rows = []
    for position, domain_event in enumerate(
            (e for a in aggregates for e in a.collect_events()), start=1):
        stored = app.mapper.to_stored_event(domain_event)
        rows.append(Row(position, UUID(str(stored.originator_id)), stored.originator_version,
                        stored.topic, stored.state, None))
    return rows


def _reference(app: Application[UUID], row: Row) -> dict[str, Any]:
    return event_message(app.mapper.to_domain_event(Notification(
        id=row.id, originator_id=row.originator_id, originator_version=row.originator_version,
        topic=row.topic, state=row.state)), row.id)


def test_every_event_type_is_covered() -> None:
    app = new_app()
    types = {_reference(app, row)["type"] for row in _rows(app, every_event_type())}
    assert types == {
        "StockItemRegistered", "StockLevelSet", "StockConsumed",
        "OrderPlaced", "OrderStatusChanged", "ReservePlaced", "ReserveReleased",
        "ReserveMovedOut", "ReserveMovedIn", "OrderShipped", "OrderCancelled",
        "ReserveRequested", "ReserveGiven", "ReserveRequestDeclined",
        "ReserveRequestCancelled", "ReserveRequestExpired",
    }


def _stdlib(value: dict[str, object]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def test_messages_from_the_stored_state_are_the_bytes_of_the_decoded_events() -> None:
    app = new_app()
    builder = MessageBuilder(app)
    assert builder.fast
    statuses = 0
    for row in _rows(app, every_event_type()):
        expected = _reference(app, row)
        got = builder._fast(row)  # the fast path itself, not its fallback
        assert encode(got) == encode(expected), expected["type"]
        # orjson writes what json.dumps writes for these values (non-ASCII text included)
        assert encode(got) == _stdlib(expected), expected["type"]
        if expected["type"] == "OrderStatusChanged":
            statuses += 1
            assert encode(status_message(got)) == encode(status_message(expected))
            assert encode(status_message(got)) == _stdlib(status_message(expected))
    assert statuses >= 6


def test_values_the_transcoder_tags_come_out_as_the_decoded_objects_would() -> None:
    """A UUID in an event's data (none of ours has one yet) and a datetime with an offset."""

    class Thing(Aggregate):
        @event("Made")
        def __init__(self, ref: UUID, at: datetime, nested: list[dict[str, Any]]) -> None:
            self.ref = ref

    app = new_app()
    thing = Thing(ref=uuid4(), at=datetime(2021, 1, 2, 3, 4, 5, tzinfo=UTC) + timedelta(0),
                  nested=[{"when": NOW, "ids": [uuid4()]}])
    row = _rows(app, [thing])[0]
    assert encode(MessageBuilder(app)._fast(row)) == encode(_reference(app, row))


class Parcel(Aggregate):
    @event("Packed")
    def __init__(self, units: int) -> None:
        self.units = units


class ParcelV2(Aggregate):
    class Packed(Aggregate.Created):
        class_version = 2
        units: int
        measure: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["measure"] = "шт."

    @event(Packed)
    def __init__(self, units: int, measure: str) -> None:
        self.units = units


def test_an_event_that_needs_upcasting_goes_through_the_mapper() -> None:
    app = new_app()
    row = _rows(app, [Parcel(units=3)])[0]
    clear_topic_cache()
    register_topic(get_topic(Parcel), ParcelV2)
    try:
        message = MessageBuilder(app).message(row)
        assert message == _reference(app, row)
        assert message["data"] == {"units": 3, "measure": "шт."}
        assert message["type"] == "Packed"
    finally:
        clear_topic_cache()


def test_a_store_with_a_compressor_is_read_through_the_mapper() -> None:
    app = Application[UUID](env={"PERSISTENCE_MODULE": "eventsourcing.popo",
                                 "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor"})
    builder = MessageBuilder(app)
    assert not builder.fast
    for row in _rows(app, every_event_type())[:5]:
        assert encode(builder.message(row)) == encode(_reference(app, row))


def test_a_tag_the_fast_path_does_not_know_goes_through_the_mapper() -> None:
    app = new_app()
    state = (b'{"timestamp":{"_type_":"datetime_iso","_data_":"2024-03-01T12:00:00+00:00"},'
             b'"units":{"_type_":"decimal_str","_data_":"1.5"}}')
    topic = get_topic(Parcel.Packed)  # type: ignore[attr-defined]
    row = Row(1, uuid4(), 1, topic, state, None)
    builder = MessageBuilder(app)
    with pytest.raises(_NotFast):
        builder._fast(row)
    assert builder.message(row) == _reference(app, row)
