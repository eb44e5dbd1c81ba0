"""Unit tests for the Russian inbox texts, above all the seed's success message."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import messages
from domain.exchange import give_reserve, request_reserve
from domain.order import CustomerOrder

SEED_DATE = datetime(2020, 4, 30, 8, 42, 28)


def test_success_text_matches_the_seed_exactly() -> None:
    text = messages.success_text(8, "CTS66443", "F4718837", SEED_DATE)
    assert text == (
        "УСПЕХ!!! Отдан резерв 8 шт. CTS66443. Заказ клиента F4718837 от 30.04.2020 8:42:28"
    )


def test_success_text_keeps_a_two_digit_hour() -> None:
    text = messages.success_text(1, "CTS66443", "F4718837", datetime(2020, 4, 30, 14, 5, 9))
    assert text.endswith(" от 30.04.2020 14:05:09")


def test_success_text_passes_a_cyrillic_sku_through_unchanged() -> None:
    sku = "\u0421\u0422S66443"  # "СТS66443": Cyrillic Es and Te, as in the seed
    assert sku != "CTS66443"
    text = messages.success_text(8, sku, "F4718837", SEED_DATE)
    assert text == (
        "УСПЕХ!!! Отдан резерв 8 шт. \u0421\u0422S66443. "
        "Заказ клиента F4718837 от 30.04.2020 8:42:28"
    )
    assert f" {sku}. " in text


@pytest.mark.parametrize(
    ("date", "written"),
    [
        (datetime(2020, 4, 30, 8, 42, 28), "30.04.2020 8:42:28"),
        (datetime(2020, 4, 30, 14, 5, 9), "30.04.2020 14:05:09"),
        (datetime(2021, 1, 2, 0, 0, 0), "02.01.2021 0:00:00"),
        (datetime(1999, 12, 31, 23, 59, 59), "31.12.1999 23:59:59"),
        (datetime(2020, 4, 30, 9, 7, 3, 999999), "30.04.2020 9:07:03"),
    ],
)
def test_order_date_is_written_like_1c_writes_it(date: datetime, written: str) -> None:
    assert messages.format_order_date(date) == written


@settings(max_examples=100, deadline=None)
@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)))
def test_order_date_format_round_trips_to_the_second(date: datetime) -> None:
    written = messages.format_order_date(date)

    match = re.fullmatch(r"(\d\d)\.(\d\d)\.(\d{4}) (\d{1,2}):(\d\d):(\d\d)", written)
    assert match is not None, written
    day, month, year, hour, minute, second = (int(g) for g in match.groups())
    assert datetime(year, month, day, hour, minute, second) == date.replace(microsecond=0)
    assert not match.group(4).startswith("0") or date.hour == 0


@settings(max_examples=60, deadline=None)
@given(
    quantity=st.integers(1, 10_000),
    sku=st.text(min_size=1, max_size=20),
    number=st.text(min_size=1, max_size=20),
)
def test_success_text_carries_quantity_sku_and_number_verbatim(quantity: int, sku: str,
                                                               number: str) -> None:
    text = messages.success_text(quantity, sku, number, SEED_DATE)
    assert text == (
        f"УСПЕХ!!! Отдан резерв {quantity} шт. {sku}. "
        f"Заказ клиента {number} от 30.04.2020 8:42:28"
    )


def test_success_text_names_the_order_the_reserve_came_from() -> None:
    from_order = CustomerOrder.place(
        order_id="A", number="F4718837", date=SEED_DATE, partner="p", manager="alice",
        lines=[{"warehouse": "W1", "sku": "CTS66443", "quantity": 10}],
    )
    from_order.place_reserve("W1", "CTS66443", 10)
    to_order = CustomerOrder.place(
        order_id="B", number="G0000001", date=datetime(2021, 5, 6, 10, 0, 0), partner="p",
        manager="bob", lines=[{"warehouse": "W1", "sku": "CTS66443", "quantity": 8}],
    )
    now = datetime(2024, 1, 1, 9, 0, 0)
    request = request_reserve(
        request_key="k", from_order=from_order, to_order=to_order, sku="CTS66443",
        warehouse="W1", quantity=8, actor="bob", now=now, ttl=timedelta(days=1),
    )
    given_n = give_reserve(request=request, from_order=from_order, to_order=to_order,
                           quantity=None, actor="alice", now=now)

    text = messages.success_text(given_n, request.sku, request.from_order_number,
                                 request.from_order_date)

    assert text == (
        "УСПЕХ!!! Отдан резерв 8 шт. CTS66443. Заказ клиента F4718837 от 30.04.2020 8:42:28"
    )


def test_other_texts_name_who_what_and_which_order() -> None:
    asked = messages.request_text("bob", 3, "S1", "W1", "F1", "G2")
    declined = messages.declined_text("alice", 3, "S1", "F1", "уже отгружаем")
    cancelled = messages.cancelled_text("bob", 3, "S1", "F1")
    expired = messages.expired_text(3, "S1", "F1")

    for part in ("bob", "3 шт.", "S1", "W1", "F1", "G2"):
        assert part in asked
    for part in ("alice", "3 шт.", "S1", "F1", "уже отгружаем"):
        assert part in declined
    for part in ("bob", "3 шт.", "S1", "F1"):
        assert part in cancelled
    for part in ("3 шт.", "S1", "F1"):
        assert part in expired
    assert len({asked, declined, cancelled, expired}) == 4
