"""The checker: reads the event store, the views, a full replay and the topics, and proves each
guarantee over the workload's history. Every failed proof is a sentence in ``violations``."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from psycopg_pool import ConnectionPool

from domain.ids import event_uuid, order_uuid, request_uuid, stock_item_uuid
from domain.order import CustomerOrder
from domain.request import ReserveRequest
from domain.stock import StockItem
from handlers.erp import receipt_key
from projections.projector import READ_MODEL_TABLES, Projector, create_schema
from services.eventstore import ReserveStore, postgres_env
from services.topics import ORDER_STATUS, RESERVE_EVENTS
from tests.faults.history import OK, REFUSED, History, Op

FINAL_EVENTS = {"ReserveGiven", "ReserveRequestDeclined", "ReserveRequestCancelled",
                "ReserveRequestExpired"}
COMMAND_EVENT = {"give": "ReserveGiven", "decline": "ReserveRequestDeclined",
                 "cancel": "ReserveRequestCancelled"}
FACT_EVENT = {"ReservePlaced": "ReservePlaced", "ReserveReleased": "ReserveReleased",
              "OrderShipped": "OrderShipped", "OrderCancelled": "OrderCancelled",
              "CustomerOrderPlaced": "OrderPlaced"}


@dataclass
class CheckReport:
    events: int = 0
    commands_lost: int = 0
    effects_doubled: int = 0
    invariant_violations: int = 0
    topic_messages: int = 0
    topic_duplicates: int = 0
    status_messages: int = 0
    violations: list[str] = field(default_factory=list)

    def lost(self, why: str) -> None:
        self.commands_lost += 1
        self.violations.append(f"lost: {why}")

    def doubled(self, why: str) -> None:
        self.effects_doubled += 1
        self.violations.append(f"doubled: {why}")

    def broken(self, why: str) -> None:
        self.invariant_violations += 1
        self.violations.append(f"invariant: {why}")


@dataclass
class Stored:
    """Every stored event, decoded, with its position."""

    events: list[tuple[int, Any]]
    by_aggregate: dict[UUID, list[Any]]

    def types(self, aggregate_id: UUID) -> Counter[str]:
        return Counter(type(e).__name__ for e in self.by_aggregate.get(aggregate_id, []))


def read_store(store: ReserveStore) -> Stored:
    events: list[tuple[int, Any]] = []
    by_aggregate: dict[UUID, list[Any]] = defaultdict(list)
    position = 0
    while page := store.recorder.select_notifications(position, 1000,
                                                      inclusive_of_start=False):
        for notification in page:
            event = store.mapper.to_domain_event(notification)
            events.append((notification.id, event))
            by_aggregate[event.originator_id].append(event)
        position = page[-1].id
    return Stored(events, by_aggregate)


def _result(op: Op) -> dict[str, Any]:
    """The command's answer body, whichever channel carried it."""
    answer = op.answer or {}
    return answer.get("result") or {} if op.channel == "kafka" else answer


def check_commands(report: CheckReport, history: History, stored: Stored,
                   receipts: dict[str, Any]) -> None:
    """Every success answer is in effect exactly once; a refusal changed nothing."""
    for op in history.ops:
        if op.kind == "request":
            key = f"kafka:{op.key}" if op.channel == "kafka" else f"http:{op.actor}:{op.key}"
            rid = request_uuid(key)
            found = stored.types(rid)["ReserveRequested"]
            if op.outcome == OK:
                if str(rid) != _result(op).get("request_id"):
                    report.broken(f"op {op.index}: answered request id is not the key's")
                if found != 1:
                    (report.lost if found == 0 else report.doubled)(
                        f"op {op.index} request answered ok, {found} ReserveRequested stored")
                if key not in receipts:
                    report.lost(f"op {op.index}: no receipt for key {key}")
            elif op.outcome == REFUSED and found:
                report.doubled(f"op {op.index}: refused request still created {rid}")
        elif op.kind in COMMAND_EVENT:
            rid = UUID(op.payload["request_id"])
            found = stored.types(rid)[COMMAND_EVENT[op.kind]]
            if op.outcome == OK and found != 1:
                (report.lost if found == 0 else report.doubled)(
                    f"op {op.index} {op.kind} answered ok, {found} {COMMAND_EVENT[op.kind]}")
            if op.outcome == OK and op.kind == "give":
                given = [e for e in stored.by_aggregate[rid] if type(e).__name__ == "ReserveGiven"]
                if given and getattr(given[0], "quantity", None) != _result(op).get("given"):
                    report.broken(f"op {op.index}: give answered {_result(op).get('given')}, "
                                  f"stored {getattr(given[0], 'quantity', None)}")


