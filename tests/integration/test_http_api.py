"""The HTTP API against the contract, on a real Core (event store and views on PostgreSQL).

Views are eventually consistent: after a command the tests run the projector until it has
nothing left to apply (``catch_up``), never sleep.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from handlers.http_api import create_http_app
from services.runtime import Core
from tests.support import (
    ERP_AUTH,
    SEED_SUCCESS,
    SKU,
    WAREHOUSE,
    HttpResponse,
    auth,
    envelope,
    seed_facts,
    uid,
)

Json = dict[str, Any]

STOCK_KEYS = {"warehouse", "sku", "on_hand", "reserved", "free"}
RESERVE_KEYS = {"order_id", "number", "date", "manager", "quantity"}
ORDER_KEYS = {"order_id", "number", "date", "partner", "manager", "status", "lines"}
LINE_KEYS = {"sku", "warehouse", "ordered", "reserved", "shortage"}
REQUEST_KEYS = {"request_id", "status", "from_order_id", "to_order_id", "sku", "warehouse",
                "requested", "given", "requester", "owner", "reason"}
MESSAGE_KEYS = {"id", "kind", "text", "request_id", "created_at"}
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
STOCK_URL = f"/v1/stock/{WAREHOUSE}/{SKU}"


# -- helpers ----------------------------------------------------------------------------------

def catch_up(core: Core) -> None:
    """Brings every view up to date with the event store."""
    while core.projector.run_once():
        pass


@pytest.fixture
def client(core: Core) -> Iterator[TestClient]:
    with TestClient(create_http_app(core)) as c:
        yield c


def assert_error(response: HttpResponse, status: int, code: str | None = None) -> Json:
    """The contract's error shape, exactly: ``{"error": {"code", "message"}}``."""
    assert response.status_code == status, response.text
    body: Json = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert SNAKE_CASE.match(body["error"]["code"]), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"].strip(), body
    if code is not None:
        assert body["error"]["code"] == code, body
    error: Json = body["error"]
    return error


def post_facts(client: TestClient, facts: Json | list[Json]) -> HttpResponse:
    response: HttpResponse = client.post("/v1/erp/events", json=facts, headers=ERP_AUTH)
    return response


def order_placed(order_id: str, manager: str, quantity: int, *, number: str | None = None,
                 date: str = "2020-05-05T09:00:00", sku: str = SKU,
                 warehouse: str = WAREHOUSE) -> Json:
    return envelope("CustomerOrderPlaced", {
        "order_id": order_id, "number": number or uid("N"), "date": date, "partner": "ООО Тест",
        "manager": manager, "lines": [{"sku": sku, "warehouse": warehouse, "quantity": quantity}]})


def reserve(type_: str, order_id: str, quantity: int, *, sku: str = SKU,
            warehouse: str = WAREHOUSE) -> Json:
    return envelope(type_, {"order_id": order_id, "sku": sku, "warehouse": warehouse,
                            "quantity": quantity})


def seed(client: TestClient, core: Core) -> tuple[str, str]:
    """The seed's story: petrova's order (F4718837) holds 8; ivanov's order is short of 8."""
    owner, requester = uid("own-"), uid("req-")
    response = post_facts(client, seed_facts(owner, requester))
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 5, "duplicates": 0}
    catch_up(core)
    return owner, requester


def ask(client: TestClient, owner: str, requester: str, quantity: int = 8, *,
        actor: str = "ivanov", headers: dict[str, str] | None = None) -> HttpResponse:
    response: HttpResponse = client.post("/v1/reserve-requests", json={
        "from_order_id": owner, "to_order_id": requester, "sku": SKU, "warehouse": WAREHOUSE,
        "quantity": quantity}, headers={**auth(actor), **(headers or {})})
    return response


def ask_ok(client: TestClient, core: Core, owner: str, requester: str, quantity: int = 8) -> str:
    response = ask(client, owner, requester, quantity)
    assert response.status_code == 201, response.text
    catch_up(core)
    request_id: str = response.json()["request_id"]
    return request_id


def get(client: TestClient, url: str, manager: str = "ivanov") -> Json:
    response = client.get(url, headers=auth(manager))
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def inbox(client: TestClient, manager: str) -> list[Json]:
    messages: list[Json] = get(client, "/v1/inbox", manager)["messages"]
    for message in messages:
        assert set(message) == MESSAGE_KEYS, message
    return messages


def order_line(client: TestClient, order_id: str) -> Json:
    line: Json = get(client, f"/v1/orders/{order_id}")["lines"][0]
    return line


