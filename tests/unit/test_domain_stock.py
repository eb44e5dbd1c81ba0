"""Unit tests for the stock item: what is on hand, as the ERP says."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import errors
from domain.ids import stock_item_uuid
from domain.stock import StockItem


def registered(on_hand: int = 0) -> StockItem:
    stock = StockItem(warehouse="W1", sku="S1")
    if on_hand:
        stock.set_level(on_hand)
    stock.collect_events()
    return stock


def test_a_registered_stock_item_has_nothing_on_hand() -> None:
    stock = StockItem(warehouse="W1", sku="S1")
    assert stock.id == stock_item_uuid("W1", "S1")
    assert stock.on_hand == 0
    assert [type(e).__name__ for e in stock.collect_events()] == ["StockItemRegistered"]


def test_the_erp_sets_the_absolute_level() -> None:
    stock = registered(on_hand=10)

    stock.set_level(3)

    assert stock.on_hand == 3
    assert [type(e).__name__ for e in stock.collect_events()] == ["StockLevelSet"]


def test_a_level_below_zero_is_refused_and_changes_nothing() -> None:
    stock = registered(on_hand=10)
    version = stock.version

    with pytest.raises(errors.InvalidQuantityError):
        stock.set_level(-1)

    assert (stock.on_hand, stock.version) == (10, version)
    assert list(stock.collect_events()) == []


@settings(max_examples=60, deadline=None)
@given(on_hand=st.integers(0, 50), consumed=st.lists(st.integers(1, 20), max_size=5))
def test_shipping_takes_units_out_but_never_below_zero(on_hand: int,
                                                       consumed: list[int]) -> None:
    stock = registered(on_hand=on_hand)
    expected = on_hand

    for quantity in consumed:
        stock.consume(quantity, "A")
        expected = max(expected - quantity, 0)
        assert stock.on_hand == expected >= 0

    assert [type(e).__name__ for e in stock.collect_events()] == ["StockConsumed"] * len(
        consumed)