def check_facts(report: CheckReport, history: History, stored: Stored,
                receipts: dict[str, Any]) -> None:
    """Every accepted ERP fact has its receipt and its event once; refused ones left none."""
    accepted: Counter[tuple[UUID, str]] = Counter()
    maybe: Counter[tuple[UUID, str]] = Counter()
    levels: Counter[UUID] = Counter()
    maybe_levels: Counter[UUID] = Counter()
    for op in history.ops:
        if op.actor != "erp":
            continue
        for fact in op.payload:
            has_receipt = receipt_key(fact["event_id"]) in receipts
            if op.outcome == OK and not has_receipt:
                report.lost(f"op {op.index}: accepted fact {fact['event_id']} has no receipt")
            if op.outcome == REFUSED and has_receipt:
                report.doubled(f"op {op.index}: refused fact {fact['event_id']} was applied")
            data = fact["data"]
            if fact["type"] == "StockLevelSet":
                target = stock_item_uuid(data["warehouse"], data["sku"])
                (levels if op.outcome == OK else maybe_levels)[target] += op.outcome != REFUSED
                continue
            key = (order_uuid(data["order_id"]), FACT_EVENT[fact["type"]])
            (accepted if op.outcome == OK else maybe)[key] += op.outcome != REFUSED
    for aggregate, kind in {**maybe, **accepted}:
        found = stored.types(aggregate)[kind]
        low, high = accepted[(aggregate, kind)], accepted[(aggregate, kind)] + maybe[
            (aggregate, kind)]
        if found < low:
            report.lost(f"{kind} on {aggregate}: {low} accepted, {found} stored")
        elif found > high:
            report.doubled(f"{kind} on {aggregate}: {high} sent, {found} stored")
    for aggregate in set(levels) | set(maybe_levels):
        found = stored.types(aggregate)["StockLevelSet"]
        if not levels[aggregate] <= found <= levels[aggregate] + maybe_levels[aggregate]:
            report.violations.append(f"stock levels on {aggregate}: {levels[aggregate]} "
                                     f"accepted, {found} stored")
            report.effects_doubled += found > levels[aggregate]
            report.commands_lost += found < levels[aggregate]


def check_domain(report: CheckReport, store: ReserveStore, stored: Stored,
                 views: dict[str, list[tuple[Any, ...]]]) -> None:
    """on hand = free + Σ reserves, no reserve below 0, one final state per request, and the
    views agree with the aggregates."""
    held: Counter[tuple[str, str]] = Counter()
    for aggregate_id, events in stored.by_aggregate.items():
        aggregate: Any = store.repository.get(aggregate_id)
        if isinstance(aggregate, CustomerOrder):
            order = aggregate
            for line in order.lines.values():
                if not 0 <= line.reserved <= line.ordered:
                    report.broken(f"order {order.order_id} line {line.sku}: reserved "
                                  f"{line.reserved} of {line.ordered}")
                if order.is_active:
                    held[(line.warehouse, line.sku)] += line.reserved
        elif isinstance(aggregate, ReserveRequest):
            finals = [type(e).__name__ for e in events if type(e).__name__ in FINAL_EVENTS]
            if len(finals) != 1:
                report.broken(f"request {aggregate_id} has final events {finals}")
            if not aggregate.is_final:
                report.broken(f"request {aggregate_id} is still {aggregate.status}")
    stock = {(r[0], r[1]): (int(r[2]), int(r[3])) for r in views["rm_stock"]}
    reserves: Counter[tuple[str, str]] = Counter()
    for warehouse, sku, _order, quantity in views["rm_reserves"]:
        reserves[(warehouse, sku)] += int(quantity)
        if quantity <= 0:
            report.broken(f"reserve view row of {quantity} for {sku}")
    for row in views["rm_order_lines"]:
        if int(row[5]) < 0:
            report.broken(f"order line view {row[0]} {row[2]} reserved {row[5]}")
    for (warehouse, sku), (on_hand, reserved) in stock.items():
        item: Any = store.repository.get(stock_item_uuid(warehouse, sku))
        assert isinstance(item, StockItem)
        free = on_hand - reserved
        if on_hand != free + reserves[(warehouse, sku)]:
            report.broken(f"{sku}: on hand {on_hand} != free {free} + reserves "
                          f"{reserves[(warehouse, sku)]}")
        if reserved != held[(warehouse, sku)]:
            report.broken(f"{sku}: view reserves {reserved}, orders hold {held[(warehouse, sku)]}")
        if on_hand != item.on_hand:
            report.broken(f"{sku}: view on hand {on_hand}, aggregate {item.on_hand}")