def state(client: TestClient, core: Core, order_ids: list[str],
          request_id: str | None = None) -> Json:
    """Everything a refused call must leave alone: views, aggregate versions, the event log."""
    catch_up(core)
    snapshot: Json = {
        "events": core.store.recorder.max_notification_id(),
        "stock": get(client, STOCK_URL),
        "reserves": get(client, f"{STOCK_URL}/reserves"),
        "inboxes": {m: inbox(client, m) for m in ("ivanov", "petrova", "sidorov")},
    }
    for order_id in order_ids:
        found = core.store.find_order(order_id)
        response = client.get(f"/v1/orders/{order_id}", headers=auth("ivanov"))
        snapshot[order_id] = (None if found is None else found.version,
                              response.status_code, response.json())
    if request_id is not None:
        snapshot["request"] = get(client, f"/v1/reserve-requests/{request_id}")
    return snapshot


# -- the seed's story ---------------------------------------------------------------------------

def test_seed_story_moves_the_reserve_and_tells_the_requester(
        client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)

    assert get(client, STOCK_URL) == {"warehouse": WAREHOUSE, "sku": SKU, "on_hand": 10,
                                      "reserved": 10, "free": 0}
    reserves = get(client, f"{STOCK_URL}/reserves")["reserves"]
    assert reserves == [
        {"order_id": owner, "number": "F4718837", "date": "2020-04-30T08:42:28",
         "manager": "petrova", "quantity": 8},
        {"order_id": requester, "number": "F4718999", "date": "2020-05-04T10:15:00",
         "manager": "ivanov", "quantity": 2},
    ]
    assert get(client, f"/v1/orders/{requester}")["status"] == "new"

    asked = ask(client, owner, requester, 8)
    assert asked.status_code == 201, asked.text
    body = asked.json()
    assert set(body) == {"request_id", "status"} and body["status"] == "pending"
    request_id = body["request_id"]
    catch_up(core)

    owners_inbox = inbox(client, "petrova")
    assert [m["kind"] for m in owners_inbox] == ["reserve_requested"]
    told = owners_inbox[0]
    assert told["request_id"] == request_id
    for who_what in ("ivanov", "8", SKU, "F4718837", "F4718999"):
        assert who_what in told["text"], told
    assert get(client, f"/v1/reserve-requests/{request_id}", "petrova")["status"] == "pending"

    given = client.post(f"/v1/reserve-requests/{request_id}/give", headers=auth("petrova"))
    assert given.status_code == 200, given.text
    catch_up(core)

    requesters_inbox = inbox(client, "ivanov")
    assert requesters_inbox[0]["text"] == SEED_SUCCESS
    assert requesters_inbox[0]["kind"] == "reserve_given"
    assert requesters_inbox[0]["request_id"] == request_id
    assert [m["text"] for m in requesters_inbox].count(SEED_SUCCESS) == 1

    to_order = get(client, f"/v1/orders/{requester}")
    assert set(to_order) == ORDER_KEYS and set(to_order["lines"][0]) == LINE_KEYS
    assert to_order["status"] == "green"
    assert to_order["lines"] == [{"sku": SKU, "warehouse": WAREHOUSE, "ordered": 10,
                                  "reserved": 10, "shortage": 0}]
    assert order_line(client, owner)["reserved"] == 0
    assert get(client, STOCK_URL) == {"warehouse": WAREHOUSE, "sku": SKU, "on_hand": 10,
                                      "reserved": 10, "free": 0}
    assert [r["order_id"] for r in get(client, f"{STOCK_URL}/reserves")["reserves"]] == [
        requester]

    assert get(client, f"/v1/reserve-requests/{request_id}") == {
        "request_id": request_id, "status": "given", "from_order_id": owner,
        "to_order_id": requester, "sku": SKU, "warehouse": WAREHOUSE, "requested": 8,
        "given": 8, "requester": "ivanov", "owner": "petrova", "reason": None,
    }


def test_reserves_are_listed_oldest_order_first_whatever_the_arrival_order(
        client: TestClient, core: Core) -> None:
    newest, oldest, middle = uid("o3-"), uid("o1-"), uid("o2-")
    response = post_facts(client, [
        order_placed(newest, "ivanov", 5, date="2021-03-01T12:00:00"),
        order_placed(oldest, "petrova", 5, date="2019-01-01T09:00:00"),
        order_placed(middle, "sidorov", 5, date="2020-06-15T18:30:00"),
        reserve("ReservePlaced", newest, 1),
        reserve("ReservePlaced", oldest, 2),
        reserve("ReservePlaced", middle, 3),
    ])
    assert response.status_code == 200, response.text
    catch_up(core)
    reserves = get(client, f"{STOCK_URL}/reserves")["reserves"]
    assert all(set(r) == RESERVE_KEYS for r in reserves)
    assert [(r["order_id"], r["manager"], r["quantity"]) for r in reserves] == [
        (oldest, "petrova", 2), (middle, "sidorov", 3), (newest, "ivanov", 1)]
    assert reserves[0]["date"].startswith("2019-01-01T09:00:00")


