"""Wire schemas: the contract's JSON turned into domain facts and commands, or refused."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from domain import commands as c
from domain import facts as f
from handlers.erp import Envelope
from handlers.wire import MAX_BATCH, CommandMessage, WireError, parse_erp_body
from tests.support import envelope

STOCK = {"warehouse": "W1", "sku": "S1", "on_hand": 10}
LINE = {"sku": "S1", "warehouse": "W1", "quantity": 8}
ORDER = {"order_id": "o1", "number": "F4718837", "date": "2020-04-30T08:42:28",
         "partner": "ООО Ромашка", "manager": "petrova", "lines": [LINE]}
RESERVE = {"order_id": "o1", "sku": "S1", "warehouse": "W1", "quantity": 8}


def one(type_: str, data: dict[str, Any], event_id: str = "ev-1") -> Envelope:
    [parsed] = parse_erp_body(envelope(type_, data, event_id))
    return parsed


# -- ERP facts ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("type_", "data", "fact"), [
    ("StockLevelSet", STOCK, f.StockLevelSet("W1", "S1", 10)),
    ("CustomerOrderPlaced", ORDER, f.CustomerOrderPlaced(
        "o1", "F4718837", datetime(2020, 4, 30, 8, 42, 28), "ООО Ромашка", "petrova",
        (f.OrderLineSpec("S1", "W1", 8),))),
    ("ReservePlaced", RESERVE, f.ReservePlaced("o1", "S1", "W1", 8)),
    ("ReserveReleased", RESERVE, f.ReserveReleased("o1", "S1", "W1", 8)),
    ("OrderShipped", {"order_id": "o1"}, f.OrderShipped("o1")),
    ("OrderCancelled", {"order_id": "o1"}, f.OrderCancelled("o1")),
])
def test_each_fact_type_becomes_its_domain_fact(
    type_: str, data: dict[str, Any], fact: f.Fact
) -> None:
    parsed = one(type_, data, event_id="ev-42")
    assert parsed.event_id == "ev-42"
    assert type(parsed.fact) is type(fact)
    assert parsed.fact == fact


def test_a_single_envelope_is_a_batch_of_one() -> None:
    parsed = parse_erp_body(envelope("OrderShipped", {"order_id": "o1"}, "ev-1"))
    assert [(e.event_id, e.fact) for e in parsed] == [("ev-1", f.OrderShipped("o1"))]


def test_a_list_of_envelopes_keeps_its_order() -> None:
    parsed = parse_erp_body([
        envelope("StockLevelSet", STOCK, "ev-1"),
        envelope("OrderCancelled", {"order_id": "o1"}, "ev-2"),
    ])
    assert [e.event_id for e in parsed] == ["ev-1", "ev-2"]
    assert [type(e.fact) for e in parsed] == [f.StockLevelSet, f.OrderCancelled]


def test_a_list_of_the_maximum_batch_size_is_accepted() -> None:
    body = [envelope("OrderShipped", {"order_id": f"o{i}"}, f"ev-{i}") for i in range(MAX_BATCH)]
    assert MAX_BATCH == 1000
    assert len(parse_erp_body(body)) == 1000


def test_a_list_longer_than_the_maximum_batch_size_is_refused() -> None:
    body = [envelope("OrderShipped", {"order_id": f"o{i}"}, f"ev-{i}")
            for i in range(MAX_BATCH + 1)]
    with pytest.raises(WireError):
        parse_erp_body(body)


def test_an_empty_list_is_refused() -> None:
    with pytest.raises(WireError):
        parse_erp_body([])


@pytest.mark.parametrize("raw", [None, "text", 42, {"not": "an envelope"}])
def test_a_body_that_is_not_an_envelope_is_refused(raw: Any) -> None:
    with pytest.raises(WireError):
        parse_erp_body(raw)


def test_an_unknown_fact_type_is_refused() -> None:
    with pytest.raises(WireError):
        parse_erp_body(envelope("StockLevelChanged", STOCK))


def test_an_extra_field_in_the_envelope_is_refused() -> None:
    with pytest.raises(WireError):
        parse_erp_body({**envelope("StockLevelSet", STOCK), "extra": 1})


@pytest.mark.parametrize(("type_", "data"), [
    ("StockLevelSet", {**STOCK, "extra": 1}),
    ("ReservePlaced", {**RESERVE, "comment": "x"}),
    ("OrderShipped", {"order_id": "o1", "lines": []}),
    ("CustomerOrderPlaced", {**ORDER, "lines": [{**LINE, "price": 3}]}),
])
def test_an_extra_field_in_the_data_is_refused(type_: str, data: dict[str, Any]) -> None:
    with pytest.raises(WireError):
        parse_erp_body(envelope(type_, data))


@pytest.mark.parametrize("type_", ["StockLevelSet", "ReservePlaced", "OrderShipped"])
def test_a_missing_data_field_is_refused(type_: str) -> None:
    with pytest.raises(WireError):
        parse_erp_body(envelope(type_, {}))


@pytest.mark.parametrize("quantity", [0, -1, "8", True, 8.0, None])
@pytest.mark.parametrize("type_", ["ReservePlaced", "ReserveReleased"])
def test_a_reserve_quantity_must_be_a_positive_integer(type_: str, quantity: Any) -> None:
    with pytest.raises(WireError):
        parse_erp_body(envelope(type_, {**RESERVE, "quantity": quantity}))


@pytest.mark.parametrize("quantity", [0, -1, "8", True])
def test_an_order_line_quantity_must_be_a_positive_integer(quantity: Any) -> None:
    data = {**ORDER, "lines": [{"sku": "S1", "warehouse": "W1", "quantity": quantity}]}
    with pytest.raises(WireError):
        parse_erp_body(envelope("CustomerOrderPlaced", data))


def test_an_order_without_lines_is_refused() -> None:
    with pytest.raises(WireError):
        parse_erp_body(envelope("CustomerOrderPlaced", {**ORDER, "lines": []}))


def test_nothing_on_hand_is_a_valid_stock_level() -> None:
    assert one("StockLevelSet", {**STOCK, "on_hand": 0}).fact == f.StockLevelSet("W1", "S1", 0)


@pytest.mark.parametrize("on_hand", [-1, "10", True])
def test_a_stock_level_must_be_a_non_negative_integer(on_hand: Any) -> None:
    with pytest.raises(WireError):
        parse_erp_body(envelope("StockLevelSet", {**STOCK, "on_hand": on_hand}))


def test_an_empty_event_id_is_refused() -> None:
    with pytest.raises(WireError):
        parse_erp_body(envelope("OrderShipped", {"order_id": "o1"}) | {"event_id": ""})


def test_a_malformed_occurred_at_is_refused() -> None:
    with pytest.raises(WireError):
        parse_erp_body(envelope("OrderShipped", {"order_id": "o1"}) | {"occurred_at": "yesterday"})


def test_one_bad_envelope_refuses_the_whole_list() -> None:
    with pytest.raises(WireError):
        parse_erp_body([envelope("OrderShipped", {"order_id": "o1"}),
                        envelope("ReservePlaced", {**RESERVE, "quantity": 0})])


# -- fingerprints -------------------------------------------------------------------------------

def test_the_same_fact_has_the_same_fingerprint() -> None:
    first = one("ReservePlaced", RESERVE, event_id="ev-1")
    again = one("ReservePlaced", dict(RESERVE), event_id="ev-1")
    assert first.fingerprint == again.fingerprint


def test_the_fingerprint_ignores_the_order_of_the_data_keys() -> None:
    reordered = dict(reversed(list(RESERVE.items())))
    assert one("ReservePlaced", RESERVE).fingerprint == one("ReservePlaced", reordered).fingerprint


def test_a_different_quantity_has_a_different_fingerprint() -> None:
    assert one("ReservePlaced", RESERVE).fingerprint != one(
        "ReservePlaced", {**RESERVE, "quantity": 7}).fingerprint


def test_a_different_fact_type_with_the_same_data_has_a_different_fingerprint() -> None:
    assert one("ReservePlaced", RESERVE).fingerprint != one("ReserveReleased", RESERVE).fingerprint


def test_a_different_order_line_has_a_different_fingerprint() -> None:
    other = {**ORDER, "lines": [{"sku": "S2", "warehouse": "W1", "quantity": 8}]}
    assert one("CustomerOrderPlaced", ORDER).fingerprint != one(
        "CustomerOrderPlaced", other).fingerprint


# -- commands -----------------------------------------------------------------------------------

REQUEST = {"from_order_id": "o1", "to_order_id": "o2", "sku": "S1", "warehouse": "W1",
           "quantity": 8}


def message(type_: str, data: dict[str, Any], actor: str = "ivanov") -> CommandMessage:
    return CommandMessage.model_validate(
        {"command_id": "cmd-1", "type": type_, "actor": actor, "data": data})


@pytest.mark.parametrize(("type_", "data", "command"), [
    ("RequestReserve", REQUEST, c.RequestReserve("o1", "o2", "S1", "W1", 8)),
    ("GiveReserve", {"request_id": "r1"}, c.GiveReserve("r1", None)),
    ("GiveReserve", {"request_id": "r1", "quantity": 3}, c.GiveReserve("r1", 3)),
    ("DeclineReserveRequest", {"request_id": "r1", "reason": "needed"},
     c.DeclineReserveRequest("r1", "needed")),
    ("CancelReserveRequest", {"request_id": "r1"}, c.CancelReserveRequest("r1")),
])
def test_each_command_message_becomes_its_domain_command(
    type_: str, data: dict[str, Any], command: c.Command
) -> None:
    parsed = message(type_, data)
    assert (parsed.command_id, parsed.actor) == ("cmd-1", "ivanov")
    result = parsed.command()
    assert type(result) is type(command)
    assert result == command


@pytest.mark.parametrize(("type_", "data"), [
    ("GiveReserve", {"quantity": 3}),
    ("DeclineReserveRequest", {"reason": "needed"}),
    ("CancelReserveRequest", {}),
    ("CancelReserveRequest", {"request_id": ""}),
])
def test_a_command_about_a_request_without_its_request_id_is_refused(
    type_: str, data: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        message(type_, data).command()


def test_a_request_reserve_with_a_request_id_is_refused() -> None:
    with pytest.raises(ValidationError):
        message("RequestReserve", {**REQUEST, "request_id": "r1"}).command()


@pytest.mark.parametrize("quantity", [0, -1, "8", True])
def test_a_command_quantity_must_be_a_positive_integer(quantity: Any) -> None:
    with pytest.raises(ValidationError):
        message("RequestReserve", {**REQUEST, "quantity": quantity}).command()
    with pytest.raises(ValidationError):
        message("GiveReserve", {"request_id": "r1", "quantity": quantity}).command()


def test_a_decline_needs_a_reason() -> None:
    with pytest.raises(ValidationError):
        message("DeclineReserveRequest", {"request_id": "r1", "reason": ""}).command()


def test_an_unknown_command_type_is_refused() -> None:
    with pytest.raises(ValidationError):
        message("ExpireReserveRequest", {"request_id": "r1"})


def test_an_extra_field_in_a_command_message_is_refused() -> None:
    with pytest.raises(ValidationError):
        CommandMessage.model_validate({"command_id": "cmd-1", "type": "CancelReserveRequest",
                                       "actor": "ivanov", "data": {"request_id": "r1"},
                                       "extra": 1})


def test_a_command_message_without_an_actor_is_refused() -> None:
    with pytest.raises(ValidationError):
        CommandMessage.model_validate({"command_id": "cmd-1", "type": "CancelReserveRequest",
                                       "data": {"request_id": "r1"}})
