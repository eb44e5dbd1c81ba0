"""Races: many requesters and owners at once, over HTTP and the path ``reserve.commands``
takes (``CommandHandler.execute`` with a ``kafka:`` key, as the consumer calls it), against
the same reserve. Units are conserved, nothing goes negative, each call is answered once,
and the losers get a clear 409 (or 403 for a wrong actor), never a 500 or a 503."""

from __future__ import annotations

import asyncio
import json
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from eventsourcing.persistence import RecordConflictError
from fastapi.testclient import TestClient
from faststream.kafka import KafkaBroker

from domain import commands as c
from handlers.http_api import create_http_app
from handlers.kafka_consumers import register_consumers
from services.eventstore import DuplicateReceiptError
from services.runtime import Core
from services.topics import COMMAND_RESULTS, COMMANDS, ensure_topics
from tests.adversary.campaign import Broker, Record
from tests.integration.test_http_api import STOCK_URL, catch_up, get, order_placed, post_facts
from tests.support import SKU, WAREHOUSE, auth, envelope, uid

pytestmark = pytest.mark.integration

OWNER_HOLDS = 8
THREADS = 8
CALLS = 96


def reserve_placed(order_id: str, quantity: int) -> dict[str, Any]:
    return envelope("ReservePlaced", {"order_id": order_id, "sku": SKU, "warehouse": WAREHOUSE,
                                      "quantity": quantity})