def test_an_order_date_sent_with_an_offset_keeps_its_local_time_everywhere(
        client: TestClient, core: Core) -> None:
    owner, requester = uid("own-"), uid("req-")
    response = post_facts(client, [
        order_placed(owner, "petrova", 8, number="F4718837", date="2020-04-30T08:42:28+03:00"),
        reserve("ReservePlaced", owner, 8), order_placed(requester, "ivanov", 8)])
    assert response.status_code == 200, response.text
    catch_up(core)
    assert get(client, f"/v1/orders/{owner}")["date"] == "2020-04-30T08:42:28"
    assert get(client, f"{STOCK_URL}/reserves")["reserves"][0]["date"] == "2020-04-30T08:42:28"
    request_id = ask_ok(client, core, owner, requester, 8)
    assert client.post(f"/v1/reserve-requests/{request_id}/give",
                       headers=auth("petrova")).status_code == 200
    catch_up(core)
    assert inbox(client, "ivanov")[0]["text"] == SEED_SUCCESS


def test_stock_of_an_item_never_heard_of_is_all_zero(client: TestClient) -> None:
    sku = uid("sku-")
    assert get(client, f"/v1/stock/{WAREHOUSE}/{sku}") == {
        "warehouse": WAREHOUSE, "sku": sku, "on_hand": 0, "reserved": 0, "free": 0}
    assert get(client, f"/v1/stock/{WAREHOUSE}/{sku}/reserves") == {"reserves": []}


# -- answering a request ------------------------------------------------------------------------

