"""The checker itself must be able to fail: each proof is fed a history that breaks it."""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from uuid import UUID, uuid4

from domain.ids import event_uuid, order_uuid, request_uuid
from handlers.erp import receipt_key
from tests.faults.checker import CheckReport, Stored, check_commands, check_facts, check_topics
from tests.faults.history import OK, REFUSED, UNKNOWN, History, Op


def _event(kind: str, aggregate: UUID, version: int, **fields: Any) -> Any:
    event = type(kind, (), {})()
    event.originator_id, event.originator_version = aggregate, version
    event.__dict__.update(fields)
    return event


def _stored(*events: Any) -> Stored:
    by_aggregate: dict[UUID, list[Any]] = defaultdict(list)
    for event in events:
        by_aggregate[event.originator_id].append(event)
    return Stored(list(enumerate(events, start=1)), by_aggregate)


def _op(kind: str, outcome: str, payload: Any, *, key: str = "k1", actor: str = "ivanov",
        answer: Any = None) -> Op:
    op = Op(0, kind, "http", key, payload, actor)
    op.finish(200 if outcome == OK else 409, answer, outcome)
    return op


def test_a_request_answered_ok_but_never_stored_is_lost() -> None:
    rid = request_uuid("http:ivanov:k1")
    history = History([_op("request", OK, {}, answer={"request_id": str(rid)})])
    report = CheckReport()
    check_commands(report, history, _stored(), {"http:ivanov:k1": 201})
    assert report.commands_lost == 1


def test_a_request_answered_ok_and_stored_once_passes() -> None:
    rid = request_uuid("http:ivanov:k1")
    history = History([_op("request", OK, {}, answer={"request_id": str(rid)})])
    report = CheckReport()
    check_commands(report, history, _stored(_event("ReserveRequested", rid, 1)),
                   {"http:ivanov:k1": 201})
    assert (report.commands_lost, report.effects_doubled, report.violations) == (0, 0, [])


def test_a_refused_request_that_left_a_request_behind_is_an_effect() -> None:
    rid = request_uuid("http:ivanov:k1")
    report = CheckReport()
    check_commands(report, History([_op("request", REFUSED, {})]),
                   _stored(_event("ReserveRequested", rid, 1)), {})
    assert report.effects_doubled == 1


def test_a_give_stored_twice_is_doubled_and_a_wrong_quantity_is_caught() -> None:
    rid = uuid4()
    history = History([_op("give", OK, {"request_id": str(rid)}, answer={"given": 3})])
    report = CheckReport()
    check_commands(report, history, _stored(
        _event("ReserveRequested", rid, 1), _event("ReserveGiven", rid, 2, quantity=2),
        _event("ReserveGiven", rid, 3, quantity=2)), {})
    assert report.effects_doubled == 1
    assert report.invariant_violations == 1


def test_erp_facts_accepted_must_be_stored_once_and_unanswered_ones_at_most_once() -> None:
    order = "o-1"
    placed = {"event_id": "e1", "type": "ReservePlaced",
              "data": {"order_id": order, "sku": "S", "warehouse": "W", "quantity": 1}}
    maybe = {**placed, "event_id": "e2"}
    history = History([_op("reserve", OK, [placed], actor="erp"),
                       _op("reserve", UNKNOWN, [maybe], actor="erp")])
    receipts = {receipt_key("e1"): 200}
    agg = order_uuid(order)
    ok = CheckReport()
    check_facts(ok, history, _stored(_event("ReservePlaced", agg, 2),
                                     _event("ReservePlaced", agg, 3)), receipts)
    assert ok.violations == []
    doubled = CheckReport()
    check_facts(doubled, history, _stored(*(_event("ReservePlaced", agg, v) for v in (2, 3, 4))),
                receipts)
    assert doubled.effects_doubled == 1
    lost = CheckReport()
    check_facts(lost, history, _stored(), {})
    assert lost.commands_lost == 2  # no receipt, and no event


def test_topics_must_carry_every_stored_event_and_status_change_once_in_content() -> None:
    agg = uuid4()
    stored = _stored(_event("OrderPlaced", agg, 1), _event("OrderStatusChanged", agg, 2))
    first, second = (str(event_uuid(agg, v)) for v in (1, 2))
    good = [{"event_id": first, "position": 1}, {"event_id": second, "position": 2},
            {"event_id": first, "position": 1}]
    report = CheckReport()
    check_topics(report, stored, good, [{"event_id": second}])
    assert (report.violations, report.topic_duplicates) == ([], 1)

    report = CheckReport()
    check_topics(report, stored, [{"event_id": first, "position": 1},
                                  {"event_id": first, "position": 9}], [])
    assert report.commands_lost == 2  # the status change is on neither topic
    assert report.invariant_violations == 1  # a repeat with other content
