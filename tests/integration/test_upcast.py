"""Stored events keep their old shape; reading them upcasts them to the class's current version.

The test stores events of a version-1 class, evolves the class (a new field, ``class_version =
2`` and ``upcast_v1_v2``), and reads the same stored records back: through the repository (an
aggregate rebuilt from them) and through the notification log (what projections and the relay
read), both as version 2.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import clear_topic_cache, get_topic, register_topic

from services.runtime import Core


class Shipment(Aggregate):
    """Version 1: a shipment knows only how many units it carries."""

    @event("Packed")
    def __init__(self, units: int) -> None:
        self.units = units

    @event("Loaded")
    def load(self, units: int) -> None:
        self.units += units


class ShipmentV2(Aggregate):
    """Version 2: every quantity has a unit of measure; stored v1 events meant pieces."""

    class Packed(Aggregate.Created):
        class_version = 2
        units: int
        measure: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["measure"] = "шт."

    class Loaded(Aggregate.Event):
        class_version = 2
        units: int
        measure: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["measure"] = "шт."

    @event(Packed)
    def __init__(self, units: int, measure: str) -> None:
        self.units = units
        self.measure = measure

    @event(Loaded)
    def load(self, units: int, measure: str) -> None:
        assert measure == self.measure
        self.units += units


def _evolve() -> None:
    """What a deploy of the new code does: the stored topic now names the v2 class."""
    clear_topic_cache()
    register_topic(get_topic(Shipment), ShipmentV2)


def test_a_stored_v1_event_is_read_back_as_v2(core: Core) -> None:
    shipment = Shipment(units=3)
    shipment.load(2)
    core.store.save(shipment)
    stored = core.store.recorder.select_events(shipment.id)
    assert b"measure" not in stored[0].state and b"class_version" not in stored[0].state
    start = core.store.recorder.max_notification_id() or 0

    try:
        _evolve()
        rebuilt: Any = core.store.repository.get(shipment.id)
        logged: list[Any] = [core.store.mapper.to_domain_event(n) for n in
                  core.store.recorder.select_notifications(start=start - 1, limit=10)]
        evolved = ShipmentV2(units=1, measure="кг")
        core.store.save(evolved)
        written = core.store.recorder.select_events(evolved.id)[0].state
    finally:
        clear_topic_cache()

    assert isinstance(rebuilt, ShipmentV2)
    assert (rebuilt.units, rebuilt.measure) == (5, "шт.")
    assert [type(e).__qualname__ for e in logged] == ["ShipmentV2.Packed", "ShipmentV2.Loaded"]
    assert [(e.units, e.measure) for e in logged] == [(3, "шт."), (2, "шт.")]
    assert [e.originator_id for e in logged] == [UUID(str(shipment.id))] * 2
    assert b'"class_version":2' in written.replace(b" ", b"")  # new events say their version
