"""Group commit on real PostgreSQL: saves written together, each answered on its own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import RecordConflictError, StoredEvent

from domain.commands import GiveReserve, RequestReserve
from handlers.wire import parse_erp_body
from services.eventstore import DuplicateReceiptError, Receipt, ReservesRecorder
from services.group_commit import Save
from services.runtime import Core
from tests.support import SKU, WAREHOUSE, seed_facts, uid


def probe_event(originator: object, version: int) -> StoredEvent:
    return StoredEvent(originator_id=originator, originator_version=version,  # type: ignore[arg-type]
                       topic="tests:Probe", state=b"{}")


def probe_receipt(key: str) -> Receipt:
    return Receipt(key, "fp", 200, {"ok": True})


def _held(recorder: ReservesRecorder) -> tuple[threading.Event, threading.Event]:
    """Holds the writer busy in its next group (``entered`` is set then) until ``release`` is
    set, so that the saves submitted meanwhile queue up and are written as one group."""
    entered, release = threading.Event(), threading.Event()
    original = recorder.writer._write_group

    def slow(group: list[Save]) -> dict[int, object]:
        entered.set()
        release.wait(10)
        recorder.writer._write_group = original  # type: ignore[method-assign]
        return original(group)  # type: ignore[return-value]

    recorder.writer._write_group = slow  # type: ignore[method-assign,assignment]
    return entered, release


def _submit_all(recorder: ReservesRecorder, saves: list[Save]) -> list[object]:
    """Submits a first save that holds the writer, then ``saves`` together; returns each
    save's outcome (its notification ids or its exception), in order."""
    entered, release = _held(recorder)
    with ThreadPoolExecutor(len(saves) + 1) as pool:
        opener = pool.submit(recorder.writer.submit, Save([probe_event(uuid4(), 1)]))
        assert entered.wait(10), "the writer never took the first save"
        futures = []
        for save in saves:
            futures.append(pool.submit(recorder.writer.submit, save))
        _wait_for(lambda: recorder.writer._queue.qsize() >= len(saves))
        release.set()
        opener.result(timeout=10)
        outcomes: list[object] = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=10))
            except Exception as e:
                outcomes.append(e)
    return outcomes


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached")


@dataclass
class MixedGroup:
    """Six saves for one group, two refused for a version, one for a receipt key; the fresh
    aggregates they write and the key two of them share. (The async writer's tests use it
    too: both writers must answer it alike.)"""

    saves: list[Save]
    fresh: list[UUID]
    dup: str


def mixed_group(recorder: ReservesRecorder) -> MixedGroup:
    stored = uuid4()
    recorder.insert_events([probe_event(stored, 1)])
    fresh = [uuid4() for _ in range(4)]
    dup = uid("dup-")
    return MixedGroup([
        Save([probe_event(fresh[0], 1)], [probe_receipt(uid("k-"))]),
        Save([probe_event(stored, 1)]),                       # version 1 was stored before
        Save([probe_event(fresh[1], 1), probe_event(fresh[1], 2)]),
        Save([probe_event(fresh[1], 2)]),                     # the save before took version 2
        Save([probe_event(fresh[2], 1)], [probe_receipt(dup)]),
        Save([probe_event(fresh[3], 1)], [probe_receipt(dup)]),  # same key as the save before
    ], fresh, dup)


def check_mixed(group: MixedGroup, outcomes: list[object], recorder: ReservesRecorder) -> None:
    """Each of the six saves answered on its own, and only the accepted ones stored."""
    assert isinstance(outcomes[1], RecordConflictError)
    assert isinstance(outcomes[3], RecordConflictError)
    assert isinstance(outcomes[5], DuplicateReceiptError)
    for n in (0, 2, 4):
        assert isinstance(outcomes[n], list) and outcomes[n], outcomes[n]
    assert len(outcomes[2]) == 2  # type: ignore[arg-type]
    assert [len(recorder.select_events(a)) for a in group.fresh] == [1, 2, 1, 0]
    assert recorder.select_receipts([group.dup])[group.dup].status == 200


def test_a_conflict_fails_only_its_own_save(core: Core) -> None:
    recorder = core.store.reserves_recorder
    group = mixed_group(recorder)
    groups_before = recorder.writer.groups
    outcomes = _submit_all(recorder, group.saves)
    check_mixed(group, outcomes, recorder)
    # the opener alone, then the six together: two groups, not seven transactions
    assert recorder.writer.groups - groups_before == 2


def test_a_receipt_stored_before_takes_back_the_saves_other_receipts(core: Core) -> None:
    recorder = core.store.reserves_recorder
    seen = uid("seen-")
    assert recorder.insert_receipt(probe_receipt(seen))
    other = uid("k-")
    refused = uuid4()
    outcomes = _submit_all(recorder, [
        Save([probe_event(refused, 1)], [probe_receipt(other), probe_receipt(seen)]),
        Save([probe_event(uuid4(), 1)], [probe_receipt(uid("k-"))]),
    ])
    assert isinstance(outcomes[0], DuplicateReceiptError)
    assert isinstance(outcomes[1], list)
    assert recorder.select_receipts([other]) == {}
    assert recorder.select_events(refused) == []


def test_a_group_that_fails_to_commit_fails_every_caller(core: Core) -> None:
    recorder = core.store.reserves_recorder
    original = recorder.writer._write_group

    def broken(group: list[Save]) -> dict[int, object]:
        raise RuntimeError("the connection dropped during COMMIT")

    recorder.writer._write_group = broken  # type: ignore[method-assign,assignment]
    try:
        with pytest.raises(RuntimeError):
            recorder.writer.submit(Save([probe_event(uuid4(), 1)]))
    finally:
        recorder.writer._write_group = original  # type: ignore[method-assign]
    assert recorder.writer.submit(Save([probe_event(uuid4(), 1)]))


def test_concurrent_gives_are_grouped_and_each_answered(core: Core) -> None:
    """Sixteen gives on sixteen requests at once: every one succeeds, in fewer transactions
    than gives, and each order ends with what it was given."""
    pairs = []
    for _ in range(16):
        owner, requester = uid("o-"), uid("r-")
        core.erp.ingest(parse_erp_body(seed_facts(owner, requester)))
        asked = core.commands.execute(RequestReserve(owner, requester, SKU, WAREHOUSE, 8),
                                      "ivanov")
        assert asked.status == 201, asked.body
        pairs.append((owner, requester, asked.body["request_id"]))
    writer = core.store.reserves_recorder.writer
    before = (writer.groups, writer.saves)
    barrier = threading.Barrier(len(pairs))

    def give(request_id: str) -> int:
        barrier.wait()
        return core.commands.execute(GiveReserve(request_id), "petrova", key=uid("g-")).status

    with ThreadPoolExecutor(len(pairs)) as pool:
        statuses = list(pool.map(give, [p[2] for p in pairs]))
    assert statuses == [200] * len(pairs)
    groups, saves = writer.groups - before[0], writer.saves - before[1]
    assert saves == len(pairs)
    assert groups < saves, (groups, saves)
    for owner, requester, _ in pairs:
        assert core.store.get_order(owner).held(WAREHOUSE, SKU) == 0
        assert core.store.get_order(requester).held(WAREHOUSE, SKU) == 10


def test_a_closed_writer_refuses_saves_instead_of_leaving_them_waiting(core: Core) -> None:
    recorder = core.store.reserves_recorder
    assert recorder.writer.submit(Save([probe_event(uuid4(), 1)]))  # its thread is running
    recorder.writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        recorder.writer.submit(Save([probe_event(uuid4(), 1)]))
