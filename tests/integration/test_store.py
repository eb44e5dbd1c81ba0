"""The event store on real PostgreSQL: atomic moves, conflicts, receipts, on every backend."""

from __future__ import annotations

import threading
from pathlib import Path

from domain.commands import GiveReserve, RequestReserve
from handlers.wire import parse_erp_body
from services.runtime import Core
from tests.support import SKU, WAREHOUSE, seed_facts, uid


def _seed(core: Core) -> tuple[str, str]:
    owner, requester = uid("o-"), uid("r-")
    result = core.erp.ingest(parse_erp_body(seed_facts(owner, requester)))
    assert result.accepted == 5
    return owner, requester


def test_give_moves_reserve_atomically(core: Core) -> None:
    owner, requester = _seed(core)
    asked = core.commands.execute(RequestReserve(owner, requester, SKU, WAREHOUSE, 8), "ivanov")
    assert asked.status == 201, asked.body
    given = core.commands.execute(GiveReserve(asked.body["request_id"]), "petrova")
    assert given.status == 200, given.body
    assert core.store.get_order(owner).held(WAREHOUSE, SKU) == 0
    assert core.store.get_order(requester).held(WAREHOUSE, SKU) == 10
    assert core.store.get_order(requester).status == "green"


def test_concurrent_gives_one_wins_the_other_is_refused(core: Core) -> None:
    owner, requester = _seed(core)
    third = uid("t-")
    core.erp.ingest(parse_erp_body([{
        "event_id": uid(), "type": "CustomerOrderPlaced", "occurred_at": "2020-05-05T00:00:00Z",
        "data": {"order_id": third, "number": "N3", "date": "2020-05-05T00:00:00",
                 "partner": "p", "manager": "sidorov",
                 "lines": [{"sku": SKU, "warehouse": WAREHOUSE, "quantity": 8}]}}]))
    a = core.commands.execute(RequestReserve(owner, requester, SKU, WAREHOUSE, 8), "ivanov")
    b = core.commands.execute(RequestReserve(owner, third, SKU, WAREHOUSE, 8), "sidorov")
    barrier = threading.Barrier(2)
    outcomes = []

    def give(request_id: str) -> None:
        barrier.wait()
        outcomes.append(core.commands.execute(GiveReserve(request_id), "petrova"))

    threads = [threading.Thread(target=give, args=(r.body["request_id"],)) for r in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(o.status for o in outcomes)
    assert statuses == [200, 409], [o.body for o in outcomes]
    loser = next(o for o in outcomes if o.status == 409)
    assert loser.body["error"]["code"] == "insufficient_reserve"
    held = (core.store.get_order(owner).held(WAREHOUSE, SKU)
            + core.store.get_order(requester).held(WAREHOUSE, SKU)
            + core.store.get_order(third).held(WAREHOUSE, SKU))
    assert held == 10  # 8 + 2 before, conserved


def test_repeated_idempotency_key_returns_first_result_and_changes_nothing(core: Core) -> None:
    owner, requester = _seed(core)
    cmd = RequestReserve(owner, requester, SKU, WAREHOUSE, 3)
    first = core.commands.execute(cmd, "ivanov", "http:ivanov:k1")
    version = core.store.get_order(owner).version
    again = core.commands.execute(cmd, "ivanov", "http:ivanov:k1")
    assert again == first
    reused = core.commands.execute(RequestReserve(owner, requester, SKU, WAREHOUSE, 4), "ivanov",
                                   "http:ivanov:k1")
    assert reused.status == 422 and reused.body["error"]["code"] == "idempotency_key_reused"
    assert core.store.get_order(owner).version == version


def test_duplicate_erp_event_ids_change_nothing(core: Core, tmp_path: Path) -> None:
    owner, requester = uid("o-"), uid("r-")
    facts = seed_facts(owner, requester)
    assert core.erp.ingest(parse_erp_body(facts)).accepted == 5
    again = core.erp.ingest(parse_erp_body(facts))
    assert (again.accepted, again.duplicates) == (0, 5)
    assert core.store.get_order(owner).held(WAREHOUSE, SKU) == 8


def test_a_full_erp_batch_is_stored_in_one_save_without_hanging(core: Core) -> None:
    """1,000 facts (2,000 events) in one save: psycopg's pipeline mode deadlocked on such a
    save over the embedded PostgreSQL's Unix socket; the recorder no longer pipelines."""
    prefix = uid()
    facts = [{
        "event_id": f"{prefix}-{i}", "type": "CustomerOrderPlaced",
        "occurred_at": "2020-04-30T08:42:28",
        "data": {"order_id": f"{prefix}-{i}", "number": f"N{i}", "date": "2020-04-30T08:42:28",
                 "partner": "p", "manager": "ivanov",
                 "lines": [{"sku": SKU, "warehouse": WAREHOUSE, "quantity": 1}]},
    } for i in range(1000)]
    done: list[int] = []
    worker = threading.Thread(
        target=lambda: done.append(core.erp.ingest(parse_erp_body(facts)).accepted), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert done == [1000], "the save of one full batch did not finish within 120 s"
