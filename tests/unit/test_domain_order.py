"""Unit tests for the customer order aggregate: its reserves, its status and the events."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain import errors
from domain.ids import order_uuid
from domain.order import CANCELLED, GREEN, NEW, SHIPPED, CustomerOrder

ORDER_DATE = datetime(2020, 4, 30, 8, 42, 28)


def place(
    order_id: str = "o1",
    manager: str = "alice",
    lines: list[tuple[str, str, int]] | None = None,
) -> CustomerOrder:
    """Places an order; ``lines`` are (warehouse, sku, quantity)."""
    specs = lines if lines is not None else [("W1", "S1", 5)]
    return CustomerOrder.place(
        order_id=order_id,
        number=f"N-{order_id}",
        date=ORDER_DATE,
        partner="partner",
        manager=manager,
        lines=[{"warehouse": w, "sku": s, "quantity": q} for w, s, q in specs],
    )


def event_names(order: CustomerOrder) -> list[str]:
    return [type(e).__name__ for e in order.collect_events()]


def status_changes(events: list[Any]) -> list[tuple[str | None, str]]:
    return [
        (e.previous_status, e.status)
        for e in events
        if type(e).__name__ == "OrderStatusChanged"
    ]


def state_of(order: CustomerOrder) -> tuple[int, str, dict[tuple[str, str], tuple[int, int]]]:
    return (
        order.version,
        order.status,
        {key: (ln.ordered, ln.reserved) for key, ln in order.lines.items()},
    )


# -- placing -------------------------------------------------------------------------------


def test_placed_order_is_new_with_nothing_reserved() -> None:
    order = place(lines=[("W1", "S1", 5), ("W1", "S2", 2)])

    assert order.status == NEW
    assert order.is_active
    assert order.held("W1", "S1") == 0
    assert order.shortage("W1", "S1") == 5
    assert order.shortage("W1", "S2") == 2
    events = list(order.collect_events())
    assert [type(e).__name__ for e in events] == ["OrderPlaced", "OrderStatusChanged"]
    assert status_changes(events) == [(None, NEW)]


def test_placing_merges_lines_naming_the_same_stock_item() -> None:
    order = place(lines=[("W1", "S1", 2), ("W2", "S1", 4), ("W1", "S1", 3)])

    assert len(order.lines) == 2
    line = order.line("W1", "S1")
    assert line is not None
    assert line.ordered == 5
    assert order.shortage("W2", "S1") == 4


def test_placing_without_lines_is_refused() -> None:
    with pytest.raises(errors.InvalidInputError) as info:
        place(lines=[])
    assert info.value.code == "no_lines"


@pytest.mark.parametrize("quantity", [0, -1])
def test_placing_a_line_below_one_is_refused(quantity: int) -> None:
    with pytest.raises(errors.InvalidQuantityError):
        place(lines=[("W1", "S1", 3), ("W1", "S2", quantity)])


def test_order_id_is_derived_from_the_erp_order_id() -> None:
    assert place("o1").id == place("o1").id == order_uuid("o1")
    assert place("o1").id != place("o2").id


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["W1", "W2"]), st.sampled_from(["S1", "S2", "СТ1"]),
                  st.integers(1, 50)),
        min_size=1,
        max_size=6,
    )
)
def test_placed_lines_sum_per_stock_item(specs: list[tuple[str, str, int]]) -> None:
    order = place(lines=specs)

    expected: Counter[tuple[str, str]] = Counter()
    for w, s, q in specs:
        expected[(w, s)] += q
    assert {(ln.warehouse, ln.sku): ln.ordered for ln in order.lines.values()} == expected
    assert all(ln.reserved == 0 for ln in order.lines.values())
    assert order.status == NEW


# -- reserves placed and released by the ERP ------------------------------------------------


def test_reserve_placed_within_ordered_is_held() -> None:
    order = place(lines=[("W1", "S1", 5)])
    order.collect_events()

    order.place_reserve("W1", "S1", 3)

    assert order.held("W1", "S1") == 3
    assert order.shortage("W1", "S1") == 2
    assert order.status == NEW
    assert event_names(order) == ["ReservePlaced"]


def test_reserve_placed_beyond_ordered_is_refused_and_changes_nothing() -> None:
    order = place(lines=[("W1", "S1", 5)])
    order.place_reserve("W1", "S1", 4)
    order.collect_events()
    before = state_of(order)

    with pytest.raises(errors.ExceedsOrderedError) as info:
        order.place_reserve("W1", "S1", 2)

    assert info.value.code == "exceeds_ordered"
    assert state_of(order) == before
    assert event_names(order) == []


def test_reserve_placed_for_a_stock_item_the_order_lacks_is_refused() -> None:
    order = place(lines=[("W1", "S1", 5)])
    order.collect_events()

    with pytest.raises(errors.NoSuchLineError):
        order.place_reserve("W2", "S1", 1)
    assert event_names(order) == []


def test_releasing_held_reserve_lowers_it() -> None:
    order = place(lines=[("W1", "S1", 5)])
    order.place_reserve("W1", "S1", 4)
    order.collect_events()

    order.release_reserve("W1", "S1", 3)

    assert order.held("W1", "S1") == 1
    assert event_names(order) == ["ReserveReleased"]


def test_releasing_more_than_held_is_refused_and_changes_nothing() -> None:
    order = place(lines=[("W1", "S1", 5)])
    order.place_reserve("W1", "S1", 2)
    order.collect_events()
    before = state_of(order)

    with pytest.raises(errors.ReleaseExceedsReserveError):
        order.release_reserve("W1", "S1", 3)

    assert state_of(order) == before
    assert event_names(order) == []


@pytest.mark.parametrize(
    ("method", "start"),
    [("place_reserve", 0), ("release_reserve", 5), ("move_out", 5), ("move_in", 0)],
)
def test_a_quantity_below_one_is_refused_by_every_reserve_change(method: str,
                                                                 start: int) -> None:
    order = place(lines=[("W1", "S1", 5)])
    if start:
        order.place_reserve("W1", "S1", start)
    change = getattr(order, method)
    extra: tuple[str, ...] = ("r1", "o2") if method.startswith("move") else ()

    order.collect_events()

    with pytest.raises(errors.DomainError):
        change("W1", "S1", -1, *extra)

    assert 0 <= order.held("W1", "S1") <= 5
    assert event_names(order) == []


# -- status ---------------------------------------------------------------------------------


def test_order_turns_green_only_when_every_line_is_fully_reserved() -> None:
    order = place(lines=[("W1", "S1", 2), ("W1", "S2", 3)])
    order.collect_events()

    order.place_reserve("W1", "S1", 2)
    assert order.status == NEW
    assert status_changes(list(order.collect_events())) == []

    order.place_reserve("W1", "S2", 2)
    assert order.status == NEW
    assert status_changes(list(order.collect_events())) == []

    order.place_reserve("W1", "S2", 1)
    assert order.status == GREEN
    events = list(order.collect_events())
    assert [type(e).__name__ for e in events] == ["ReservePlaced", "OrderStatusChanged"]
    assert status_changes(events) == [(NEW, GREEN)]


def test_green_order_goes_back_to_new_when_a_reserve_is_released() -> None:
    order = place(lines=[("W1", "S1", 2)])
    order.place_reserve("W1", "S1", 2)
    order.collect_events()

    order.release_reserve("W1", "S1", 1)

    assert order.status == NEW
    assert status_changes(list(order.collect_events())) == [(GREEN, NEW)]


def test_status_change_event_carries_the_order_and_its_lines() -> None:
    order = place(lines=[("W1", "S1", 2)])
    order.collect_events()

    order.place_reserve("W1", "S1", 2)

    changed = [e for e in order.collect_events() if type(e).__name__ == "OrderStatusChanged"]
    assert len(changed) == 1
    event: Any = changed[0]
    assert event.order_id == "o1"
    assert event.number == "N-o1"
    assert event.lines == [
        {"sku": "S1", "warehouse": "W1", "ordered": 2, "reserved": 2, "shortage": 0}
    ]


def test_shipping_consumes_reserves_and_is_final() -> None:
    order = place(lines=[("W1", "S1", 2), ("W1", "S2", 3)])
    order.place_reserve("W1", "S1", 2)
    order.collect_events()

    consumed = order.ship()

    assert [(ln.warehouse, ln.sku, ln.reserved) for ln in consumed] == [("W1", "S1", 2)]
    assert order.status == SHIPPED
    assert not order.is_active
    assert order.held("W1", "S1") == 0
    assert order.shortage("W1", "S2") == 0
    events = list(order.collect_events())
    assert [type(e).__name__ for e in events] == ["OrderShipped", "OrderStatusChanged"]
    assert status_changes(events) == [(NEW, SHIPPED)]


def test_cancelling_releases_reserves_and_is_final() -> None:
    order = place(lines=[("W1", "S1", 2)])
    order.place_reserve("W1", "S1", 2)
    order.collect_events()

    order.cancel()

    assert order.status == CANCELLED
    assert order.held("W1", "S1") == 0
    assert all(view["shortage"] == 0 for view in order.lines_view())
    assert status_changes(list(order.collect_events())) == [(GREEN, CANCELLED)]


@pytest.mark.parametrize("close", ["ship", "cancel"])
@pytest.mark.parametrize(
    "change",
    ["place_reserve", "release_reserve", "ship", "cancel", "move_out", "move_in"],
)
def test_closed_order_refuses_every_further_change(close: str, change: str) -> None:
    order = place(lines=[("W1", "S1", 5)])
    order.place_reserve("W1", "S1", 2)
    getattr(order, close)()
    order.collect_events()
    before = state_of(order)
    args: dict[str, tuple[object, ...]] = {
        "place_reserve": ("W1", "S1", 1),
        "release_reserve": ("W1", "S1", 1),
        "ship": (),
        "cancel": (),
        "move_out": ("W1", "S1", 1, "r1", "o2"),
        "move_in": ("W1", "S1", 1, "r1", "o2"),
    }

    with pytest.raises(errors.OrderClosedError):
        getattr(order, change)(*args[change])

    assert state_of(order) == before
    assert event_names(order) == []


# -- the order under any sequence of ERP facts ---------------------------------------------

LINES = [("W1", "S1"), ("W1", "S2"), ("W2", "S1")]


class OrderFactsMachine(RuleBasedStateMachine):
    """Feeds an order random ERP facts and checks every invariant after each."""

    def __init__(self) -> None:
        super().__init__()
        self.order = place()
        self.ordered: dict[tuple[str, str], int] = {}
        self.reserved: dict[tuple[str, str], int] = {}
        self.closed: str | None = None
        self.last_status: str = NEW

    @initialize(ordered=st.lists(st.integers(1, 6), min_size=1, max_size=3))
    def place_order(self, ordered: list[int]) -> None:
        specs = [(w, s, q) for (w, s), q in zip(LINES, ordered, strict=False)]
        self.order = place(lines=specs)
        self.ordered = {(w, s): q for w, s, q in specs}
        self.reserved = dict.fromkeys(self.ordered, 0)
        events = list(self.order.collect_events())
        assert status_changes(events) == [(None, NEW)]
        self.last_status = NEW

    def expected_status(self) -> str:
        if self.closed is not None:
            return self.closed
        short = any(self.reserved[k] < self.ordered[k] for k in self.ordered)
        return NEW if short else GREEN

    def check_step(self, fact_event: str | None) -> None:
        """One fact event on success (none on refusal), plus one status event per change."""
        events = list(self.order.collect_events())
        names = [type(e).__name__ for e in events if type(e).__name__ != "OrderStatusChanged"]
        assert names == ([fact_event] if fact_event else [])
        now = self.expected_status()
        expected = [] if now == self.last_status else [(self.last_status, now)]
        assert status_changes(events) == expected
        self.last_status = now

    def pick(self, index: int) -> tuple[str, str]:
        keys = list(self.ordered)
        return keys[index % len(keys)]

    @rule(index=st.integers(0, 2), quantity=st.integers(1, 8))
    def reserve_placed(self, index: int, quantity: int) -> None:
        w, s = self.pick(index)
        version = self.order.version
        try:
            self.order.place_reserve(w, s, quantity)
        except errors.OrderClosedError:
            assert self.closed is not None
        except errors.ExceedsOrderedError:
            assert self.closed is None
            assert self.reserved[(w, s)] + quantity > self.ordered[(w, s)]
        else:
            assert self.closed is None
            assert self.reserved[(w, s)] + quantity <= self.ordered[(w, s)]
            self.reserved[(w, s)] += quantity
            self.check_step("ReservePlaced")
            return
        assert self.order.version == version
        self.check_step(None)

    @rule(index=st.integers(0, 2), quantity=st.integers(1, 8))
    def reserve_released(self, index: int, quantity: int) -> None:
        w, s = self.pick(index)
        version = self.order.version
        try:
            self.order.release_reserve(w, s, quantity)
        except errors.OrderClosedError:
            assert self.closed is not None
        except errors.ReleaseExceedsReserveError:
            assert self.closed is None
            assert quantity > self.reserved[(w, s)]
        else:
            assert self.closed is None
            assert quantity <= self.reserved[(w, s)]
            self.reserved[(w, s)] -= quantity
            self.check_step("ReserveReleased")
            return
        assert self.order.version == version
        self.check_step(None)

    @rule(quantity=st.integers(1, 3))
    def reserve_placed_for_unknown_line(self, quantity: int) -> None:
        version = self.order.version
        with pytest.raises((errors.NoSuchLineError, errors.OrderClosedError)):
            self.order.place_reserve("W9", "S9", quantity)
        assert self.order.version == version
        self.check_step(None)

    @rule(how=st.sampled_from([SHIPPED, CANCELLED]))
    def close(self, how: str) -> None:
        version = self.order.version
        try:
            if how == SHIPPED:
                consumed = self.order.ship()
                assert sum(ln.reserved for ln in consumed) == sum(self.reserved.values())
            else:
                self.order.cancel()
        except errors.OrderClosedError:
            assert self.closed is not None
            assert self.order.version == version
            self.check_step(None)
            return
        assert self.closed is None
        self.closed = how
        self.reserved = dict.fromkeys(self.reserved, 0)
        self.check_step("OrderShipped" if how == SHIPPED else "OrderCancelled")

    @invariant()
    def reserves_stay_between_zero_and_ordered(self) -> None:
        for (w, s), ordered in self.ordered.items():
            held = self.order.held(w, s)
            assert 0 <= held <= ordered
            assert held == self.reserved[(w, s)]
            assert self.order.shortage(w, s) == (0 if self.closed else ordered - held)

    @invariant()
    def status_follows_the_lines(self) -> None:
        assert self.order.status == self.expected_status()


OrderFactsMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=25, deadline=None
)
TestOrderFactsMachine = OrderFactsMachine.TestCase
