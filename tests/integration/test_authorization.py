"""Who may do what: every command and view × requester, owner, another manager, an ERP
connector, no token and a wrong token → the contract's answer, and a refusal changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from handlers.http_api import create_http_app
from services.runtime import Core
from tests.integration.test_http_api import (
    STOCK_URL,
    ask_ok,
    assert_error,
    catch_up,
    inbox,
    order_placed,
    seed,
    state,
)
from tests.support import ERP_AUTH, SKU, WAREHOUSE, auth, uid

pytestmark = pytest.mark.integration

CALLERS = ["requester", "owner", "another manager", "erp", "no token", "wrong token"]
MANAGER = {"requester": "ivanov", "owner": "petrova", "another manager": "sidorov"}
# command → caller → (status, code) the contract asks for; None: the call is allowed
MATRIX: dict[str, dict[str, tuple[int, str] | None]] = {
    "request": {"requester": None, "owner": (403, "not_your_order"),
                "another manager": (403, "not_your_order")},
    "give": {"owner": None, "requester": (403, "not_owner"),
             "another manager": (403, "not_owner")},
    "decline": {"owner": None, "requester": (403, "not_owner"),
                "another manager": (403, "not_owner")},
    "cancel": {"requester": None, "owner": (403, "not_requester"),
               "another manager": (403, "not_requester")},
    "erp": {"erp": None, "requester": (403, "forbidden"), "owner": (403, "forbidden"),
            "another manager": (403, "forbidden")},
}
for _answers in MATRIX.values():
    _answers.setdefault("erp", (403, "forbidden"))
    _answers.setdefault("no token", (401, "unauthorized"))
    _answers.setdefault("wrong token", (401, "unauthorized"))


@pytest.fixture
def client(core: Core) -> Iterator[TestClient]:
    with TestClient(create_http_app(core)) as c:
        yield c


def headers_of(caller: str) -> dict[str, str]:
    if caller in MANAGER:
        return auth(MANAGER[caller])
    return {"erp": ERP_AUTH, "no token": {},
            "wrong token": {"Authorization": "Bearer tok-ivanov-but-not-quite"}}[caller]


def call(client: TestClient, command: str, caller: str, owner: str, requester: str,
         request_id: str) -> Any:
    h = headers_of(caller)
    if command == "request":
        return client.post("/v1/reserve-requests", headers=h, json={
            "from_order_id": owner, "to_order_id": requester, "sku": SKU,
            "warehouse": WAREHOUSE, "quantity": 1})
    if command == "erp":
        return client.post("/v1/erp/events", headers=h,
                           json=[order_placed(uid("o-"), "ivanov", 1)])
    body = {"give": {"quantity": 1}, "decline": {"reason": "нет"}, "cancel": None}[command]
    return client.post(f"/v1/reserve-requests/{request_id}/{command}", headers=h, json=body)


@pytest.mark.parametrize("command", sorted(MATRIX))
def test_every_caller_gets_the_contracts_answer_and_a_refusal_changes_nothing(
        client: TestClient, core: Core, command: str) -> None:
    owner, requester = seed(client, core)
    request_id = ask_ok(client, core, owner, requester, 4)
    answers = MATRIX[command]
    assert set(answers) == set(CALLERS)
    for caller in sorted(CALLERS, key=lambda c: answers[c] is None):  # the allowed one last
        before = state(client, core, [owner, requester], request_id)
        response = call(client, command, caller, owner, requester, request_id)
        expected = answers[caller]
        if expected is None:
            assert response.status_code in (200, 201), (caller, response.text)
            catch_up(core)
            assert state(client, core, [owner, requester], request_id) != before
        else:
            assert_error(response, *expected)
            assert state(client, core, [owner, requester], request_id) == before, caller


@pytest.mark.parametrize("url", [STOCK_URL, f"{STOCK_URL}/reserves", "/v1/inbox",
                                 "/v1/orders/{owner}", "/v1/reserve-requests/{request_id}"])
def test_views_answer_managers_only(client: TestClient, core: Core, url: str) -> None:
    owner, requester = seed(client, core)
    request_id = ask_ok(client, core, owner, requester, 4)
    url = url.format(owner=owner, request_id=request_id)
    for caller in MANAGER:
        assert client.get(url, headers=headers_of(caller)).status_code == 200
    assert_error(client.get(url, headers=ERP_AUTH), 403, "forbidden")
    for caller in ("no token", "wrong token"):
        assert_error(client.get(url, headers=headers_of(caller)), 401, "unauthorized")


def test_an_inbox_shows_only_its_own_managers_messages(client: TestClient, core: Core) -> None:
    owner, requester = seed(client, core)
    request_id = ask_ok(client, core, owner, requester, 4)
    client.post(f"/v1/reserve-requests/{request_id}/give", headers=auth("petrova"))
    catch_up(core)
    boxes = {m: inbox(client, m) for m in ("ivanov", "petrova", "sidorov")}
    assert {m["kind"] for m in boxes["petrova"]} == {"reserve_requested", "reserve_given_out"}
    assert {m["kind"] for m in boxes["ivanov"]} == {"reserve_given"}
    assert boxes["sidorov"] == []
    ids = {m: {msg["id"] for msg in box} for m, box in boxes.items()}
    assert not ids["ivanov"] & ids["petrova"]
    # naming another manager anywhere in the call shows the caller's own inbox, nothing else
    for query in ("?manager=petrova", "?owner=petrova&limit=1000", "?as=petrova"):
        response = client.get(f"/v1/inbox{query}", headers=auth("sidorov"))
        assert response.status_code == 200 and response.json() == {"messages": []}, query


# -- the same rules on reserve.commands (the actor names who acts) ------------------------------

KAFKA_MATRIX: dict[str, dict[str, str | None]] = {
    "RequestReserve": {"requester": None, "owner": "not_your_order",
                       "another manager": "not_your_order"},
    "GiveReserve": {"owner": None, "requester": "not_owner", "another manager": "not_owner"},
    "DeclineReserveRequest": {"owner": None, "requester": "not_owner",
                              "another manager": "not_owner"},
    "CancelReserveRequest": {"requester": None, "owner": "not_requester",
                             "another manager": "not_requester"},
}


@pytest.mark.parametrize("command_type", sorted(KAFKA_MATRIX))
async def test_every_actor_on_reserve_commands_gets_the_contracts_answer(
        client: TestClient, core: Core, command_type: str) -> None:
    import json

    from faststream.kafka import KafkaBroker, TestKafkaBroker
    from faststream.kafka.annotations import KafkaMessage

    from handlers.kafka_consumers import register_consumers
    from services.topics import COMMAND_RESULTS, COMMANDS

    owner, requester = seed(client, core)
    request_id = ask_ok(client, core, owner, requester, 4)
    broker = KafkaBroker()
    register_consumers(broker, erp=core.erp, commands=core.commands,
                       managers=frozenset(MANAGER.values()))
    results: list[dict[str, Any]] = []

    @broker.subscriber(COMMAND_RESULTS)
    async def on_result(msg: KafkaMessage) -> None:
        results.append(json.loads(msg.body))

    payloads: dict[str, dict[str, Any]] = {
        "RequestReserve": {"from_order_id": owner, "to_order_id": requester, "sku": SKU,
                           "warehouse": WAREHOUSE, "quantity": 1},
        "GiveReserve": {"request_id": request_id, "quantity": 1},
        "DeclineReserveRequest": {"request_id": request_id, "reason": "нет"},
        "CancelReserveRequest": {"request_id": request_id}}
    data = payloads[command_type]
    answers = {**KAFKA_MATRIX[command_type], "unknown": "unknown_actor"}
    async with TestKafkaBroker(broker):
        for caller in sorted(answers, key=lambda c: answers[c] is None):  # allowed one last
            before = state(client, core, [owner, requester], request_id)
            actor = MANAGER.get(caller, "mallory")
            await broker.publish(json.dumps({"command_id": uid("cmd-"), "type": command_type,
                                             "actor": actor, "data": data}).encode(),
                                 topic=COMMANDS)
            result = results[-1]
            if answers[caller] is None:
                assert result["ok"] is True, result
            else:
                assert result["ok"] is False and result["error"]["code"] == answers[caller]
                assert state(client, core, [owner, requester], request_id) == before, caller