class ConflictCounter:
    """Counts the saves that lost a race (so a test knows its race really happened)."""

    def __init__(self, core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lost = 0
        save_all = core.store.save_all

        def counting(*args: Any, **kwargs: Any) -> Any:
            try:
                return save_all(*args, **kwargs)
            except (RecordConflictError, DuplicateReceiptError):
                self.lost += 1
                raise

        monkeypatch.setattr(core.store, "save_all", counting)


def test_concurrent_gives_and_cancels_conserve_units_and_losers_get_409(
        core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    conflicts = ConflictCounter(core, monkeypatch)
    app = create_http_app(core)
    owner, wants_a, wants_b = uid("own-"), uid("a-"), uid("b-")
    with TestClient(app) as setup:
        response = post_facts(setup, [
            envelope("StockLevelSet", {"warehouse": WAREHOUSE, "sku": SKU, "on_hand": 20}),
            order_placed(owner, "petrova", OWNER_HOLDS), reserve_placed(owner, OWNER_HOLDS),
            order_placed(wants_a, "ivanov", 8), order_placed(wants_b, "sidorov", 8)])
        assert response.status_code == 200, response.text
        requests: list[tuple[str, str]] = []
        for manager, order in (("ivanov", wants_a), ("sidorov", wants_b)):
            for _ in range(3):
                r = setup.post("/v1/reserve-requests", headers=auth(manager), json={
                    "from_order_id": owner, "to_order_id": order, "sku": SKU,
                    "warehouse": WAREHOUSE, "quantity": random.randint(2, 8)})
                assert r.status_code == 201, r.text
                requests.append((r.json()["request_id"], manager))

    rng = random.Random(7)
    plan = []
    for n in range(CALLS):
        request_id, requester = rng.choice(requests)
        action = rng.choice(["give", "give", "give", "cancel", "decline"])
        actor = requester if action == "cancel" else rng.choice(["petrova", "petrova", requester])
        plan.append((n, request_id, action, actor, rng.randint(1, 4), rng.random() < 0.5))

    def run(step: tuple[int, str, str, str, int, bool]) -> tuple[int, int, str]:
        n, request_id, action, actor, quantity, over_http = step
        if over_http:
            body = {"give": {"quantity": quantity}, "decline": {"reason": "занято"},
                    "cancel": None}[action]
            with TestClient(app) as client:
                r = client.post(f"/v1/reserve-requests/{request_id}/{action}", json=body,
                                headers={**auth(actor), "Idempotency-Key": f"k{n}"})
            code: str = r.json().get("error", {}).get("code", "")
            return n, r.status_code, code
        commands: dict[str, c.Command] = {
            "give": c.GiveReserve(request_id, quantity),
            "decline": c.DeclineReserveRequest(request_id, "занято"),
            "cancel": c.CancelReserveRequest(request_id)}
        cmd = commands[action]
        outcome = core.commands.execute(cmd, actor, f"kafka:{uid()}-{n}")
        return n, outcome.status, (outcome.error or {}).get("code", "")

    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(run, plan))

    assert sorted(n for n, _, _ in answers) == list(range(CALLS))  # each call answered once
    assert conflicts.lost > 0, "no save lost a race: the test did not race"
    statuses = {status for _, status, _ in answers}
    assert statuses <= {200, 403, 409}, answers
    assert 200 in statuses and 409 in statuses, answers
    for _, status, code in answers:
        if status == 409:
            assert code in {"request_not_pending", "insufficient_reserve", "exceeds_requested",
                            "exceeds_shortage"}, code
        if status == 403:
            assert code in {"not_owner", "not_requester"}, code

    held = {o: core.store.get_order(o).held(WAREHOUSE, SKU) for o in (owner, wants_a, wants_b)}
    assert all(v >= 0 for v in held.values()), held
    assert sum(held.values()) == OWNER_HOLDS, held
    given = 0
    for request_id, _ in requests:
        request = core.store.get_request(request_id)
        given += request.given
        assert request.given == 0 or request.status == "given"
    assert held[owner] == OWNER_HOLDS - given
    catch_up(core)
    with TestClient(app) as client:
        stock = get(client, STOCK_URL)
        assert (stock["on_hand"], stock["reserved"], stock["free"]) == (20, OWNER_HOLDS, 12)
        for order in (wants_a, wants_b):
            line = get(client, f"/v1/orders/{order}")["lines"][0]
            assert line["reserved"] == held[order] and line["shortage"] == 8 - held[order]


async def test_http_and_reserve_commands_racing_conserve_units_and_answer_each_once(
        core: Core, kafka_bootstrap: str) -> None:
    await ensure_topics(kafka_bootstrap, partitions=3, replication_factor=1)
    consumers = KafkaBroker(kafka_bootstrap, logger=None, enable_idempotence=False)
    register_consumers(consumers, erp=core.erp, commands=core.commands,
                       managers=frozenset({"ivanov", "petrova", "sidorov"}),
                       session_timeout_ms=6000)
    app = create_http_app(core)
    owner, wants = uid("own-"), {"ivanov": uid("a-"), "sidorov": uid("b-")}
    rng = random.Random(11)
    requests: list[tuple[str, str]] = []
    with TestClient(app) as setup:
        assert post_facts(setup, [
            envelope("StockLevelSet", {"warehouse": WAREHOUSE, "sku": SKU, "on_hand": 20}),
            order_placed(owner, "petrova", OWNER_HOLDS), reserve_placed(owner, OWNER_HOLDS),
            *(order_placed(o, m, 8) for m, o in wants.items())]).status_code == 200
        for manager in list(wants) * 3:
            r = setup.post("/v1/reserve-requests", headers=auth(manager), json={
                "from_order_id": owner, "to_order_id": wants[manager], "sku": SKU,
                "warehouse": WAREHOUSE, "quantity": rng.randint(2, 8)})
            assert r.status_code == 201, r.text
            requests.append((r.json()["request_id"], manager))

    def pick() -> tuple[str, str, str, int]:
        request_id, requester = rng.choice(requests)
        if rng.random() < 0.2:
            return request_id, "CancelReserveRequest", requester, 0
        return request_id, "GiveReserve", "petrova", rng.randint(1, 4)

    http_plan = [pick() for _ in range(30)]
    kafka_plan = [pick() for _ in range(30)]
    http_answers: list[tuple[int, str]] = []

    def http_call(step: tuple[str, str, str, int]) -> None:
        request_id, type_, actor, quantity = step
        action = "give" if type_ == "GiveReserve" else "cancel"
        with TestClient(app) as client:
            r = client.post(f"/v1/reserve-requests/{request_id}/{action}", headers=auth(actor),
                            json={"quantity": quantity} if action == "give" else None)
        http_answers.append((r.status_code, r.json().get("error", {}).get("code", "")))

    await consumers.start()
    try:
        async with Broker(kafka_bootstrap) as kafka:
            marks = await kafka.marks(COMMAND_RESULTS)
            sent: dict[str, tuple[str, str, str, int]] = {}
            with ThreadPoolExecutor(4) as pool:
                loop = asyncio.get_running_loop()
                http = [loop.run_in_executor(pool, http_call, step) for step in http_plan]
                for n, (request_id, type_, actor, quantity) in enumerate(kafka_plan):
                    command_id = uid(f"race-{n}-")
                    sent[command_id] = kafka_plan[n]
                    data: dict[str, Any] = {"request_id": request_id}
                    if quantity:
                        data["quantity"] = quantity
                    await kafka.send(COMMANDS, json.dumps({
                        "command_id": command_id, "type": type_, "actor": actor,
                        "data": data}).encode(), command_id.encode())
                await asyncio.gather(*http)

            results: dict[str, list[Any]] = {}

            def all_answered(records: list[Record]) -> bool:
                for record in records:
                    if record.key is not None and record.key.decode() in sent:
                        results.setdefault(record.key.decode(), []).append(
                            json.loads(record.value))
                records.clear()
                return set(results) == set(sent)

            await kafka.read_until(marks, all_answered, "a result for every command")
    finally:
        await consumers.stop()

    losing = {"request_not_pending", "insufficient_reserve", "exceeds_requested"}
    for command_id, answers in results.items():
        assert all(a == answers[0] for a in answers), command_id  # answered once, the same way
        assert answers[0]["ok"] or answers[0]["error"]["code"] in losing, answers[0]
    assert {s for s, _ in http_answers} <= {200, 409}, http_answers
    assert all(code in losing | {""} for _, code in http_answers), http_answers
    oks = [a[0]["ok"] for a in results.values()] + [s == 200 for s, _ in http_answers]
    assert any(oks) and not all(oks), "the race had no winner or no loser"
    held = {o: core.store.get_order(o).held(WAREHOUSE, SKU) for o in (owner, *wants.values())}
    assert all(v >= 0 for v in held.values()) and sum(held.values()) == OWNER_HOLDS, held
    given = sum(core.store.get_request(r).given for r, _ in requests)
    assert held[owner] == OWNER_HOLDS - given


def test_one_idempotency_key_raced_with_different_bodies_creates_one_request(
        core: Core) -> None:
    app = create_http_app(core)
    owner, requester = uid("own-"), uid("req-")
    with TestClient(app) as setup:
        assert post_facts(setup, [
            envelope("StockLevelSet", {"warehouse": WAREHOUSE, "sku": SKU, "on_hand": 20}),
            order_placed(owner, "petrova", OWNER_HOLDS), reserve_placed(owner, OWNER_HOLDS),
            order_placed(requester, "ivanov", 8)]).status_code == 200
    key = uid("key-")

    def ask(quantity: int) -> tuple[int, int, Any]:
        with TestClient(app) as client:
            r = client.post("/v1/reserve-requests", headers={**auth("ivanov"),
                                                             "Idempotency-Key": key}, json={
                "from_order_id": owner, "to_order_id": requester, "sku": SKU,
                "warehouse": WAREHOUSE, "quantity": quantity})
        return quantity, r.status_code, r.json()

    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(ask, [1 + n % 4 for n in range(24)]))

    created = {body["request_id"] for _, status, body in answers if status == 201}
    assert len(created) == 1, answers
    winner = core.store.get_request(created.pop()).requested
    for quantity, status, body in answers:
        if quantity == winner:
            assert status == 201, body  # a true repeat gets the first answer
        else:
            assert (status, body["error"]["code"]) == (422, "idempotency_key_reused"), body


def test_the_same_erp_batch_raced_is_applied_once(core: Core) -> None:
    app = create_http_app(core)
    order = uid("o-")
    batch = [envelope("StockLevelSet", {"warehouse": WAREHOUSE, "sku": SKU, "on_hand": 20}),
             order_placed(order, "ivanov", 8), reserve_placed(order, 5)]

    def post(_: int) -> Any:
        with TestClient(app) as client:
            r = post_facts(client, batch)
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(post, range(16)))

    assert sum(a["accepted"] for a in answers) == 3, answers
    assert all(a["accepted"] + a["duplicates"] == 3 for a in answers), answers
    assert core.store.get_order(order).held(WAREHOUSE, SKU) == 5
