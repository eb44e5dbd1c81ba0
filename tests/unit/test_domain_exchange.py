"""Unit tests for giving a reserve: the move between two orders and what it must conserve."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from domain import errors
from domain.exchange import give_reserve, request_reserve
from domain.order import GREEN, NEW, CustomerOrder
from domain.request import CANCELLED, DECLINED, EXPIRED, GIVEN, PENDING, ReserveRequest
from domain.stock import StockItem

ORDER_DATE = datetime(2020, 4, 30, 8, 42, 28)
NOW = datetime(2024, 3, 1, 12, 0, 0)
TTL = timedelta(hours=24)
OWNER = "alice"
REQUESTER = "bob"


def place(order_id: str, manager: str, ordered: int, reserved: int = 0) -> CustomerOrder:
    order = CustomerOrder.place(
        order_id=order_id,
        number=f"N-{order_id}",
        date=ORDER_DATE,
        partner="partner",
        manager=manager,
        lines=[{"warehouse": "W1", "sku": "S1", "quantity": ordered}],
    )
    if reserved:
        order.place_reserve("W1", "S1", reserved)
    order.collect_events()
    return order


def ask(from_order: CustomerOrder, to_order: CustomerOrder, quantity: int,
        key: str = "k1") -> ReserveRequest:
    request = request_reserve(
        request_key=key, from_order=from_order, to_order=to_order, sku="S1",
        warehouse="W1", quantity=quantity, actor=to_order.manager, now=NOW, ttl=TTL,
    )
    request.collect_events()
    return request


def setup(held: int = 5, ordered_by_requester: int = 5,
          requested: int = 5) -> tuple[ReserveRequest, CustomerOrder, CustomerOrder]:
    from_order = place("A", OWNER, ordered=8, reserved=held)
    to_order = place("B", REQUESTER, ordered=ordered_by_requester)
    return ask(from_order, to_order, requested), from_order, to_order


def give(request: ReserveRequest, from_order: CustomerOrder, to_order: CustomerOrder,
         quantity: int | None = None, actor: str = OWNER, now: datetime = NOW) -> int:
    return give_reserve(request=request, from_order=from_order, to_order=to_order,
                        quantity=quantity, actor=actor, now=now)


def snapshot(*aggregates: ReserveRequest | CustomerOrder) -> list[tuple[Any, ...]]:
    """What a refused command must leave alone: versions, quantities, statuses, pending events."""
    state: list[tuple[Any, ...]] = []
    for agg in aggregates:
        if isinstance(agg, CustomerOrder):
            lines = tuple((k, ln.ordered, ln.reserved) for k, ln in agg.lines.items())
            state.append((agg.version, agg.status, lines, len(agg.pending_events)))
        else:
            state.append((agg.version, agg.status, agg.given, len(agg.pending_events)))
    return state


def names(*aggregates: ReserveRequest | CustomerOrder) -> list[list[str]]:
    return [[type(e).__name__ for e in agg.collect_events()] for agg in aggregates]


def status_changes(order: CustomerOrder) -> list[tuple[str | None, str]]:
    events: list[Any] = list(order.collect_events())
    return [(e.previous_status, e.status)
            for e in events if type(e).__name__ == "OrderStatusChanged"]


def free(stock: StockItem, *orders: CustomerOrder) -> int:
    return stock.on_hand - sum(o.held(stock.warehouse, stock.sku) for o in orders)


# -- the move -------------------------------------------------------------------------------


def test_give_moves_reserve_atomically() -> None:
    request, from_order, to_order = setup(held=5, ordered_by_requester=5, requested=5)

    given = give(request, from_order, to_order, quantity=5)

    assert given == 5
    assert from_order.held("W1", "S1") == 0
    assert to_order.held("W1", "S1") == 5
    assert request.status == GIVEN
    assert request.given == 5
    assert names(request, from_order, to_order) == [
        ["ReserveGiven"],
        ["ReserveMovedOut"],
        ["ReserveMovedIn", "OrderStatusChanged"],
    ]


def test_give_without_a_quantity_gives_all_requested() -> None:
    request, from_order, to_order = setup(held=5, ordered_by_requester=5, requested=3)

    given = give(request, from_order, to_order, quantity=None)

    assert given == 3
    assert request.given == 3
    assert (from_order.held("W1", "S1"), to_order.held("W1", "S1")) == (2, 3)


def test_partial_give_moves_only_what_is_given() -> None:
    request, from_order, to_order = setup(held=5, ordered_by_requester=5, requested=4)

    give(request, from_order, to_order, quantity=1)

    assert request.status == GIVEN
    assert request.given == 1
    assert (from_order.held("W1", "S1"), to_order.held("W1", "S1")) == (4, 1)
    assert to_order.status == NEW


def test_move_events_name_the_request_and_the_other_order() -> None:
    request, from_order, to_order = setup(requested=2)

    give(request, from_order, to_order)

    out: Any = from_order.collect_events()[0]
    into: Any = to_order.collect_events()[0]
    assert (out.quantity, out.request_id, out.to_order_id) == (2, request.request_id, "B")
    assert (into.quantity, into.request_id, into.from_order_id) == (2, request.request_id, "A")


def test_give_leaves_on_hand_total_reserved_and_free_unchanged() -> None:
    stock = StockItem(warehouse="W1", sku="S1")
    stock.set_level(12)
    stock.collect_events()
    bystander = place("C", "carol", ordered=4, reserved=4)
    request, from_order, to_order = setup(held=5, ordered_by_requester=6, requested=4)
    everyone = (from_order, to_order, bystander)
    before = (stock.on_hand, sum(o.held("W1", "S1") for o in everyone), free(stock, *everyone))

    give(request, from_order, to_order, quantity=3)

    after = (stock.on_hand, sum(o.held("W1", "S1") for o in everyone), free(stock, *everyone))
    assert after == before == (12, 9, 3)
    assert list(stock.collect_events()) == []
    assert bystander.held("W1", "S1") == 4


def test_give_turns_the_requesting_order_green_and_the_giver_new() -> None:
    from_order = place("A", OWNER, ordered=5, reserved=5)
    to_order = place("B", REQUESTER, ordered=3)
    request = ask(from_order, to_order, 3)
    assert (from_order.status, to_order.status) == (GREEN, NEW)

    give(request, from_order, to_order)

    assert (from_order.status, to_order.status) == (NEW, GREEN)
    assert status_changes(from_order) == [(GREEN, NEW)]
    assert status_changes(to_order) == [(NEW, GREEN)]


def test_give_that_keeps_both_statuses_records_no_status_change() -> None:
    request, from_order, to_order = setup(held=5, ordered_by_requester=5, requested=2)

    give(request, from_order, to_order)

    assert status_changes(from_order) == []
    assert status_changes(to_order) == []


# -- refusals change nothing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"quantity": 4}, errors.ExceedsRequestedError),
        ({"quantity": 0}, errors.InvalidQuantityError),
        ({"actor": REQUESTER}, errors.NotOwnerError),
        ({"actor": "carol"}, errors.NotOwnerError),
        ({"now": NOW + TTL}, errors.RequestExpiredError),
    ],
)
def test_a_refused_give_leaves_request_and_orders_unchanged(
        kwargs: dict[str, Any], error: type[errors.DomainError]) -> None:
    request, from_order, to_order = setup(held=5, ordered_by_requester=5, requested=3)
    before = snapshot(request, from_order, to_order)

    with pytest.raises(error):
        give(request, from_order, to_order, **kwargs)

    assert snapshot(request, from_order, to_order) == before
    assert names(request, from_order, to_order) == [[], [], []]


@pytest.mark.parametrize("ending", ["decline", "cancel", "expire", "give"])
def test_giving_an_answered_request_is_refused_and_moves_nothing(ending: str) -> None:
    request, from_order, to_order = setup(held=5, ordered_by_requester=5, requested=2)
    if ending == "decline":
        request.decline("no", OWNER, NOW)
    elif ending == "cancel":
        request.cancel(REQUESTER, NOW)
    elif ending == "expire":
        request.expire(NOW + TTL)
    else:
        give(request, from_order, to_order)
    names(request, from_order, to_order)
    before = snapshot(request, from_order, to_order)

    with pytest.raises(errors.RequestNotPendingError):
        give(request, from_order, to_order, quantity=1)

    assert snapshot(request, from_order, to_order) == before


def _owner_released_meanwhile(f: CustomerOrder, t: CustomerOrder) -> None:
    f.release_reserve("W1", "S1", 4)


def _owner_shipped_meanwhile(f: CustomerOrder, t: CustomerOrder) -> None:
    f.ship()


def _requester_reserved_meanwhile(f: CustomerOrder, t: CustomerOrder) -> None:
    t.place_reserve("W1", "S1", 4)


def _requester_cancelled_meanwhile(f: CustomerOrder, t: CustomerOrder) -> None:
    t.cancel()


MEANWHILE = [
    (_owner_released_meanwhile, errors.InsufficientReserveError),
    (_owner_shipped_meanwhile, errors.OrderClosedError),
    (_requester_reserved_meanwhile, errors.ExceedsShortageError),
    (_requester_cancelled_meanwhile, errors.OrderClosedError),
]


@pytest.mark.parametrize(("meanwhile", "error"), MEANWHILE)
def test_give_is_refused_when_the_orders_changed_since_the_request(
        meanwhile: Any, error: type[errors.DomainError]) -> None:
    request, from_order, to_order = setup(held=5, ordered_by_requester=5, requested=3)
    meanwhile(from_order, to_order)

    with pytest.raises(error):
        give(request, from_order, to_order)


@pytest.mark.parametrize(("meanwhile", "error"), MEANWHILE)
def test_a_give_refused_because_an_order_changed_leaves_everything_unchanged(
        meanwhile: Any, error: type[errors.DomainError]) -> None:
    request, from_order, to_order = setup(held=5, ordered_by_requester=5, requested=3)
    meanwhile(from_order, to_order)
    names(from_order, to_order)
    before = snapshot(request, from_order, to_order)

    with pytest.raises(error):
        give(request, from_order, to_order)

    assert snapshot(request, from_order, to_order) == before
    assert request.status == PENDING


# -- properties of one give -------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    held=st.integers(1, 8),
    short=st.integers(1, 8),
    data=st.data(),
)
def test_any_accepted_give_conserves_reserves_and_respects_bounds(held: int, short: int,
                                                                  data: st.DataObject) -> None:
    requested = data.draw(st.integers(1, min(held, short)), label="requested")
    quantity = data.draw(st.one_of(st.none(), st.integers(-1, requested + 2)), label="give")
    request, from_order, to_order = setup(held=held, ordered_by_requester=short,
                                          requested=requested)
    before = snapshot(request, from_order, to_order)
    n = requested if quantity is None else quantity

    try:
        given = give(request, from_order, to_order, quantity=quantity)
    except (errors.InvalidQuantityError, errors.ExceedsRequestedError):
        assert not 1 <= n <= requested
        assert snapshot(request, from_order, to_order) == before
        return

    assert given == n
    assert 1 <= given <= requested
    assert from_order.held("W1", "S1") == held - given >= 0
    assert to_order.held("W1", "S1") == given <= short
    assert from_order.held("W1", "S1") + to_order.held("W1", "S1") == held
    assert to_order.status == (GREEN if given == short else NEW)


# -- many managers, many requests, ERP facts in between ---------------------------------------

MANAGERS = ["alice", "bob", "carol"]
ORDER_IDS = ["A", "B", "C", "D"]


class ExchangeMachine(RuleBasedStateMachine):
    """Four orders of one stock item; managers ask, give, decline, cancel; the ERP meddles."""

    def __init__(self) -> None:
        super().__init__()
        self.stock = StockItem(warehouse="W1", sku="S1")
        self.orders: dict[str, CustomerOrder] = {}
        self.ordered: dict[str, int] = {}
        self.reserved: dict[str, int] = {}
        self.closed: dict[str, bool] = {}
        self.statuses: dict[str, str] = {}
        self.requests: list[ReserveRequest] = []
        self.request_status: dict[str, str] = {}
        self.now = NOW

    @initialize(
        fourth=st.sampled_from(MANAGERS),
        ordered=st.lists(st.integers(1, 6), min_size=4, max_size=4),
        reserved=st.lists(st.integers(0, 6), min_size=4, max_size=4),
        on_hand=st.integers(0, 30),
    )
    def place_orders(self, fourth: str, ordered: list[int], reserved: list[int],
                     on_hand: int) -> None:
        self.stock.set_level(on_hand)
        managers = [*MANAGERS, fourth]
        for order_id, manager, quantity, held in zip(ORDER_IDS, managers, ordered, reserved,
                                                     strict=True):
            self.orders[order_id] = place(order_id, manager, ordered=quantity)
            self.ordered[order_id] = quantity
            self.reserved[order_id] = 0
            self.closed[order_id] = False
            self.statuses[order_id] = NEW
            if 0 < held <= quantity:
                self.orders[order_id].place_reserve("W1", "S1", held)
                self.reserved[order_id] = held
                self.check_status_events([order_id], moved=False)

    # -- helpers --

    def total_reserved(self) -> int:
        return sum(o.held("W1", "S1") for o in self.orders.values())

    def conserved(self) -> tuple[int, int, int]:
        total = self.total_reserved()
        return self.stock.on_hand, total, self.stock.on_hand - total

    def expected_status(self, order_id: str) -> str:
        order = self.orders[order_id]
        if self.closed[order_id]:
            return order.closed or "?"
        return GREEN if self.reserved[order_id] == self.ordered[order_id] else NEW

    def check_status_events(self, touched: list[str], moved: bool) -> None:
        """Each touched order records one status event per change of status, none otherwise."""
        for order_id, order in self.orders.items():
            events: list[Any] = list(order.collect_events())
            if order_id not in touched:
                assert events == []
                continue
            changes = [(e.previous_status, e.status) for e in events
                       if type(e).__name__ == "OrderStatusChanged"]
            now = self.expected_status(order_id)
            before = self.statuses[order_id]
            assert changes == ([] if now == before else [(before, now)])
            self.statuses[order_id] = now
            if not moved:
                assert events == [] or len(events) - len(changes) == 1

    # -- ERP facts --

    @rule(order_id=st.sampled_from(ORDER_IDS), quantity=st.integers(1, 6))
    def erp_places_reserve(self, order_id: str, quantity: int) -> None:
        order = self.orders[order_id]
        try:
            order.place_reserve("W1", "S1", quantity)
        except errors.OrderClosedError:
            assert self.closed[order_id]
        except errors.ExceedsOrderedError:
            assert self.reserved[order_id] + quantity > self.ordered[order_id]
        else:
            assert not self.closed[order_id]
            self.reserved[order_id] += quantity
        self.check_status_events([order_id], moved=False)

    @rule(order_id=st.sampled_from(ORDER_IDS), quantity=st.integers(1, 6))
    def erp_releases_reserve(self, order_id: str, quantity: int) -> None:
        order = self.orders[order_id]
        try:
            order.release_reserve("W1", "S1", quantity)
        except errors.OrderClosedError:
            assert self.closed[order_id]
        except errors.ReleaseExceedsReserveError:
            assert quantity > self.reserved[order_id]
        else:
            assert not self.closed[order_id]
            self.reserved[order_id] -= quantity
        self.check_status_events([order_id], moved=False)

    @rule(order_id=st.sampled_from(ORDER_IDS), ship=st.booleans(), rarely=st.integers(0, 3))
    def erp_closes_order(self, order_id: str, ship: bool, rarely: int) -> None:
        if rarely:  # closing ends an order's part in the game; keep it uncommon
            return
        order = self.orders[order_id]
        try:
            if ship:
                order.ship()
            else:
                order.cancel()
        except errors.OrderClosedError:
            assert self.closed[order_id]
        else:
            assert not self.closed[order_id]
            self.closed[order_id] = True
            self.reserved[order_id] = 0
        self.check_status_events([order_id], moved=False)

    @rule(seconds=st.integers(0, 12 * 3600))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    # -- managers --

    @rule(
        data=st.data(),
        from_id=st.sampled_from(ORDER_IDS),
        actor=st.sampled_from([None] * 6 + MANAGERS),
    )
    def ask(self, data: st.DataObject, from_id: str, actor: str | None) -> None:
        others = [o for o in ORDER_IDS if o != from_id]
        to_id = data.draw(st.sampled_from([*others, *others, from_id]), label="to_id")
        from_order, to_order = self.orders[from_id], self.orders[to_id]
        actor = to_order.manager if actor is None else actor
        most = min(self.reserved[from_id], self.ordered[to_id] - self.reserved[to_id])
        quantity = data.draw(st.integers(0, 7) | st.integers(1, max(most, 1)), label="quantity")
        allowed: list[type[errors.DomainError]] = []
        if from_id == to_id:
            allowed.append(errors.SameOrderError)
        if quantity < 1:
            allowed.append(errors.InvalidQuantityError)
        if actor != to_order.manager:
            allowed.append(errors.NotYourOrderError)
        if actor == from_order.manager:
            allowed.append(errors.OwnReserveError)
        if self.closed[from_id] or self.closed[to_id]:
            allowed.append(errors.OrderClosedError)
        if quantity > self.reserved[from_id]:
            allowed.append(errors.InsufficientReserveError)
        if quantity > self.ordered[to_id] - self.reserved[to_id]:
            allowed.append(errors.ExceedsShortageError)
        before = self.conserved()
        try:
            request = request_reserve(
                request_key=f"k{len(self.requests)}", from_order=from_order,
                to_order=to_order, sku="S1", warehouse="W1", quantity=quantity,
                actor=actor, now=self.now, ttl=TTL,
            )
        except errors.DomainError as refused:
            assert allowed, f"refused within the rules: {refused!r}"
            assert isinstance(refused, tuple(allowed))
        else:
            assert not allowed, f"accepted although {allowed} apply"
            assert request.owner == from_order.manager != request.requester == actor
            request.collect_events()
            self.requests.append(request)
            self.request_status[request.request_id] = PENDING
        assert self.conserved() == before
        self.check_status_events([], moved=False)

    @precondition(lambda self: bool(self.requests))
    @rule(data=st.data(), actor=st.sampled_from([None, None, None, *MANAGERS]),
          quantity=st.one_of(st.none(), st.integers(0, 7)))
    def give(self, data: st.DataObject, actor: str | None, quantity: int | None) -> None:
        request = self.requests[data.draw(st.integers(0, len(self.requests) - 1),
                                          label="request")]
        actor = request.owner if actor is None else actor
        from_id, to_id = request.from_order_id, request.to_order_id
        n = request.requested if quantity is None else quantity
        request_rules: list[type[errors.DomainError]] = []
        if actor != request.owner:
            request_rules.append(errors.NotOwnerError)
        if request.status != PENDING:
            request_rules.append(errors.RequestNotPendingError)
        elif self.now >= request.expires_at:
            request_rules.append(errors.RequestExpiredError)
        if n < 1:
            request_rules.append(errors.InvalidQuantityError)
        if n > request.requested:
            request_rules.append(errors.ExceedsRequestedError)
        order_rules: list[type[errors.DomainError]] = []
        if self.closed[from_id] or self.closed[to_id]:
            order_rules.append(errors.OrderClosedError)
        if n > self.reserved[from_id]:
            order_rules.append(errors.InsufficientReserveError)
        if n > self.ordered[to_id] - self.reserved[to_id]:
            order_rules.append(errors.ExceedsShortageError)
        before_conserved = self.conserved()
        before = snapshot(request, self.orders[from_id], self.orders[to_id])
        try:
            given = give(request, self.orders[from_id], self.orders[to_id],
                         quantity=quantity, actor=actor, now=self.now)
        except errors.DomainError as refused:
            broken = request_rules + order_rules
            assert broken, f"refused within the rules: {refused!r}"
            assert isinstance(refused, tuple(broken))
            assert snapshot(request, self.orders[from_id], self.orders[to_id]) == before
            self.check_status_events([], moved=False)
        else:
            assert not request_rules and not order_rules
            assert given == n
            self.reserved[from_id] -= n
            self.reserved[to_id] += n
            self.request_status[request.request_id] = GIVEN
            assert [type(e).__name__ for e in request.collect_events()] == ["ReserveGiven"]
            self.check_status_events([from_id, to_id], moved=True)
        assert self.conserved() == before_conserved

    @precondition(lambda self: bool(self.requests))
    @rule(data=st.data(), actor=st.sampled_from(MANAGERS),
          action=st.sampled_from(["decline", "cancel", "expire"]))
    def answer_otherwise(self, data: st.DataObject, actor: str, action: str) -> None:
        request = self.requests[data.draw(st.integers(0, len(self.requests) - 1),
                                          label="request")]
        allowed: list[type[errors.DomainError]] = []
        pending = request.status == PENDING
        if action == "expire":
            if not pending:
                allowed.append(errors.RequestNotPendingError)
            if self.now < request.expires_at:
                allowed.append(errors.NotExpiredYetError)
        else:
            if actor != (request.owner if action == "decline" else request.requester):
                allowed.append(errors.NotOwnerError if action == "decline"
                               else errors.NotRequesterError)
            if not pending:
                allowed.append(errors.RequestNotPendingError)
            elif self.now >= request.expires_at:
                allowed.append(errors.RequestExpiredError)
        version = request.version
        try:
            if action == "decline":
                request.decline("busy", actor, self.now)
            elif action == "cancel":
                request.cancel(actor, self.now)
            else:
                request.expire(self.now)
        except errors.DomainError as refused:
            assert allowed, f"refused within the rules: {refused!r}"
            assert isinstance(refused, tuple(allowed))
            assert request.version == version
        else:
            assert not allowed, f"accepted although {allowed} apply"
            ends = {"decline": DECLINED, "cancel": CANCELLED, "expire": EXPIRED}
            self.request_status[request.request_id] = ends[action]
        assert len(request.collect_events()) == (0 if allowed else 1)
        self.check_status_events([], moved=False)

    # -- invariants --

    @invariant()
    def reserves_stay_between_zero_and_ordered(self) -> None:
        for order_id, order in self.orders.items():
            held = order.held("W1", "S1")
            assert held == self.reserved[order_id]
            assert 0 <= held <= self.ordered[order_id]

    @invariant()
    def statuses_follow_the_lines(self) -> None:
        for order_id, order in self.orders.items():
            assert order.status == self.expected_status(order_id) == self.statuses[order_id]

    @invariant()
    def requests_end_once_and_for_good(self) -> None:
        for request in self.requests:
            assert request.status == self.request_status[request.request_id]
            assert request.owner != request.requester
            assert request.from_order_id != request.to_order_id
            if request.status == GIVEN:
                assert 1 <= request.given <= request.requested
            else:
                assert request.given == 0

    @invariant()
    def free_is_on_hand_minus_all_reserves(self) -> None:
        on_hand, total, free_now = self.conserved()
        assert total == sum(self.reserved.values())
        assert free_now == on_hand - total


ExchangeMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)
TestExchangeMachine = ExchangeMachine.TestCase