def read_views(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall()
            for t in READ_MODEL_TABLES}


def check_replay(report: CheckReport, store: ReserveStore, admin_url: str, scratch_url: str,
                 live: dict[str, list[tuple[Any, ...]]]) -> None:
    """The live views equal a full replay into a scratch database."""
    scratch = psycopg.conninfo.conninfo_to_dict(scratch_url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{scratch}"')
    pool: ConnectionPool[Any] = ConnectionPool(scratch_url, min_size=1, max_size=2, open=True,
                                               kwargs={"autocommit": True})
    try:
        with pool.connection() as conn:
            create_schema(conn)
        projector = Projector(store, pool)  # a fresh database: every projection from 0
        while projector.run_once(limit=2000):
            pass
        with pool.connection() as conn:
            replayed = read_views(conn)
    finally:
        pool.close()
    for table in READ_MODEL_TABLES:
        if live[table] != replayed[table]:
            differ = set(live[table]) ^ set(replayed[table])
            report.broken(f"view {table} differs from a full replay in {len(differ)} rows, "
                          f"e.g. {sorted(map(str, differ))[:2]}")


async def read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every message on ``topic``, from the start of each partition to its end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p)
                      for p in consumer.partitions_for_topic(topic) or set()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out: list[dict[str, Any]] = []
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in batches.items():
                out += [json.loads(m.value or b"{}") for m in messages]
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


def check_topics(report: CheckReport, stored: Stored, events: list[dict[str, Any]],
                 statuses: list[dict[str, Any]]) -> None:
    """Every stored event is on reserve.events (repeats only with the same content), nothing
    else is; every status change is on order.status."""
    report.topic_messages, report.status_messages = len(events), len(statuses)
    seen: dict[str, set[str]] = defaultdict(set)
    for message in events:
        seen[message["event_id"]].add(json.dumps(message, sort_keys=True))
    report.topic_duplicates = len(events) - len(seen)
    stored_ids = {}
    for position, event in stored.events:
        stored_ids[str(event_uuid(event.originator_id, event.originator_version))] = (
            position, type(event).__name__)
    for event_id, (position, kind) in stored_ids.items():
        if event_id not in seen:
            report.lost(f"stored event {position} ({kind}) never reached reserve.events")
    for event_id, bodies in seen.items():
        if event_id not in stored_ids:
            report.broken(f"reserve.events carries {event_id}, which is not stored")
        if len(bodies) > 1:
            report.broken(f"reserve.events repeats {event_id} with different content")
    status_ids = {m["event_id"] for m in statuses}
    for event_id, (position, kind) in stored_ids.items():
        if kind == "OrderStatusChanged" and event_id not in status_ids:
            report.lost(f"status change {position} never reached order.status")


def check_all(history: History, database_url: str, admin_url: str, scratch_url: str,
              bootstrap: str) -> CheckReport:
    report = CheckReport()
    store = ReserveStore(env=postgres_env(database_url))
    try:
        stored = read_store(store)
        report.events = len(stored.events)
        with psycopg.connect(database_url, autocommit=True) as conn:
            receipts = {r[0]: r[1] for r in conn.execute(
                "SELECT key, status FROM processed_messages").fetchall()}
            views = read_views(conn)
        check_commands(report, history, stored, receipts)
        check_facts(report, history, stored, receipts)
        check_domain(report, store, stored, views)
        check_replay(report, store, admin_url, scratch_url, views)
        events = asyncio.run(read_topic(bootstrap, RESERVE_EVENTS))
        statuses = asyncio.run(read_topic(bootstrap, ORDER_STATUS))
        check_topics(report, stored, events, statuses)
    finally:
        store.close()
    return report
