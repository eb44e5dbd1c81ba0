"""Commands awaited on an event loop (services/async_store.py), as the HTTP API runs them:
the same outcomes as on a thread, saves grouped, each answered on its own, races settled by
the versions, repeats answered from their receipts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import RecordConflictError
from fastapi.testclient import TestClient

from domain import commands as c
from domain.errors import OrderNotFoundError
from handlers.http_api import UNAVAILABLE, create_http_app
from handlers.outcome import Outcome
from handlers.wire import parse_erp_body
from services.async_store import AsyncStore
from services.eventstore import DuplicateReceiptError
from services.group_commit import Save
from services.runtime import Core
from tests.integration.test_group_commit import (
    check_mixed,
    mixed_group,
    probe_event,
    probe_receipt,
)
from tests.support import SKU, WAREHOUSE, auth, seed_facts, uid

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(core: Core) -> AsyncIterator[AsyncStore]:
    s = AsyncStore(core.store, core.database_url)
    await s.open()
    yield s
    await s.close()


def _seeded(core: Core, count: int) -> list[tuple[str, str, str]]:
    """``count`` seed stories, each with a pending request of 8 from petrova's order."""
    triples = []
    for _ in range(count):
        owner, requester = uid("o-"), uid("r-")
        core.erp.ingest(parse_erp_body(seed_facts(owner, requester)))
        asked = core.commands.execute(c.RequestReserve(owner, requester, SKU, WAREHOUSE, 8),
                                      "ivanov")
        assert asked.status == 201, asked.body
        triples.append((owner, requester, asked.body["request_id"]))
    return triples


async def _held_group(store: AsyncStore, saves: list[Save]) -> list[object]:
    """Holds the writer in a first group until ``saves`` have all queued, so they are written
    as one group; returns each one's outcome (notification ids or the exception), in order."""
    writer = store.writer
    entered, release = asyncio.Event(), asyncio.Event()
    original = writer._write_group

    async def slow(group: Any) -> Any:
        entered.set()
        await release.wait()
        writer._write_group = original  # type: ignore[method-assign]
        return await original(group)

    writer._write_group = slow  # type: ignore[method-assign,assignment]
    opener = asyncio.create_task(writer.submit(Save([probe_event(uuid4(), 1)])))
    await asyncio.wait_for(entered.wait(), 10)
    tasks = [asyncio.create_task(writer.submit(save)) for save in saves]
    while writer._queue.qsize() < len(saves):  # noqa: ASYNC110 - lets the new tasks run
        await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(opener, 10)
    return list(await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10))


async def test_a_group_on_the_loop_answers_each_save_on_its_own(
        core: Core, store: AsyncStore) -> None:
    recorder = core.store.reserves_recorder
    group = mixed_group(recorder)
    seen, taken_back = uid("seen-"), uid("k-")
    assert recorder.insert_receipt(probe_receipt(seen))
    groups_before = store.writer.groups
    outcomes = await _held_group(store, [
        *group.saves,
        Save([probe_event(uuid4(), 1)], [probe_receipt(taken_back), probe_receipt(seen)]),
    ])
    check_mixed(group, outcomes[:6], recorder)
    assert isinstance(outcomes[6], DuplicateReceiptError)  # a key stored before
    assert recorder.select_receipts([taken_back]) == {}
    # the opener alone, then the seven together: two groups, not eight transactions
    assert store.writer.groups - groups_before == 2


async def test_a_group_that_fails_fails_its_callers_and_the_writer_goes_on(
        store: AsyncStore) -> None:
    original = store.writer._write_group

    async def broken(group: Any) -> Any:
        raise RuntimeError("the connection dropped during COMMIT")

    store.writer._write_group = broken  # type: ignore[method-assign,assignment]
    try:
        with pytest.raises(RuntimeError):
            await store.writer.submit(Save([probe_event(uuid4(), 1)]))
    finally:
        store.writer._write_group = original  # type: ignore[method-assign]
    assert await store.writer.submit(Save([probe_event(uuid4(), 1)]))


async def test_a_writer_whose_task_was_cancelled_starts_another_for_the_next_save(
        store: AsyncStore) -> None:
    assert await store.writer.submit(Save([probe_event(uuid4(), 1)]))
    task = store.writer._task
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.wait_for(store.writer.submit(Save([probe_event(uuid4(), 1)])), 10)
    assert store.writer._task is not task


async def test_a_closed_store_refuses_saves_instead_of_leaving_them_waiting(
        core: Core) -> None:
    store = AsyncStore(core.store, core.database_url)
    await store.open()
    assert await store.writer.submit(Save([probe_event(uuid4(), 1)]))
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.writer.submit(Save([probe_event(uuid4(), 1)]))


