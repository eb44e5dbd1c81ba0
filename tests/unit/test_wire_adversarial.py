"""Any bytes, any JSON: the wire layer answers with its own refusals, never anything else."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from handlers import wire

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)
FIELDS = st.sampled_from(["event_id", "type", "occurred_at", "data", "warehouse", "sku",
                          "on_hand", "order_id", "quantity", "lines", "number", "date",
                          "partner", "manager", "command_id", "actor", "request_id", "reason",
                          "from_order_id", "to_order_id"])
SHAPED = st.recursive(  # dicts using the contract's own field names, to get past the first check
    st.none() | st.integers() | st.text() | st.sampled_from(
        ["StockLevelSet", "CustomerOrderPlaced", "ReservePlaced", "RequestReserve",
         "GiveReserve", "2020-01-01T00:00:00", "a\x00b"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(FIELDS, inner, max_size=6),
    max_leaves=25)


@settings(max_examples=200, derandomize=True)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_are_malformed(raw: bytes) -> None:
    try:
        wire.decode_json(raw)
    except wire.MalformedJsonError as e:
        assert str(e)


@pytest.mark.parametrize("body", [b"9" * 5000, b"[" * 100_000, b'{"a":' * 50_000])
def test_pathological_json_is_malformed_not_a_crash(body: bytes) -> None:
    with pytest.raises(wire.MalformedJsonError):
        wire.decode_json(body)


@settings(max_examples=200, derandomize=True)
@given(JSON | SHAPED)
def test_any_json_is_an_erp_body_or_a_wire_error(value: Any) -> None:
    try:
        envelopes = wire.parse_erp_body(value)
    except wire.WireError as e:
        assert str(e)
        return
    for envelope in envelopes:  # what passes holds no NUL anywhere the views would store
        assert "\x00" not in repr(envelope.fact)


@settings(max_examples=200, derandomize=True)
@given(JSON | SHAPED)
def test_any_json_is_a_command_or_a_validation_error(value: Any) -> None:
    if not isinstance(value, dict):
        return
    try:
        command = wire.CommandMessage.model_validate(value).command()
    except ValidationError:
        return
    assert type(command).__name__ == value["type"]
    assert "\x00" not in repr(command)
