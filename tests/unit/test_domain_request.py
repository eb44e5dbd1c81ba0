"""Unit tests for asking for a reserve and for the reserve request's lifecycle."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from domain import errors
from domain.exchange import request_reserve
from domain.ids import request_uuid
from domain.order import CustomerOrder
from domain.request import CANCELLED, DECLINED, EXPIRED, GIVEN, PENDING, ReserveRequest

ORDER_DATE = datetime(2020, 4, 30, 8, 42, 28)
NOW = datetime(2024, 3, 1, 12, 0, 0)
TTL = timedelta(hours=24)
OWNER = "alice"
REQUESTER = "bob"
STRANGER = "carol"


def place(order_id: str, manager: str, ordered: int, reserved: int = 0,
          lines: list[tuple[str, str, int]] | None = None) -> CustomerOrder:
    specs = lines if lines is not None else [("W1", "S1", ordered)]
    order = CustomerOrder.place(
        order_id=order_id,
        number=f"N-{order_id}",
        date=ORDER_DATE,
        partner="partner",
        manager=manager,
        lines=[{"warehouse": w, "sku": s, "quantity": q} for w, s, q in specs],
    )
    if reserved:
        order.place_reserve("W1", "S1", reserved)
    order.collect_events()
    return order


def orders(held: int = 5, short: int = 6) -> tuple[CustomerOrder, CustomerOrder]:
    """alice's order holds ``held`` of W1/S1; bob's order is short of ``short``."""
    return place("A", OWNER, ordered=8, reserved=held), place("B", REQUESTER, ordered=short)


def ask(from_order: CustomerOrder, to_order: CustomerOrder, quantity: int = 3,
        actor: str = REQUESTER, sku: str = "S1", warehouse: str = "W1",
        key: str = "k1") -> ReserveRequest:
    return request_reserve(
        request_key=key, from_order=from_order, to_order=to_order, sku=sku,
        warehouse=warehouse, quantity=quantity, actor=actor, now=NOW, ttl=TTL,
    )


def pending_request(quantity: int = 3) -> ReserveRequest:
    request = ask(*orders(), quantity=quantity)
    request.collect_events()
    return request


def names(request: ReserveRequest) -> list[str]:
    return [type(e).__name__ for e in request.collect_events()]


# -- asking ---------------------------------------------------------------------------------


def test_request_goes_from_the_requesting_manager_to_the_holding_owner() -> None:
    from_order, to_order = orders()

    request = ask(from_order, to_order, quantity=3, key="idem-1")

    assert request.id == request_uuid("idem-1")
    assert request.status == PENDING
    assert not request.is_final
    assert (request.requester, request.owner) == (REQUESTER, OWNER)
    assert (request.from_order_id, request.to_order_id) == ("A", "B")
    assert (request.warehouse, request.sku, request.requested, request.given) == (
        "W1", "S1", 3, 0)
    assert request.from_order_number == "N-A"
    assert request.from_order_date == ORDER_DATE
    assert request.to_order_number == "N-B"
    assert request.requested_at == NOW
    assert request.expires_at == NOW + TTL
    assert names(request) == ["ReserveRequested"]


def test_asking_does_not_change_either_order() -> None:
    from_order, to_order = orders()
    versions = (from_order.version, to_order.version)

    ask(from_order, to_order, quantity=3)

    assert (from_order.version, to_order.version) == versions
    assert from_order.held("W1", "S1") == 5
    assert to_order.held("W1", "S1") == 0
    assert list(from_order.collect_events()) == list(to_order.collect_events()) == []


def test_the_same_key_names_the_same_request() -> None:
    first = ask(*orders(), key="same")
    second = ask(*orders(), key="same")
    other = ask(*orders(), key="other")

    assert first.id == second.id != other.id


def test_asking_for_a_reserve_of_the_same_order_is_refused() -> None:
    order = place("B", REQUESTER, ordered=8, reserved=5)
    with pytest.raises(errors.SameOrderError):
        ask(order, order, quantity=1)


def test_only_the_manager_of_the_requesting_order_may_ask() -> None:
    from_order, to_order = orders()
    with pytest.raises(errors.NotYourOrderError):
        ask(from_order, to_order, actor=STRANGER)
    with pytest.raises(errors.NotYourOrderError):
        ask(from_order, to_order, actor=OWNER)


def test_asking_oneself_for_a_reserve_is_refused() -> None:
    from_order = place("A", REQUESTER, ordered=8, reserved=5)
    to_order = place("B", REQUESTER, ordered=6)
    with pytest.raises(errors.OwnReserveError):
        ask(from_order, to_order)


@pytest.mark.parametrize("quantity", [0, -3])
def test_asking_for_less_than_one_unit_is_refused(quantity: int) -> None:
    with pytest.raises(errors.InvalidQuantityError):
        ask(*orders(), quantity=quantity)


def test_asking_for_more_than_the_owner_holds_is_refused() -> None:
    with pytest.raises(errors.InsufficientReserveError):
        ask(*orders(held=2, short=6), quantity=3)


def test_asking_for_more_than_the_requester_is_short_of_is_refused() -> None:
    from_order, to_order = orders(held=5, short=6)
    to_order.place_reserve("W1", "S1", 4)
    with pytest.raises(errors.ExceedsShortageError):
        ask(from_order, to_order, quantity=3)


def test_asking_for_exactly_what_is_held_and_short_is_accepted() -> None:
    request = ask(*orders(held=4, short=4), quantity=4)
    assert request.requested == 4


@pytest.mark.parametrize("closed", ["from", "to"])
@pytest.mark.parametrize("how", ["ship", "cancel"])
def test_asking_involving_a_closed_order_is_refused(closed: str, how: str) -> None:
    from_order, to_order = orders()
    getattr(from_order if closed == "from" else to_order, how)()
    with pytest.raises(errors.OrderClosedError):
        ask(from_order, to_order, quantity=1)


@pytest.mark.parametrize("missing", ["from", "to"])
def test_asking_for_a_stock_item_an_order_lacks_is_refused(missing: str) -> None:
    two_lines = [("W1", "S1", 8), ("W1", "S2", 8)]
    from_order = place("A", OWNER, ordered=8, reserved=5,
                       lines=None if missing == "from" else two_lines)
    to_order = place("B", REQUESTER, ordered=6, lines=None if missing == "to" else two_lines)
    if missing == "to":
        from_order.place_reserve("W1", "S2", 5)
    with pytest.raises(errors.NoSuchLineError):
        ask(from_order, to_order, quantity=1, sku="S2")


@settings(max_examples=80, deadline=None)
@given(held=st.integers(0, 8), short=st.integers(1, 8), quantity=st.integers(-1, 10))
def test_asking_is_accepted_exactly_within_held_and_shortage(held: int, short: int,
                                                              quantity: int) -> None:
    from_order, to_order = orders(held=held, short=short)
    allowed: list[type[errors.DomainError]] = []
    if quantity < 1:
        allowed.append(errors.InvalidQuantityError)
    if quantity > held:
        allowed.append(errors.InsufficientReserveError)
    if quantity > short:
        allowed.append(errors.ExceedsShortageError)

    try:
        request = ask(from_order, to_order, quantity=quantity)
    except errors.DomainError as refused:
        assert allowed, f"refused within the rules: {refused!r}"
        assert isinstance(refused, tuple(allowed))
    else:
        assert not allowed
        assert 1 <= request.requested <= min(held, short)
    assert (from_order.held("W1", "S1"), to_order.held("W1", "S1")) == (held, 0)


# -- answering ------------------------------------------------------------------------------


def test_owner_gives_and_the_request_is_given() -> None:
    request = pending_request(quantity=3)

    request.give(2, OWNER, NOW)

    assert request.status == GIVEN
    assert request.given == 2
    assert request.requested == 3
    assert request.is_final
    events = list(request.collect_events())
    assert [type(e).__name__ for e in events] == ["ReserveGiven"]
    given_event: Any = events[0]
    assert (given_event.quantity, given_event.from_order_id, given_event.to_order_id,
            given_event.sku, given_event.warehouse) == (2, "A", "B", "S1", "W1")


def test_giving_more_than_requested_is_refused() -> None:
    request = pending_request(quantity=3)
    with pytest.raises(errors.ExceedsRequestedError):
        request.give(4, OWNER, NOW)
    assert request.status == PENDING
    assert names(request) == []


@pytest.mark.parametrize("quantity", [0, -1])
def test_giving_less_than_one_unit_is_refused(quantity: int) -> None:
    request = pending_request(quantity=3)
    with pytest.raises(errors.InvalidQuantityError):
        request.give(quantity, OWNER, NOW)
    assert request.status == PENDING


@pytest.mark.parametrize("actor", [REQUESTER, STRANGER])
def test_only_the_owner_gives_or_declines(actor: str) -> None:
    request = pending_request()
    version = request.version

    with pytest.raises(errors.NotOwnerError):
        request.give(1, actor, NOW)
    with pytest.raises(errors.NotOwnerError):
        request.decline("no", actor, NOW)

    assert request.status == PENDING
    assert request.version == version
    assert names(request) == []


def test_owner_declines_with_a_reason() -> None:
    request = pending_request()

    request.decline("Отгружаем завтра", OWNER, NOW)

    assert request.status == DECLINED
    assert request.reason == "Отгружаем завтра"
    assert request.given == 0
    assert names(request) == ["ReserveRequestDeclined"]


def test_requester_cancels() -> None:
    request = pending_request()
    request.cancel(REQUESTER, NOW)
    assert request.status == CANCELLED
    assert names(request) == ["ReserveRequestCancelled"]


@pytest.mark.parametrize("actor", [OWNER, STRANGER])
def test_only_the_requester_cancels(actor: str) -> None:
    request = pending_request()
    with pytest.raises(errors.NotRequesterError):
        request.cancel(actor, NOW)
    assert request.status == PENDING
    assert names(request) == []


# -- expiry ---------------------------------------------------------------------------------


def test_request_does_not_expire_before_its_expiry_time() -> None:
    request = pending_request()
    with pytest.raises(errors.NotExpiredYetError):
        request.expire(NOW + TTL - timedelta(microseconds=1))
    assert request.status == PENDING
    assert names(request) == []


@pytest.mark.parametrize("late", [timedelta(0), timedelta(seconds=1), timedelta(days=30)])
def test_request_expires_at_or_after_its_expiry_time(late: timedelta) -> None:
    request = pending_request()
    request.expire(NOW + TTL + late)
    assert request.status == EXPIRED
    assert names(request) == ["ReserveRequestExpired"]


ANSWERS: dict[str, Callable[[ReserveRequest, datetime], None]] = {
    "give": lambda r, now: r.give(1, OWNER, now),
    "decline": lambda r, now: r.decline("no", OWNER, now),
    "cancel": lambda r, now: r.cancel(REQUESTER, now),
}


@pytest.mark.parametrize("answer", sorted(ANSWERS))
def test_answering_just_before_expiry_is_accepted(answer: str) -> None:
    request = pending_request()
    ANSWERS[answer](request, request.expires_at - timedelta(seconds=1))
    assert request.is_final


@pytest.mark.parametrize("answer", sorted(ANSWERS))
@pytest.mark.parametrize("late", [timedelta(0), timedelta(hours=1)])
def test_answering_after_expiry_is_refused(answer: str, late: timedelta) -> None:
    request = pending_request()
    version = request.version

    with pytest.raises(errors.RequestExpiredError):
        ANSWERS[answer](request, request.expires_at + late)

    assert request.status == PENDING
    assert request.version == version
    assert names(request) == []


# -- every end is final ---------------------------------------------------------------------

ENDINGS: dict[str, Callable[[ReserveRequest], None]] = {
    GIVEN: lambda r: r.give(2, OWNER, NOW),
    DECLINED: lambda r: r.decline("no", OWNER, NOW),
    CANCELLED: lambda r: r.cancel(REQUESTER, NOW),
    EXPIRED: lambda r: r.expire(r.expires_at),
}

AFTERWARDS: dict[str, Callable[[ReserveRequest], None]] = {
    "give": lambda r: r.give(1, OWNER, NOW),
    "decline": lambda r: r.decline("again", OWNER, NOW),
    "cancel": lambda r: r.cancel(REQUESTER, NOW),
    "expire": lambda r: r.expire(r.expires_at + timedelta(days=1)),
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
@pytest.mark.parametrize("then", sorted(AFTERWARDS))
def test_every_end_of_a_request_is_final(ending: str, then: str) -> None:
    request = pending_request(quantity=3)
    ENDINGS[ending](request)
    request.collect_events()
    state = (request.status, request.given, request.reason, request.version)

    with pytest.raises(errors.RequestNotPendingError):
        AFTERWARDS[then](request)

    assert (request.status, request.given, request.reason, request.version) == state
    assert state[0] == ending
    assert names(request) == []


class RequestLifecycleMachine(RuleBasedStateMachine):
    """Anyone answers one request at any time; only the rules decide what lands."""

    def __init__(self) -> None:
        super().__init__()
        self.request = pending_request(quantity=3)
        self.now = NOW
        self.status = PENDING

    @initialize(requested=st.integers(1, 5))
    def ask(self, requested: int) -> None:
        self.request = pending_request(quantity=requested)
        self.now = NOW
        self.status = PENDING

    def attempt(self, action: Callable[[], None], allowed: list[type[errors.DomainError]],
                success: str) -> None:
        version = self.request.version
        try:
            action()
        except errors.DomainError as refused:
            assert allowed, f"refused although every rule holds: {refused!r}"
            assert isinstance(refused, tuple(allowed))
            assert self.request.version == version
            assert list(self.request.collect_events()) == []
        else:
            assert not allowed, f"accepted although {allowed} apply"
            self.status = success
            assert len(self.request.collect_events()) == 1
            assert self.request.version == version + 1

    def answer_rules(self) -> list[type[errors.DomainError]]:
        if self.status != PENDING:
            return [errors.RequestNotPendingError]
        if self.now >= self.request.expires_at:
            return [errors.RequestExpiredError]
        return []

    @rule(seconds=st.integers(0, 20 * 3600))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(actor=st.sampled_from([OWNER, REQUESTER, STRANGER]), quantity=st.integers(-1, 6))
    def give(self, actor: str, quantity: int) -> None:
        allowed = self.answer_rules()
        if actor != OWNER:
            allowed.append(errors.NotOwnerError)
        if quantity < 1:
            allowed.append(errors.InvalidQuantityError)
        if quantity > self.request.requested:
            allowed.append(errors.ExceedsRequestedError)
        self.attempt(lambda: self.request.give(quantity, actor, self.now), allowed, GIVEN)
        if self.status == GIVEN:
            assert 1 <= self.request.given <= self.request.requested

    @rule(actor=st.sampled_from([OWNER, REQUESTER, STRANGER]), reason=st.text(max_size=20))
    def decline(self, actor: str, reason: str) -> None:
        allowed = self.answer_rules()
        if actor != OWNER:
            allowed.append(errors.NotOwnerError)
        self.attempt(lambda: self.request.decline(reason, actor, self.now), allowed, DECLINED)

    @rule(actor=st.sampled_from([OWNER, REQUESTER, STRANGER]))
    def cancel(self, actor: str) -> None:
        allowed = self.answer_rules()
        if actor != REQUESTER:
            allowed.append(errors.NotRequesterError)
        self.attempt(lambda: self.request.cancel(actor, self.now), allowed, CANCELLED)

    @rule()
    def expire(self) -> None:
        allowed: list[type[errors.DomainError]] = []
        if self.status != PENDING:
            allowed.append(errors.RequestNotPendingError)
        if self.now < self.request.expires_at:
            allowed.append(errors.NotExpiredYetError)
        self.attempt(lambda: self.request.expire(self.now), allowed, EXPIRED)

    @precondition(lambda self: self.status != PENDING)
    @invariant()
    def an_end_is_final(self) -> None:
        assert self.request.is_final

    @invariant()
    def status_is_what_the_rules_allow(self) -> None:
        assert self.request.status == self.status
        if self.status != GIVEN:
            assert self.request.given == 0


RequestLifecycleMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=20, deadline=None
)
TestRequestLifecycleMachine = RequestLifecycleMachine.TestCase