async def test_an_unreachable_database_is_an_error_the_api_answers_with_503(
        core: Core) -> None:
    store = AsyncStore(core.store, "postgresql://postgres@127.0.0.1:1/none", timeout=0.3)
    await store.open()
    try:
        with pytest.raises(UNAVAILABLE):
            await core.commands.execute_async(c.GiveReserve(str(uuid4())), "petrova", None,
                                              store)
    finally:
        await store.close()


def test_the_api_awaits_commands_on_its_loop_and_without_a_lifespan_on_a_thread(
        core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    triples = _seeded(core, 2)
    app = create_http_app(core)
    calls: list[str] = []
    execute, execute_async = core.commands.execute, core.commands.execute_async

    def on_thread(*args: Any) -> Outcome:
        calls.append("thread")
        return execute(*args)

    async def on_loop(*args: Any) -> Outcome:
        calls.append("loop")
        return await execute_async(*args)

    monkeypatch.setattr(core.commands, "execute", on_thread)
    monkeypatch.setattr(core.commands, "execute_async", on_loop)
    with TestClient(app) as client:  # the lifespan runs: a store on the client's loop
        given = client.post(f"/v1/reserve-requests/{triples[0][2]}/give", headers=auth("petrova"))
    bare = TestClient(app)  # no lifespan: no store on that loop
    given_too = bare.post(f"/v1/reserve-requests/{triples[1][2]}/give", headers=auth("petrova"))
    assert (given.status_code, given_too.status_code) == (200, 200), (given.text, given_too.text)
    assert calls == ["loop", "thread"]


async def test_loads_asked_while_one_runs_go_together_and_each_gets_its_own_objects(
        core: Core, store: AsyncStore) -> None:
    triples = await asyncio.to_thread(_seeded, core, 6)
    owners = [owner for owner, _, _ in triples]
    queries, loads = store.loads.queries, store.loads.loads
    # one order in every load, the first order in all of them: six loads, merged
    answers = await asyncio.gather(*(store.get_orders(owners[0], o) for o in owners))
    assert store.loads.loads - loads == 6
    assert store.loads.queries - queries < 6, "no load was merged with another"
    for answer, owner in zip(answers, owners, strict=True):
        assert [o.order_id for o in answer] == [owners[0], owner]
        assert answer[1].held(WAREHOUSE, SKU) == 8
    firsts = [answer[0] for answer in answers]
    assert len({id(o) for o in firsts}) == len(firsts)  # never one object for two callers
    with pytest.raises(OrderNotFoundError):
        await store.get_orders(owners[0], uid("none-"))


async def test_a_failed_load_fails_its_batch_and_the_next_load_runs(store: AsyncStore,
                                                                     core: Core) -> None:
    triples = await asyncio.to_thread(_seeded, core, 1)
    original = store.loads._query
    calls = 0

    async def broken(ids: list[Any]) -> Any:
        nonlocal calls
        calls += 1
        raise RuntimeError("the query failed")

    store.loads._query = broken
    try:
        outcomes = await asyncio.gather(*(store.get_orders(triples[0][0]) for _ in range(3)),
                                        return_exceptions=True)
    finally:
        store.loads._query = original
    assert all(isinstance(o, RuntimeError) for o in outcomes), outcomes
    assert calls <= 2  # the first alone, the two asked meanwhile together
    [order] = await store.get_orders(triples[0][0])
    assert order.held(WAREHOUSE, SKU) == 8


async def test_concurrent_gives_on_the_loop_are_grouped_and_each_answered(
        core: Core, store: AsyncStore) -> None:
    triples = await asyncio.to_thread(_seeded, core, 16)
    before = (store.writer.groups, store.writer.saves)
    outcomes = await asyncio.gather(*(
        core.commands.execute_async(c.GiveReserve(request_id), "petrova", uid("g-"), store)
        for _, _, request_id in triples))
    assert [o.status for o in outcomes] == [200] * len(triples), [o.body for o in outcomes]
    groups, saves = store.writer.groups - before[0], store.writer.saves - before[1]
    assert saves == len(triples)
    assert groups < saves, (groups, saves)
    for owner, requester, request_id in triples:
        assert core.store.get_order(owner).held(WAREHOUSE, SKU) == 0
        assert core.store.get_order(requester).held(WAREHOUSE, SKU) == 10
        assert core.store.get_request(request_id).status == "given"


async def test_gives_racing_for_one_reserve_on_the_loop_move_it_once(
        core: Core, store: AsyncStore) -> None:
    """Three requesters ask for all 8 units of one order; the owner gives to all three at
    once: one give wins, the others lose the race, reload, and are refused by the rules."""
    owner = uid("o-")
    requesters = [uid("r-") for _ in range(3)]
    facts = seed_facts(owner, requesters[0])
    for other in requesters[1:]:
        facts += [f for f in seed_facts(owner, other)
                  if f["type"] == "CustomerOrderPlaced" and f["data"]["order_id"] == other]
    core.erp.ingest(parse_erp_body(facts))
    request_ids = []
    for requester in requesters:
        asked = core.commands.execute(c.RequestReserve(owner, requester, SKU, WAREHOUSE, 8),
                                      "ivanov")
        assert asked.status == 201, asked.body
        request_ids.append(asked.body["request_id"])
    held_before = [core.store.get_order(r).held(WAREHOUSE, SKU) for r in requesters]
    lost = 0
    save_all = store.save_all

    async def counting(*args: Any) -> None:
        nonlocal lost
        try:
            await save_all(*args)
        except RecordConflictError:
            lost += 1
            raise

    store.save_all = counting  # type: ignore[method-assign,assignment]
    outcomes = await asyncio.gather(*(
        core.commands.execute_async(c.GiveReserve(r), "petrova", None, store)
        for r in request_ids))
    assert sorted(o.status for o in outcomes) == [200, 409, 409], [o.body for o in outcomes]
    assert {o.body["error"]["code"] for o in outcomes if o.status == 409} <= {
        "insufficient_reserve", "request_not_pending"}
    assert core.store.get_order(owner).held(WAREHOUSE, SKU) == 0
    gained = [core.store.get_order(r).held(WAREHOUSE, SKU) - before
              for r, before in zip(requesters, held_before, strict=True)]
    assert lost >= 1, "no give lost a race: the test did not race"
    winner = [o.status for o in outcomes].index(200)
    assert gained == [8 if n == winner else 0 for n in range(3)], gained


Run = Callable[[c.Command, str, str | None], Awaitable[Outcome]]


async def test_the_loop_and_a_thread_give_the_same_answers(core: Core, store: AsyncStore) -> None:
    """The same commands, one story run on a thread and its twin on the loop: the same
    statuses and bodies (ids aside), refusals and repeats included."""
    async def on_thread(cmd: c.Command, actor: str, key: str | None) -> Outcome:
        return await asyncio.to_thread(core.commands.execute, cmd, actor, key)

    async def on_loop(cmd: c.Command, actor: str, key: str | None) -> Outcome:
        return await core.commands.execute_async(cmd, actor, key, store)

    async def story(run: Run) -> list[tuple[int, Any]]:
        owner, requester = uid("o-"), uid("r-")
        await asyncio.to_thread(core.erp.ingest, parse_erp_body(seed_facts(owner, requester)))
        key = uid("k-")
        answers: list[Outcome] = []
        asked = await run(c.RequestReserve(owner, requester, SKU, WAREHOUSE, 8), "ivanov", key)
        answers.append(asked)
        answers.append(await run(c.RequestReserve(owner, requester, SKU, WAREHOUSE, 8),
                                 "ivanov", key))                        # a repeat
        answers.append(await run(c.RequestReserve(owner, requester, SKU, WAREHOUSE, 7),
                                 "ivanov", key))                        # the key reused
        request_id = asked.body["request_id"]
        answers.append(await run(c.GiveReserve(request_id, 3), "ivanov", None))   # not owner
        answers.append(await run(c.GiveReserve(request_id, 99), "petrova", None))  # too many
        answers.append(await run(c.GiveReserve(uid("nope-")), "petrova", None))   # unknown
        give_key = uid("g-")
        answers.append(await run(c.GiveReserve(request_id, 3), "petrova", give_key))
        answers.append(await run(c.GiveReserve(request_id, 3), "petrova", give_key))  # repeat
        answers.append(await run(c.DeclineReserveRequest(request_id, "нет"), "petrova", None))
        answers.append(await run(c.RequestReserve(owner, uid("none-"), SKU, WAREHOUSE, 1),
                                 "ivanov", None))                       # unknown order
        held = [core.store.get_order(o).held(WAREHOUSE, SKU) for o in (owner, requester)]
        assert held == [5, 5], held
        return [(o.status, {k: v for k, v in o.body.items() if k != "request_id"}
                 if o.status < 400 else o.body["error"]["code"]) for o in answers]

    threaded = await story(on_thread)
    looped = await story(on_loop)
    assert looped == threaded
    assert [s for s, _ in looped] == [201, 201, 422, 403, 409, 404, 200, 200, 409, 404]
