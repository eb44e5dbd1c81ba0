"""Tokens are compared in constant time and never logged."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from unittest import mock

import pytest
from fastapi.testclient import TestClient

from handlers.auth import Authenticator
from handlers.http_api import create_http_app
from services.runtime import Core
from tests.integration.test_http_api import seed
from tests.support import ERP_TOKEN, TOKENS, WAREHOUSE, auth

pytestmark = pytest.mark.integration


def test_every_known_token_is_compared_with_compare_digest_whatever_is_presented() -> None:
    authenticator = Authenticator(dict(TOKENS), frozenset({ERP_TOKEN}))
    known = len(TOKENS) + 1
    for presented in ["tok-ivanov", "tok-sidorov", ERP_TOKEN, "x", "tok-ivanov-longer", "t" * 500]:
        with mock.patch("handlers.auth.hmac.compare_digest",
                        side_effect=hmac.compare_digest) as compare:
            authenticator.identify(f"Bearer {presented}")
        # every known token, every time: neither an early exit nor an `==` short-circuit
        assert compare.call_count == known, presented
        assert all(call.args[0] == presented.encode() for call in compare.call_args_list)


def test_a_match_is_found_only_through_compare_digest() -> None:
    authenticator = Authenticator(dict(TOKENS), frozenset({ERP_TOKEN}))
    with mock.patch("handlers.auth.hmac.compare_digest", return_value=False):
        assert authenticator.identify("Bearer tok-ivanov") is None


@pytest.fixture
def client(core: Core) -> Iterator[TestClient]:
    with TestClient(create_http_app(core), raise_server_exceptions=False) as c:
        yield c


def test_no_token_appears_in_the_logs_at_debug(client: TestClient, core: Core,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    owner, requester = seed(client, core)
    wrong = "tok-wrong-secret-0123456789"
    for headers in (auth("ivanov"), auth("petrova"), {"Authorization": f"Bearer {wrong}"},
                    {"Authorization": f"Bearer {ERP_TOKEN}"}, {"Authorization": wrong}):
        client.get(f"/v1/stock/{WAREHOUSE}/x", headers=headers)
        client.post("/v1/reserve-requests", headers=headers, content=b"{broken")
        client.post("/v1/reserve-requests", headers=headers, json={
            "from_order_id": owner, "to_order_id": requester, "sku": "nope",
            "warehouse": WAREHOUSE, "quantity": 1})
        client.post("/v1/erp/events", headers=headers, json={"event_id": 1})
        client.get("/v1/orders/a%00b", headers=headers)
    assert caplog.records, "nothing was logged at all: the check would prove nothing"
    text = caplog.text + " ".join(str(r.args) for r in caplog.records)
    for token in [*TOKENS, ERP_TOKEN, wrong]:
        assert token not in text