def test_owner_may_give_part_of_the_requested_quantity(client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    request_id = ask_ok(client, core, owner, requester, 8)

    given = client.post(f"/v1/reserve-requests/{request_id}/give", json={"quantity": 5},
                        headers=auth("petrova"))
    assert given.status_code == 200, given.text
    catch_up(core)

    view = get(client, f"/v1/reserve-requests/{request_id}")
    assert (view["status"], view["requested"], view["given"]) == ("given", 8, 5)
    assert order_line(client, owner)["reserved"] == 3
    assert order_line(client, requester) == {"sku": SKU, "warehouse": WAREHOUSE, "ordered": 10,
                                             "reserved": 7, "shortage": 3}
    assert get(client, f"/v1/orders/{requester}")["status"] == "new"
    assert inbox(client, "ivanov")[0]["text"] == (
        f"УСПЕХ!!! Отдан резерв 5 шт. {SKU}. Заказ клиента F4718837 от 30.04.2020 8:42:28")
    stock = get(client, STOCK_URL)
    assert (stock["on_hand"], stock["reserved"], stock["free"]) == (10, 10, 0)


def test_owner_may_decline_with_a_reason_and_the_requester_is_told(
        client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    request_id = ask_ok(client, core, owner, requester, 8)
    reason = "Клиент уже оплатил, отгрузка завтра"

    declined = client.post(f"/v1/reserve-requests/{request_id}/decline",
                           json={"reason": reason}, headers=auth("petrova"))
    assert declined.status_code == 200, declined.text
    catch_up(core)

    view = get(client, f"/v1/reserve-requests/{request_id}")
    assert (view["status"], view["reason"], view["given"]) == ("declined", reason, 0)
    told = inbox(client, "ivanov")[0]
    assert told["kind"] == "reserve_declined" and told["request_id"] == request_id
    assert reason in told["text"]
    assert order_line(client, owner)["reserved"] == 8
    assert order_line(client, requester)["reserved"] == 2


def test_requester_may_cancel_and_the_owner_is_told(client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    request_id = ask_ok(client, core, owner, requester, 8)

    cancelled = client.post(f"/v1/reserve-requests/{request_id}/cancel", headers=auth("ivanov"))
    assert cancelled.status_code == 200, cancelled.text
    catch_up(core)

    assert get(client, f"/v1/reserve-requests/{request_id}")["status"] == "cancelled"
    told = inbox(client, "petrova")[0]
    assert told["kind"] == "request_cancelled" and told["request_id"] == request_id
    assert "ivanov" in told["text"]
    before = state(client, core, [owner, requester], request_id)
    refused = client.post(f"/v1/reserve-requests/{request_id}/give", headers=auth("petrova"))
    assert_error(refused, 409, "request_not_pending")
    assert state(client, core, [owner, requester], request_id) == before


def test_give_after_decline_is_409_and_changes_nothing(client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    request_id = ask_ok(client, core, owner, requester, 8)
    declined = client.post(f"/v1/reserve-requests/{request_id}/decline",
                           json={"reason": "нет"}, headers=auth("petrova"))
    assert declined.status_code == 200, declined.text
    before = state(client, core, [owner, requester], request_id)

    refused = client.post(f"/v1/reserve-requests/{request_id}/give", headers=auth("petrova"))

    assert_error(refused, 409, "request_not_pending")
    assert state(client, core, [owner, requester], request_id) == before
    assert before["request"]["status"] == "declined"


def test_inbox_lists_the_newest_message_first(client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    first = ask_ok(client, core, owner, requester, 3)
    assert client.post(f"/v1/reserve-requests/{first}/decline", json={"reason": "позже"},
                       headers=auth("petrova")).status_code == 200
    catch_up(core)
    second = ask_ok(client, core, owner, requester, 8)
    assert client.post(f"/v1/reserve-requests/{second}/give",
                       headers=auth("petrova")).status_code == 200
    catch_up(core)

    messages = inbox(client, "ivanov")
    assert [(m["kind"], m["request_id"]) for m in messages] == [
        ("reserve_given", second), ("reserve_declined", first)]
    assert messages[0]["text"] == SEED_SUCCESS
    assert messages[0]["created_at"] >= messages[1]["created_at"]
    assert [(m["kind"], m["request_id"]) for m in inbox(client, "petrova")] == [
        ("reserve_given_out", second), ("reserve_requested", second),
        ("reserve_requested", first)]
    assert inbox(client, "petrova")[0]["text"] == (
        "Вы отдали резерв 8 шт. CTS66443 из заказа клиента F4718837 в заказ клиента F4718999 "
        "(ivanov).")


# -- errors: status and shape; nothing changed --------------------------------------------------

@pytest.mark.parametrize("url", ["/v1/reserve-requests", "/v1/erp/events"])
def test_malformed_json_is_400(client: TestClient, core: Core, url: str) -> None:
    owner, requester = seed(client, core)
    before = state(client, core, [owner, requester])
    headers = ERP_AUTH if "erp" in url else auth("ivanov")
    response = client.post(url, content=b"{not json",
                           headers={**headers, "Content-Type": "application/json"})
    assert_error(response, 400)
    assert state(client, core, [owner, requester]) == before


BAD_AUTH: list[dict[str, str]] = [
    {}, {"Authorization": "Bearer tok-nobody"}, {"Authorization": "tok-ivanov"},
    {"Authorization": "Basic tok-ivanov"}, {"Authorization": "Bearer "},
    {"Authorization": "Bearer tok-ivanov-not"},
]


@pytest.mark.parametrize(("method", "url"), [
    ("GET", STOCK_URL), ("GET", f"{STOCK_URL}/reserves"), ("GET", "/v1/orders/x"),
    ("GET", "/v1/reserve-requests/x"), ("GET", "/v1/inbox"), ("POST", "/v1/reserve-requests"),
    ("POST", "/v1/reserve-requests/x/give"), ("POST", "/v1/reserve-requests/x/decline"),
    ("POST", "/v1/reserve-requests/x/cancel"), ("POST", "/v1/erp/events"),
])
def test_a_call_without_a_valid_token_is_401(client: TestClient, method: str, url: str) -> None:
    for headers in BAD_AUTH:
        response = client.request(method, url, headers=headers,
                                  json={} if method == "POST" else None)
        assert_error(response, 401)


def test_a_manager_token_may_not_post_erp_facts(client: TestClient, core: Core) -> None:
    order_id = uid("o-")
    response = client.post("/v1/erp/events", json=[order_placed(order_id, "ivanov", 3)],
                           headers=auth("ivanov"))
    assert_error(response, 403)
    catch_up(core)
    assert_error(client.get(f"/v1/orders/{order_id}", headers=auth("ivanov")), 404)
    assert core.store.find_order(order_id) is None


@pytest.mark.parametrize(("method", "url"), [
    ("GET", STOCK_URL), ("GET", f"{STOCK_URL}/reserves"), ("GET", "/v1/orders/x"),
    ("GET", "/v1/reserve-requests/x"), ("GET", "/v1/inbox"), ("POST", "/v1/reserve-requests"),
    ("POST", "/v1/reserve-requests/x/give"), ("POST", "/v1/reserve-requests/x/decline"),
    ("POST", "/v1/reserve-requests/x/cancel"),
])
def test_an_erp_token_may_only_post_facts(client: TestClient, method: str, url: str) -> None:
    response = client.request(method, url, headers=ERP_AUTH,
                              json={} if method == "POST" else None)
    assert_error(response, 403)


def test_an_erp_token_may_not_request_a_reserve_and_nothing_changes(
        client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    before = state(client, core, [owner, requester])
    response = client.post("/v1/reserve-requests", headers=ERP_AUTH, json={
        "from_order_id": owner, "to_order_id": requester, "sku": SKU, "warehouse": WAREHOUSE,
        "quantity": 8})
    assert_error(response, 403)
    assert state(client, core, [owner, requester]) == before


@pytest.mark.parametrize(("actor", "action", "body", "code"), [
    ("sidorov", "give", None, "not_owner"),
    ("sidorov", "decline", {"reason": "не ваше"}, "not_owner"),
    ("ivanov", "give", None, "not_owner"),
    ("sidorov", "cancel", None, "not_requester"),
    ("petrova", "cancel", None, "not_requester"),
])
def test_answering_someone_elses_request_is_403_and_changes_nothing(
        client: TestClient, core: Core, actor: str, action: str, body: Json | None,
        code: str) -> None:
    owner, requester = seed(client, core)
    request_id = ask_ok(client, core, owner, requester, 8)
    before = state(client, core, [owner, requester], request_id)

    response = client.post(f"/v1/reserve-requests/{request_id}/{action}", json=body,
                           headers=auth(actor))

    assert_error(response, 403, code)
    assert state(client, core, [owner, requester], request_id) == before
    assert before["request"]["status"] == "pending"


def test_requesting_for_an_order_that_is_not_yours_is_403_and_changes_nothing(
        client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    before = state(client, core, [owner, requester])
    response = ask(client, owner, requester, 8, actor="sidorov")
    assert_error(response, 403, "not_your_order")
    assert state(client, core, [owner, requester]) == before


@pytest.mark.parametrize("which", ["from", "to"])
def test_requesting_with_an_unknown_order_is_404_and_changes_nothing(
        client: TestClient, core: Core, which: str) -> None:
    owner, requester = seed(client, core)
    unknown = uid("nope-")
    before = state(client, core, [owner, requester, unknown])
    if which == "from":
        response = ask(client, unknown, requester, 1)
    else:
        response = ask(client, owner, unknown, 1)
    assert_error(response, 404, "order_not_found")
    assert state(client, core, [owner, requester, unknown]) == before


def test_an_unknown_order_is_404(client: TestClient) -> None:
    assert_error(client.get(f"/v1/orders/{uid('nope-')}", headers=auth("ivanov")), 404,
                 "order_not_found")


@pytest.mark.parametrize("request_id", [
    "00000000-0000-4000-8000-000000000000", "not-a-uuid", "запрос",
], ids=["unknown-uuid", "not-a-uuid", "cyrillic"])
@pytest.mark.parametrize(("actor", "action", "body"), [
    (None, None, None), ("petrova", "give", {"quantity": 1}),
    ("petrova", "decline", {"reason": "нет"}), ("ivanov", "cancel", None),
])
def test_an_unknown_request_id_is_404_and_changes_nothing(
        client: TestClient, core: Core, request_id: str, actor: str | None, action: str | None,
        body: Json | None) -> None:
    owner, requester = seed(client, core)
    before = state(client, core, [owner, requester])
    if action is None:
        response = client.get(f"/v1/reserve-requests/{request_id}", headers=auth("ivanov"))
    else:
        assert actor is not None
        response = client.post(f"/v1/reserve-requests/{request_id}/{action}", json=body,
                               headers=auth(actor))
    assert_error(response, 404, "request_not_found")
    assert state(client, core, [owner, requester]) == before


def test_requesting_more_than_the_owner_holds_is_409_and_changes_nothing(
        client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    before = state(client, core, [owner, requester])
    assert_error(ask(client, owner, requester, 9), 409, "insufficient_reserve")
    assert state(client, core, [owner, requester]) == before


def test_requesting_more_than_the_shortage_is_409_and_changes_nothing(
        client: TestClient, core: Core) -> None:
    owner, requester = uid("own-"), uid("req-")
    response = post_facts(client, [
        envelope("StockLevelSet", {"warehouse": WAREHOUSE, "sku": SKU, "on_hand": 20}),
        order_placed(owner, "petrova", 10), reserve("ReservePlaced", owner, 10),
        order_placed(requester, "ivanov", 10), reserve("ReservePlaced", requester, 7),
    ])
    assert response.status_code == 200, response.text
    before = state(client, core, [owner, requester])

    assert_error(ask(client, owner, requester, 4), 409, "exceeds_shortage")

    assert state(client, core, [owner, requester]) == before
    assert before[requester][2]["lines"][0]["shortage"] == 3


def test_requesting_from_your_own_order_is_409_and_changes_nothing(
        client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    mine = uid("mine-")
    assert post_facts(client, [order_placed(mine, "ivanov", 4),
                               reserve("ReservePlaced", mine, 4)]).status_code == 200
    before = state(client, core, [owner, requester, mine])
    assert_error(ask(client, mine, requester, 2), 409, "own_reserve")
    assert state(client, core, [owner, requester, mine]) == before


def test_giving_more_than_the_owner_still_holds_is_409_and_changes_nothing(
        client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    request_id = ask_ok(client, core, owner, requester, 8)
    assert post_facts(client, [reserve("ReserveReleased", owner, 5)]).status_code == 200
    before = state(client, core, [owner, requester], request_id)

    refused = client.post(f"/v1/reserve-requests/{request_id}/give", headers=auth("petrova"))

    assert_error(refused, 409, "insufficient_reserve")
    assert state(client, core, [owner, requester], request_id) == before
    partial = client.post(f"/v1/reserve-requests/{request_id}/give", json={"quantity": 3},
                          headers=auth("petrova"))
    assert partial.status_code == 200, partial.text


def test_giving_more_than_requested_is_409_and_changes_nothing(
        client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    request_id = ask_ok(client, core, owner, requester, 3)
    before = state(client, core, [owner, requester], request_id)
    refused = client.post(f"/v1/reserve-requests/{request_id}/give", json={"quantity": 4},
                          headers=auth("petrova"))
    assert_error(refused, 409, "exceeds_requested")
    assert state(client, core, [owner, requester], request_id) == before


def test_giving_from_a_shipped_order_is_409_and_changes_nothing(
        client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    request_id = ask_ok(client, core, owner, requester, 8)
    shipped = post_facts(client, envelope("OrderShipped", {"order_id": owner}))
    assert shipped.status_code == 200, shipped.text
    before = state(client, core, [owner, requester], request_id)

    refused = client.post(f"/v1/reserve-requests/{request_id}/give", headers=auth("petrova"))

    assert_error(refused, 409, "order_closed")
    assert state(client, core, [owner, requester], request_id) == before


@pytest.mark.parametrize("change", [
    {"quantity": None}, {"quantity": "8"}, {"quantity": 0}, {"quantity": -1},
    {"quantity": 2.5}, {"quantity": True}, {"extra": "field"}, {"sku": ""}, {"to": "same"},
], ids=["missing", "string", "zero", "negative", "float", "bool", "extra-field",
        "empty-sku", "same-order"])
def test_an_invalid_reserve_request_is_422_and_changes_nothing(
        client: TestClient, core: Core, change: Json) -> None:
    owner, requester = seed(client, core)
    body: Json = {"from_order_id": owner, "to_order_id": requester, "sku": SKU,
                  "warehouse": WAREHOUSE, "quantity": 8}
    for key, value in change.items():
        if key == "to":
            body["from_order_id"] = requester
        elif value is None:
            del body[key]
        else:
            body[key] = value
    before = state(client, core, [owner, requester])

    response = client.post("/v1/reserve-requests", json=body, headers=auth("ivanov"))

    error = assert_error(response, 422)
    if "to" in change:
        assert error["code"] == "same_order"
    assert state(client, core, [owner, requester]) == before


@pytest.mark.parametrize(("action", "body"), [
    ("give", {"quantity": "8"}), ("give", {"quantity": 0}), ("give", {"n": 8}),
    ("decline", {}), ("decline", {"reason": ""}), ("decline", {"reason": 5}),
    ("cancel", {"why": "x"}),
], ids=["give-string", "give-zero", "give-extra", "decline-missing", "decline-empty",
        "decline-number", "cancel-extra"])
def test_an_invalid_answer_is_refused_and_changes_nothing(
        client: TestClient, core: Core, action: str, body: Json) -> None:
    owner, requester = seed(client, core)
    request_id = ask_ok(client, core, owner, requester, 8)
    before = state(client, core, [owner, requester], request_id)
    actor = "ivanov" if action == "cancel" else "petrova"

    response = client.post(f"/v1/reserve-requests/{request_id}/{action}", json=body,
                           headers=auth(actor))

    assert_error(response, 422)
    assert state(client, core, [owner, requester], request_id) == before


# -- ERP facts ----------------------------------------------------------------------------------

def test_an_erp_batch_is_all_or_nothing(client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    placed = uid("new-")
    batch = [order_placed(placed, "sidorov", 4), reserve("ReservePlaced", placed, 2),
             reserve("ReserveReleased", owner, 9), envelope("StockLevelSet", {
                 "warehouse": WAREHOUSE, "sku": SKU, "on_hand": 99})]
    before = state(client, core, [owner, requester, placed])

    response = post_facts(client, batch)

    error = assert_error(response, 409, "release_exceeds_reserve")
    assert batch[2]["event_id"] in error["message"] and "release" in error["message"]
    assert state(client, core, [owner, requester, placed]) == before
    assert_error(client.get(f"/v1/orders/{placed}", headers=auth("ivanov")), 404)
    assert core.store.find_order(placed) is None
    # none of the refused batch's event_ids was remembered: the good facts apply later
    again = post_facts(client, batch[:2] + batch[3:])
    assert again.json() == {"accepted": 3, "duplicates": 0}
    catch_up(core)
    assert order_line(client, placed)["reserved"] == 2
    assert get(client, STOCK_URL)["on_hand"] == 99


def test_a_repeated_erp_event_is_a_duplicate_and_changes_nothing(
        client: TestClient, core: Core) -> None:
    owner, requester = uid("own-"), uid("req-")
    facts = seed_facts(owner, requester)
    assert post_facts(client, facts).json() == {"accepted": 5, "duplicates": 0}
    before = state(client, core, [owner, requester])

    repeat = post_facts(client, facts)

    assert repeat.status_code == 200, repeat.text
    assert repeat.json() == {"accepted": 0, "duplicates": 5}
    assert state(client, core, [owner, requester]) == before
    mixed = post_facts(client, [facts[2], reserve("ReserveReleased", owner, 1), facts[4]])
    assert mixed.json() == {"accepted": 1, "duplicates": 2}
    twice = reserve("ReserveReleased", owner, 2)
    assert post_facts(client, [twice, twice]).json() == {"accepted": 1, "duplicates": 1}
    catch_up(core)
    assert order_line(client, owner)["reserved"] == 5


def test_a_single_envelope_is_accepted_without_an_array(client: TestClient, core: Core) -> None:
    sku = uid("sku-")
    fact = envelope("StockLevelSet", {"warehouse": WAREHOUSE, "sku": sku, "on_hand": 7})
    assert post_facts(client, fact).json() == {"accepted": 1, "duplicates": 0}
    assert post_facts(client, fact).json() == {"accepted": 0, "duplicates": 1}
    catch_up(core)
    assert get(client, f"/v1/stock/{WAREHOUSE}/{sku}")["free"] == 7


def test_a_batch_of_1000_is_accepted_and_of_1001_is_422(client: TestClient, core: Core) -> None:
    sku = uid("sku-")

    def levels(n: int) -> list[Json]:
        return [envelope("StockLevelSet", {"warehouse": WAREHOUSE, "sku": sku, "on_hand": i})
                for i in range(1, n + 1)]

    assert_error(post_facts(client, levels(1001)), 422)
    catch_up(core)
    assert get(client, f"/v1/stock/{WAREHOUSE}/{sku}")["on_hand"] == 0
    assert post_facts(client, levels(1000)).json() == {"accepted": 1000, "duplicates": 0}
    catch_up(core)
    assert get(client, f"/v1/stock/{WAREHOUSE}/{sku}")["on_hand"] == 1000


@pytest.mark.parametrize("bad", [
    {"type": "OrderTeleported"}, {"type": None}, {"occurred_at": "yesterday"},
    {"data": {"warehouse": WAREHOUSE, "sku": SKU, "on_hand": -1}},
    {"data": {"warehouse": WAREHOUSE, "sku": SKU, "on_hand": "5"}},
    {"data": {"warehouse": WAREHOUSE, "sku": SKU, "on_hand": 5, "extra": 1}},
    {"event_id": None},
], ids=["unknown-type", "no-type", "bad-time", "negative-level", "string-level", "extra-data",
        "no-event-id"])
def test_an_invalid_envelope_is_422_and_nothing_of_its_batch_applies(
        client: TestClient, core: Core, bad: Json) -> None:
    owner, requester = seed(client, core)
    placed = uid("new-")
    broken = envelope("StockLevelSet", {"warehouse": WAREHOUSE, "sku": SKU, "on_hand": 5})
    for key, value in bad.items():
        if value is None:
            del broken[key]
        else:
            broken[key] = value
    before = state(client, core, [owner, requester, placed])

    response = post_facts(client, [order_placed(placed, "sidorov", 1), broken])

    assert_error(response, 422)
    assert state(client, core, [owner, requester, placed]) == before
    assert core.store.find_order(placed) is None


def test_a_reserve_for_an_unknown_order_is_409(client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    unknown = uid("nope-")
    before = state(client, core, [owner, requester, unknown])
    response = post_facts(client, [reserve("ReservePlaced", unknown, 1)])
    error = assert_error(response, 409, "unknown_order")
    assert unknown in error["message"]
    assert state(client, core, [owner, requester, unknown]) == before


def test_an_order_placed_twice_is_409(client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    before = state(client, core, [owner, requester])
    response = post_facts(client, [order_placed(owner, "sidorov", 3)])
    assert_error(response, 409, "order_exists")
    assert state(client, core, [owner, requester]) == before


# -- Idempotency-Key ----------------------------------------------------------------------------

def test_a_repeated_idempotency_key_returns_the_first_result_and_creates_nothing(
        client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    key = {"Idempotency-Key": uid("key-")}
    first = ask(client, owner, requester, 8, headers=key)
    assert first.status_code == 201, first.text
    before = state(client, core, [owner, requester], first.json()["request_id"])

    again = ask(client, owner, requester, 8, headers=key)

    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert state(client, core, [owner, requester], first.json()["request_id"]) == before
    assert [m["request_id"] for m in inbox(client, "petrova")] == [first.json()["request_id"]]


def test_an_idempotency_key_reused_for_a_different_body_is_422(
        client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    key = {"Idempotency-Key": uid("key-")}
    first = ask(client, owner, requester, 8, headers=key)
    assert first.status_code == 201, first.text
    before = state(client, core, [owner, requester], first.json()["request_id"])

    reused = ask(client, owner, requester, 5, headers=key)

    assert_error(reused, 422, "idempotency_key_reused")
    assert state(client, core, [owner, requester], first.json()["request_id"]) == before


def test_a_repeated_give_with_its_key_returns_200_again_not_409(
        client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    request_id = ask_ok(client, core, owner, requester, 8)
    key = {**auth("petrova"), "Idempotency-Key": uid("key-")}
    first = client.post(f"/v1/reserve-requests/{request_id}/give", json={"quantity": 6},
                        headers=key)
    assert first.status_code == 200, first.text
    before = state(client, core, [owner, requester], request_id)

    again = client.post(f"/v1/reserve-requests/{request_id}/give", json={"quantity": 6},
                        headers=key)

    assert (again.status_code, again.json()) == (200, first.json())
    assert state(client, core, [owner, requester], request_id) == before
    assert before["request"]["given"] == 6
    assert order_line(client, requester)["reserved"] == 8


def test_a_refused_command_repeated_with_its_key_is_refused_the_same_way(
        client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    key = {"Idempotency-Key": uid("key-")}
    first = ask(client, owner, requester, 9, headers=key)
    assert_error(first, 409, "insufficient_reserve")
    before = state(client, core, [owner, requester])
    again = ask(client, owner, requester, 9, headers=key)
    assert (again.status_code, again.json()) == (409, first.json())
    assert state(client, core, [owner, requester]) == before


def test_a_refusal_stands_for_its_key_after_the_state_would_allow_the_command(
        client: TestClient, core: Core) -> None:
    # The first try of a command goes to the rules before looking up its key: here the rules
    # accept the repeat, and only the save (which refuses a stored key) keeps the first answer.
    owner, requester = seed(client, core)
    assert post_facts(client, [reserve("ReserveReleased", owner, 8)]).status_code == 200
    catch_up(core)
    key = {"Idempotency-Key": uid("key-")}
    first = ask(client, owner, requester, 3, headers=key)
    assert_error(first, 409, "insufficient_reserve")
    assert post_facts(client, [reserve("ReservePlaced", owner, 8)]).status_code == 200
    catch_up(core)
    before = state(client, core, [owner, requester])

    again = ask(client, owner, requester, 3, headers=key)

    assert (again.status_code, again.json()) == (409, first.json())
    assert state(client, core, [owner, requester]) == before
    assert ask(client, owner, requester, 3).status_code == 201  # the rules would accept it


def test_idempotency_keys_are_per_manager(client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    third = uid("third-")
    assert post_facts(client, [order_placed(third, "sidorov", 8)]).status_code == 200
    key = {"Idempotency-Key": uid("key-")}
    mine = ask(client, owner, requester, 3, headers=key)
    theirs = client.post("/v1/reserve-requests", headers={**auth("sidorov"), **key}, json={
        "from_order_id": owner, "to_order_id": third, "sku": SKU, "warehouse": WAREHOUSE,
        "quantity": 3})
    assert (mine.status_code, theirs.status_code) == (201, 201), (mine.text, theirs.text)
    assert mine.json()["request_id"] != theirs.json()["request_id"]


# -- order statuses from ERP facts --------------------------------------------------------------

def test_order_turns_green_when_the_erp_reserves_its_shortage(
        client: TestClient, core: Core) -> None:
    _, requester = seed(client, core)
    assert post_facts(client, [reserve("ReservePlaced", requester, 8)]).status_code == 200
    catch_up(core)
    order = get(client, f"/v1/orders/{requester}")
    assert order["status"] == "green"
    assert order["lines"][0]["shortage"] == 0
    assert get(client, STOCK_URL)["reserved"] == 18


def test_a_shipped_order_consumes_its_reserves(client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    shipped = post_facts(client, envelope("OrderShipped", {"order_id": owner}))
    assert shipped.json() == {"accepted": 1, "duplicates": 0}
    catch_up(core)

    order = get(client, f"/v1/orders/{owner}")
    assert order["status"] == "shipped"
    assert order["lines"][0]["reserved"] == 0 and order["lines"][0]["shortage"] == 0
    stock = get(client, STOCK_URL)
    assert stock["reserved"] == 2
    assert stock["free"] == 0  # the shipped units left the warehouse; none became free
    assert stock["free"] == stock["on_hand"] - stock["reserved"]
    assert [r["order_id"] for r in get(client, f"{STOCK_URL}/reserves")["reserves"]] == [
        requester]
    assert_error(ask(client, owner, requester, 1), 409, "order_closed")


def test_a_cancelled_order_releases_its_reserves(client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    cancelled = post_facts(client, envelope("OrderCancelled", {"order_id": owner}))
    assert cancelled.json() == {"accepted": 1, "duplicates": 0}
    catch_up(core)

    order = get(client, f"/v1/orders/{owner}")
    assert order["status"] == "cancelled"
    assert order["lines"][0]["reserved"] == 0 and order["lines"][0]["shortage"] == 0
    assert get(client, STOCK_URL) == {"warehouse": WAREHOUSE, "sku": SKU, "on_hand": 10,
                                      "reserved": 2, "free": 8}
    assert [r["order_id"] for r in get(client, f"{STOCK_URL}/reserves")["reserves"]] == [
        requester]
    refused = post_facts(client, [reserve("ReservePlaced", owner, 1)])
    assert_error(refused, 409, "order_closed")
