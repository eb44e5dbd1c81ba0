"""Hypothesis against the HTTP API on a real Core: every bad input gets the contract's 4xx and
error body, and neither the event store nor any view changes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.http_api import create_http_app
from services.runtime import Core
from tests.adversary.campaign import clean_error
from tests.adversary.inputs import http_inputs
from tests.adversary.world import World, build_world

pytestmark = pytest.mark.integration


@pytest.fixture
def world(core: Core) -> Iterator[World]:
    with TestClient(create_http_app(core), raise_server_exceptions=False) as client:
        yield build_world(core, client)


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_a_bad_http_input_is_refused_cleanly_and_changes_nothing(world: World,
                                                                 data: st.DataObject) -> None:
    before = world.state()
    bad = data.draw(http_inputs(world.target), label="bad input")
    response = world.client.request(bad.method, bad.path, content=bad.body,
                                    headers=dict(bad.headers))
    problem = clean_error(response, bad.statuses, bad.codes)
    assert problem is None, f"{bad.what}: {problem}"
    assert world.state() == before, bad.what


def test_a_body_over_the_limit_is_413_and_changes_nothing(world: World) -> None:
    before = world.state()
    response = world.client.post("/v1/erp/events", content=b"[" + b" " * (8 * 1024 * 1024) + b"]",
                                 headers={"Authorization": f"Bearer {world.target.erp_token}"})
    assert clean_error(response, frozenset({413}), frozenset({"body_too_large"})) is None
    assert world.state() == before


@pytest.mark.parametrize("body", [
    b'{"quantity": ' + b"9" * 5000 + b"}",  # more digits than Python converts
    b"[" * 100_000 + b"]" * 100_000,  # deeper than the parser's recursion limit
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
])
def test_unreadable_json_is_400_not_500(world: World, body: bytes) -> None:
    before = world.state()
    response = world.client.post("/v1/reserve-requests", content=body,
                                 headers={"Authorization": "Bearer tok-ivanov"})
    assert clean_error(response, frozenset({400}), frozenset({"malformed_json"})) is None
    assert world.state() == before


@pytest.mark.parametrize("field", ["warehouse", "sku"])
def test_a_nul_in_a_fact_is_refused_so_no_view_can_stall_on_it(world: World, field: str) -> None:
    data = {"warehouse": "w", "sku": "s", "on_hand": 1, field: "a\x00b"}
    before = world.state()
    response = world.client.post("/v1/erp/events", json={
        "event_id": "nul-1", "type": "StockLevelSet", "occurred_at": "2020-01-01T00:00:00Z",
        "data": data}, headers={"Authorization": f"Bearer {world.target.erp_token}"})
    assert clean_error(response, frozenset({422}), frozenset({"validation_failed"})) is None
    assert world.state() == before
    assert world.core.projector.run_once() == 0  # nothing stuck for the views


@pytest.mark.parametrize("url", ["/v1/orders/a%00b", "/v1/stock/w%00/s",
                                 "/v1/stock/w/s%00/reserves", "/v1/reserve-requests/r%00"])
def test_a_nul_in_a_view_path_is_a_4xx_not_500(world: World, url: str) -> None:
    response = world.client.get(url, headers={"Authorization": "Bearer tok-ivanov"})
    assert clean_error(response, frozenset({404, 422})) is None
