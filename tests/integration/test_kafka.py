"""The Kafka side of the contract, against the real (Tansu) broker and real PostgreSQL.

The topics are shared by the whole session's broker, so every test reads only from the end
offsets it took before it acted, and filters by its own keys. The service's subscribers run in
their consumer groups (what is under test), started once per module on one shared database;
the tests' own readers use manual partition assignment (no group, no slow join).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker

from domain.commands import GiveReserve, RequestReserve
from domain.ids import event_uuid
from handlers.kafka_consumers import COMMANDS_GROUP, ERP_GROUP, register_consumers
from handlers.wire import parse_erp_body
from projections.relay import Relay
from services.runtime import Core
from services.topics import (
    COMMAND_RESULTS,
    COMMANDS,
    DLQ,
    ERP_EVENTS,
    ORDER_STATUS,
    RESERVE_EVENTS,
    ensure_topics,
)
from tests.conftest import PgServer
from tests.support import SKU, WAREHOUSE, envelope, eventually, make_settings, seed_facts, uid

pytestmark = pytest.mark.integration

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"
Marks: TypeAlias = dict[TopicPartition, int]

MANAGERS = frozenset({"ivanov", "petrova", "sidorov"})
SESSION_TIMEOUT_MS = 6000
DEADLINE_S = 30.0  # generous: a group join alone takes ~3 s on Tansu
EVENT_KEYS = {"event_id", "type", "aggregate_id", "position", "occurred_at", "data"}
STATUS_KEYS = {"event_id", "order_id", "number", "status", "previous_status", "lines",
               "occurred_at"}
RESULT_KEYS = {"command_id", "ok", "error", "result"}


# -- waiting and reading ---------------------------------------------------------------------


class Kafka:
    """The tests' own view of the broker: a producer and a group-less reader."""

    def __init__(self, bootstrap: str, producer: AIOKafkaProducer,
                 reader: AIOKafkaConsumer, partitions: dict[str, list[TopicPartition]]) -> None:
        self.bootstrap = bootstrap
        self.producer = producer
        self.reader = reader
        self.partitions = partitions
        self.inspectors: dict[str, AIOKafkaConsumer] = {}

    async def send(self, topic: str, value: bytes, key: str | bytes | None) -> tuple[int, int]:
        """Produces one message; its (partition, offset)."""
        raw_key = key.encode() if isinstance(key, str) else key
        meta = await self.producer.send_and_wait(topic, value, key=raw_key)
        return meta.partition, meta.offset

    async def send_json(self, topic: str, value: Any, key: str) -> tuple[int, int]:
        return await self.send(topic, json.dumps(value, ensure_ascii=False).encode(), key)

    async def ends(self, *topics: str) -> Marks:
        """The topics' end offsets now (where the next message will be written).

        Tansu's ListOffsets answers the last record *batch*'s base offset + 1, not the high
        watermark, so after a batch of several records it reports too little. The true end is
        the position after reading that last batch (on real Kafka: after its last record).
        """
        tps = [tp for t in topics for tp in self.partitions[t]]
        ends: Marks = await self.reader.end_offsets(tps)
        pending = {tp: offset - 1 for tp, offset in ends.items() if offset > 0}
        if not pending:
            return ends
        self.reader.assign(list(pending))
        for tp, offset in pending.items():
            self.reader.seek(tp, offset)
        deadline = time.monotonic() + DEADLINE_S
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read the last batch of {sorted(pending)}")
            batch = await self.reader.getmany(*pending, timeout_ms=100)
            for tp, records in batch.items():
                if records:
                    ends[tp] = await self.reader.position(tp)
                    del pending[tp]
        return ends

    async def read(self, marks: Marks, stop: Marks | None = None,
                   until: Callable[[list[Record]], bool] | None = None,
                   within: float = DEADLINE_S) -> list[Record]:
        """Records from ``marks`` on, in partition order: up to ``stop`` (a bounded read), or
        until ``until`` holds for what was read (then whatever else is there by then)."""
        tps = list(marks)
        self.reader.assign(tps)
        for tp, offset in marks.items():
            self.reader.seek(tp, offset)
        by_tp: dict[TopicPartition, list[Record]] = {tp: [] for tp in tps}
        deadline = time.monotonic() + within

        async def done() -> bool:
            if stop is not None:
                return all([await self.reader.position(tp) >= stop[tp] for tp in tps])
            assert until is not None
            return until([r for rs in by_tp.values() for r in rs])

        while not await done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within} s reading {sorted(map(str, tps))}")
            batch = await self.reader.getmany(timeout_ms=100)
            for tp, records in batch.items():
                if stop is not None:
                    records = [r for r in records if r.offset < stop[tp]]
                by_tp[tp].extend(records)
        return [r for tp in tps for r in by_tp[tp]]

    async def read_to_end(self, marks: Marks) -> list[Record]:
        """Everything from ``marks`` to the end offsets right now."""
        return await self.read(marks, stop=await self.ends(*{tp.topic for tp in marks}))

    async def committed(self, group: str, tps: list[TopicPartition]) -> Marks:
        """The group's committed offsets (what its next member starts from). Asked by a
        consumer that names the group but never subscribes, so it never joins it."""
        if group not in self.inspectors:
            inspector = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=group,
                                         enable_auto_commit=False)
            await inspector.start()
            self.inspectors[group] = inspector
        inspector = self.inspectors[group]
        return {tp: (await inspector.committed(tp)) or 0 for tp in tps}

    async def close(self) -> None:
        for inspector in self.inspectors.values():
            await inspector.stop()


def keyed(records: list[Record], key: str) -> list[Record]:
    return [r for r in records if r.key == key.encode()]


def headers(record: Record) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


def value(record: Record) -> Any:
    return json.loads(record.value)


class Consumers:
    """The service's FastStream subscribers, restartable (a new broker, the same groups)."""

    def __init__(self, bootstrap: str, core: Core) -> None:
        self.bootstrap = bootstrap
        self.core = core
        self.broker: KafkaBroker | None = None

    async def start(self) -> None:
        assert self.broker is None
        broker = KafkaBroker(self.bootstrap, logger=None, enable_idempotence=False)
        register_consumers(broker, erp=self.core.erp, commands=self.core.commands,
                           managers=MANAGERS, session_timeout_ms=SESSION_TIMEOUT_MS)
        await broker.start()
        self.broker = broker

    async def stop(self) -> None:
        if self.broker is not None:
            broker, self.broker = self.broker, None
            await broker.stop()


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def kafka(kafka_bootstrap: str) -> AsyncIterator[Kafka]:
    await ensure_topics(kafka_bootstrap, partitions=3, replication_factor=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=0)
    reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False,
                              fetch_max_wait_ms=20)
    await producer.start()
    await reader.start()
    try:
        partitions: dict[str, list[TopicPartition]] = {}
        for topic in (ERP_EVENTS, COMMANDS, COMMAND_RESULTS, RESERVE_EVENTS, ORDER_STATUS, DLQ):
            found = reader.partitions_for_topic(topic)
            if not found:
                await reader._client.force_metadata_update()
                found = reader.partitions_for_topic(topic)
            assert found, f"topic {topic} has no partitions"
            partitions[topic] = [TopicPartition(topic, p) for p in sorted(found)]
        kafka = Kafka(kafka_bootstrap, producer, reader, partitions)
        yield kafka
        await kafka.close()
    finally:
        await reader.stop()
        await producer.stop()


@pytest.fixture(scope="module")
def shared_core(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Core]:
    """One database for the module's consumer tests (the subscribers are started once)."""
    url = pg_server.fresh_database()
    c = Core(make_settings(Path(tmp_path_factory.mktemp("kafka-core")), url), url)
    yield c
    c.close()
    pg_server.drop(url)


@pytest.fixture(scope="module")
async def consumers(kafka: Kafka, shared_core: Core) -> AsyncIterator[Consumers]:
    running = Consumers(kafka.bootstrap, shared_core)
    await running.start()
    yield running
    await running.stop()


async def seed(core: Core, sku: str = SKU) -> tuple[str, str]:
    """The seed's two orders: petrova's (owner) holds 8; ivanov's (requester) holds 2 of 10."""
    owner, requester = uid("o-"), uid("r-")
    result = await asyncio.to_thread(core.erp.ingest,
                                     parse_erp_body(seed_facts(owner, requester, sku=sku)))
    assert result.accepted == 5
    return owner, requester


def placed(order_id: str, quantity: int = 10, manager: str = "ivanov") -> dict[str, Any]:
    return envelope("CustomerOrderPlaced", {
        "order_id": order_id, "number": f"N-{order_id}", "date": "2020-05-01T09:00:00",
        "partner": "ООО Ромашка", "manager": manager,
        "lines": [{"sku": SKU, "warehouse": WAREHOUSE, "quantity": quantity}]})


def reserve(type_: str, order_id: str, quantity: int, event_id: str | None = None
            ) -> dict[str, Any]:
    return envelope(type_, {"order_id": order_id, "sku": SKU, "warehouse": WAREHOUSE,
                            "quantity": quantity}, event_id)


async def held(core: Core, order_id: str) -> int | None:
    order = await asyncio.to_thread(core.store.find_order, order_id)
    return None if order is None else order.held(WAREHOUSE, SKU)


async def wait_held(core: Core, order_id: str, quantity: int) -> None:
    async def reached() -> bool:
        return await held(core, order_id) == quantity

    await eventually(reached, f"order {order_id} to hold {quantity}")


async def wait_committed_past(kafka: Kafka, group: str, topic: str, partition: int,
                              offset: int) -> None:
    tp = TopicPartition(topic, partition)

    async def past() -> bool:
        return (await kafka.committed(group, [tp]))[tp] > offset

    await eventually(past, f"{group} to commit past {topic}/{partition}/{offset}")


# -- erp.events ------------------------------------------------------------------------------


async def test_erp_envelope_and_array_are_stored(kafka: Kafka, consumers: Consumers) -> None:
    core = consumers.core
    single, batched = uid("o-"), uid("o-")
    await kafka.send_json(ERP_EVENTS, placed(single), single)
    await kafka.send_json(ERP_EVENTS, [placed(batched), reserve("ReservePlaced", batched, 3)],
                          batched)

    await wait_held(core, batched, 3)
    await wait_held(core, single, 0)
    order = core.store.get_order(batched)
    assert order.number == f"N-{batched}" and order.manager == "ivanov"
    assert order.status == "new"


async def test_erp_repeated_event_id_changes_nothing(kafka: Kafka, consumers: Consumers) -> None:
    core = consumers.core
    order_id = uid("o-")
    fact = reserve("ReservePlaced", order_id, 2)
    await kafka.send_json(ERP_EVENTS, placed(order_id), order_id)
    await kafka.send_json(ERP_EVENTS, fact, order_id)
    await wait_held(core, order_id, 2)
    version = core.store.get_order(order_id).version
    dlq_marks = await kafka.ends(DLQ)

    partition, offset = await kafka.send_json(ERP_EVENTS, fact, order_id)
    await wait_committed_past(kafka, ERP_GROUP, ERP_EVENTS, partition, offset)

    assert core.store.get_order(order_id).version == version
    assert await held(core, order_id) == 2
    assert keyed(await kafka.read_to_end(dlq_marks), order_id) == []  # a duplicate, not poison


async def test_erp_poison_messages_go_to_dlq_unchanged_and_the_partition_goes_on(
        kafka: Kafka, consumers: Consumers) -> None:
    core = consumers.core
    order_id = uid("o-")
    await kafka.send_json(ERP_EVENTS, [placed(order_id), reserve("ReservePlaced", order_id, 2)],
                          order_id)
    await wait_held(core, order_id, 2)
    dlq_marks = await kafka.ends(DLQ)

    not_json = b"\xff{ this is not json"
    unknown = json.dumps(envelope("OrderTeleported", {"order_id": order_id})).encode()
    too_much = json.dumps(reserve("ReserveReleased", order_id, 5)).encode()
    in_part = json.dumps([reserve("ReservePlaced", order_id, 1),
                          reserve("ReserveReleased", order_id, 50)]).encode()
    poison = [not_json, unknown, too_much, in_part]
    sources = [await kafka.send(ERP_EVENTS, body, order_id) for body in poison]
    await kafka.send_json(ERP_EVENTS, reserve("ReservePlaced", order_id, 4), order_id)

    await wait_held(core, order_id, 6)  # the valid message behind the poison was processed
    dead = keyed(await kafka.read(dlq_marks, until=lambda rs: len(keyed(rs, order_id)) >= 4),
                 order_id)
    assert [r.value for r in dead] == poison
    for record, (partition, offset) in zip(dead, sources, strict=True):
        assert record.key == order_id.encode()
        assert headers(record)["source"] == f"{ERP_EVENTS}/{partition}/{offset}"
        assert headers(record)["error"][:1].isupper()  # a sentence, not a class name
    errors = [headers(r)["error"] for r in dead]
    assert "JSON" in errors[0]
    assert "type" in errors[1]
    assert "cannot release 5" in errors[2]
    assert "cannot release 50" in errors[3]
    order = core.store.get_order(order_id)
    assert order.held(WAREHOUSE, SKU) == 6  # 2 + 4: nothing of a refused batch was applied


async def test_erp_backlog_is_stored_in_batches_in_key_order_with_poison_dead_lettered_alone(
        kafka: Kafka, consumers: Consumers, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backlog (the consumers were away) comes in batches of many messages: the refused
    message of each order goes to the DLQ alone, every other one is stored, once, in order."""
    core = consumers.core
    orders = [uid("o-") for _ in range(3)]
    for order_id in orders:
        await kafka.send_json(ERP_EVENTS, placed(order_id), order_id)
    for order_id in orders:
        await wait_held(core, order_id, 0)
    dlq_marks = await kafka.ends(DLQ)
    passes: list[int] = []
    ingest_messages = core.erp.ingest_messages

    def spy(messages: Any) -> Any:
        passes.append(len(messages))
        return ingest_messages(messages)

    monkeypatch.setattr(core.erp, "ingest_messages", spy)
    poison: dict[str, bytes] = {}
    await consumers.stop()
    try:
        sent = []
        for i in range(10):
            for order_id in orders:
                if i == 5:  # refused: more than the order holds
                    fact = reserve("ReserveReleased", order_id, 99)
                elif i == 7:  # valid only after the six reserves before it
                    fact = reserve("ReserveReleased", order_id, 6)
                else:
                    fact = reserve("ReservePlaced", order_id, 1)
                body = json.dumps(fact).encode()
                if i == 5:
                    poison[order_id] = body
                sent.append(await kafka.producer.send(ERP_EVENTS, body, key=order_id.encode()))
        await asyncio.gather(*sent)
    finally:
        await consumers.start()

    for order_id in orders:
        await wait_held(core, order_id, 2)  # 8 reserves of 1, one release of 6
    dead = await kafka.read(dlq_marks, until=lambda rs: all(keyed(rs, o) for o in orders))
    for order_id in orders:
        assert [r.value for r in keyed(dead, order_id)] == [poison[order_id]]
        assert "cannot release 99" in headers(keyed(dead, order_id)[0])["error"]
    assert max(passes) > 1  # batches, not one message at a time


# -- reserve.commands --------------------------------------------------------------------------


async def run_command(kafka: Kafka, type_: str, actor: str, data: dict[str, Any],
                      command_id: str | None = None, times: int = 1) -> list[Record]:
    """Sends a command ``times`` times; the results keyed by its command_id."""
    command_id = command_id or str(uuid.uuid4())
    marks = await kafka.ends(COMMAND_RESULTS)
    message = {"command_id": command_id, "type": type_, "actor": actor, "data": data}
    for _ in range(times):
        await kafka.send_json(COMMANDS, message, command_id)
    return keyed(await kafka.read(marks, until=lambda rs: len(keyed(rs, command_id)) >= times),
                 command_id)


def result_of(records: list[Record], command_id: str) -> dict[str, Any]:
    assert len(records) == 1, records
    body: dict[str, Any] = value(records[0])
    assert set(body) == RESULT_KEYS
    assert body["command_id"] == command_id
    return body


async def test_request_then_give_answer_on_command_results(kafka: Kafka,
                                                           consumers: Consumers) -> None:
    core = consumers.core
    owner, requester = await seed(core)
    ask_id = str(uuid.uuid4())
    asked = result_of(await run_command(kafka, "RequestReserve", "ivanov", {
        "from_order_id": owner, "to_order_id": requester, "sku": SKU, "warehouse": WAREHOUSE,
        "quantity": 8}, ask_id), ask_id)
    assert asked["ok"] is True and asked["error"] is None
    request_id = asked["result"]["request_id"]
    assert asked["result"] == {"request_id": request_id, "status": "pending"}

    give_id = str(uuid.uuid4())
    given = result_of(await run_command(kafka, "GiveReserve", "petrova",
                                        {"request_id": request_id}, give_id), give_id)
    assert given == {"command_id": give_id, "ok": True, "error": None,
                     "result": {"request_id": request_id, "status": "given", "given": 8}}
    assert await held(core, owner) == 0
    assert await held(core, requester) == 10
    assert core.store.get_order(requester).status == "green"


async def test_refused_command_answers_ok_false_with_the_code(kafka: Kafka,
                                                             consumers: Consumers) -> None:
    core = consumers.core
    owner, requester = await seed(core)
    command_id = str(uuid.uuid4())
    body = result_of(await run_command(kafka, "RequestReserve", "ivanov", {
        "from_order_id": owner, "to_order_id": requester, "sku": SKU, "warehouse": WAREHOUSE,
        "quantity": 9}, command_id), command_id)
    assert body["ok"] is False and body["result"] is None
    assert body["error"]["code"] == "insufficient_reserve"
    assert body["error"]["message"]
    assert core.store.find_request_by_key(f"kafka:{command_id}") is None


async def test_repeated_command_id_gets_the_same_result_and_one_effect(
        kafka: Kafka, consumers: Consumers) -> None:
    core = consumers.core
    owner, requester = await seed(core)
    ask_id = str(uuid.uuid4())
    asked = result_of(await run_command(kafka, "RequestReserve", "ivanov", {
        "from_order_id": owner, "to_order_id": requester, "sku": SKU, "warehouse": WAREHOUSE,
        "quantity": 8}, ask_id), ask_id)
    request_id = asked["result"]["request_id"]

    give_id = str(uuid.uuid4())
    twice = await run_command(kafka, "GiveReserve", "petrova",
                              {"request_id": request_id, "quantity": 3}, give_id, times=2)
    first, again = (value(r) for r in twice)
    assert first == again == {"command_id": give_id, "ok": True, "error": None,
                              "result": {"request_id": request_id, "status": "given",
                                         "given": 3}}
    assert await held(core, owner) == 5
    assert await held(core, requester) == 5


async def test_unknown_actor_is_refused(kafka: Kafka, consumers: Consumers) -> None:
    core = consumers.core
    owner, requester = await seed(core)
    command_id = str(uuid.uuid4())
    body = result_of(await run_command(kafka, "RequestReserve", "mallory", {
        "from_order_id": owner, "to_order_id": requester, "sku": SKU, "warehouse": WAREHOUSE,
        "quantity": 1}, command_id), command_id)
    assert body["ok"] is False and body["result"] is None
    assert body["error"]["code"] == "unknown_actor"
    assert core.store.find_request_by_key(f"kafka:{command_id}") is None
    assert await held(core, owner) == 8


async def test_command_without_command_id_goes_to_dlq(kafka: Kafka,
                                                      consumers: Consumers) -> None:
    key = uid("k-")
    dlq_marks = await kafka.ends(DLQ)
    raw = json.dumps({"type": "CancelReserveRequest", "actor": "ivanov",
                      "data": {"request_id": str(uuid.uuid4())}}).encode()
    partition, offset = await kafka.send(COMMANDS, raw, key)

    dead = keyed(await kafka.read(dlq_marks, until=lambda rs: bool(keyed(rs, key))), key)
    assert len(dead) == 1
    assert dead[0].value == raw
    assert headers(dead[0])["source"] == f"{COMMANDS}/{partition}/{offset}"
    assert "command_id" in headers(dead[0])["error"]


# -- offsets -----------------------------------------------------------------------------------


async def test_offsets_are_committed_after_the_work_and_a_restart_resumes_there(
        kafka: Kafka, consumers: Consumers) -> None:
    core = consumers.core
    owner, requester = await seed(core)
    results_marks = await kafka.ends(COMMAND_RESULTS)
    before_id = str(uuid.uuid4())
    early = uid("o-")
    await kafka.send_json(ERP_EVENTS, placed(early), early)
    await kafka.send_json(COMMANDS, {
        "command_id": before_id, "type": "RequestReserve", "actor": "ivanov",
        "data": {"from_order_id": owner, "to_order_id": requester, "sku": SKU,
                 "warehouse": WAREHOUSE, "quantity": 1}}, before_id)

    async def all_committed() -> bool:
        """Both groups have committed up to the end of their topics."""
        return (await kafka.committed(ERP_GROUP, kafka.partitions[ERP_EVENTS])
                == await kafka.ends(ERP_EVENTS)
                and await kafka.committed(COMMANDS_GROUP, kafka.partitions[COMMANDS])
                == await kafka.ends(COMMANDS))

    await eventually(all_committed, "the members to commit what they processed")
    # committed only after the work was stored (and answered): no waiting for the effects now
    assert await held(core, early) == 0
    assert keyed(await kafka.read_to_end(results_marks), before_id)

    await consumers.stop()
    try:
        assert await all_committed()  # stopping moved nothing

        late = uid("o-")
        after_id = str(uuid.uuid4())
        await kafka.send_json(ERP_EVENTS, [placed(late), reserve("ReservePlaced", late, 7)], late)
        await kafka.send_json(COMMANDS, {
            "command_id": after_id, "type": "RequestReserve", "actor": "ivanov",
            "data": {"from_order_id": owner, "to_order_id": requester, "sku": SKU,
                     "warehouse": WAREHOUSE, "quantity": 2}}, after_id)
        assert core.store.find_order(late) is None  # nobody consumes while stopped
    finally:
        await consumers.start()

    await eventually(all_committed, "the new members to commit up to the new end")
    assert await held(core, late) == 7
    assert core.store.find_request_by_key(f"kafka:{after_id}") is not None
    results = await kafka.read_to_end(results_marks)
    assert len(keyed(results, before_id)) == 1  # not re-applied (no second answer)
    assert len(keyed(results, after_id)) == 1
    assert value(keyed(results, after_id)[0])["ok"] is True


# -- the relay ---------------------------------------------------------------------------------


async def give_story(core: Core) -> tuple[str, str, str]:
    """The seed's story played to the end (petrova gives ivanov all 8), on a SKU of its own so
    that every aggregate it touches is the test's own."""
    sku = uid("SKU-")
    owner, requester = await seed(core, sku)
    asked = await asyncio.to_thread(core.commands.execute,
                                    RequestReserve(owner, requester, sku, WAREHOUSE, 8), "ivanov")
    assert asked.status == 201, asked.body
    given = await asyncio.to_thread(core.commands.execute,
                                    GiveReserve(asked.body["request_id"]), "petrova")
    assert given.status == 200, given.body
    return owner, requester, sku


async def relay_all(relay: Relay) -> int:
    total = 0
    while sent := await relay.run_once():
        total += sent
    return total


def stored_events(core: Core) -> list[dict[str, Any]]:
    """The store's log, as what reserve.events should carry (id, type, aggregate, position)."""
    out = []
    for n in core.store.recorder.select_notifications(1, 10_000):
        event = core.store.mapper.to_domain_event(n)
        out.append({"event_id": str(event_uuid(event.originator_id, event.originator_version)),
                    "type": type(event).__name__, "aggregate_id": str(event.originator_id),
                    "position": n.id})
    return out


def by_aggregate(messages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for m in messages:
        grouped.setdefault(m["aggregate_id"], []).append(m)
    return grouped


def of(records: list[Record], topic: str, keys: set[str]) -> list[Record]:
    """The records of ``topic`` keyed by one of ``keys``, in partition order."""
    encoded = {k.encode() for k in keys}
    return [r for r in records if r.topic == topic and r.key in encoded]


async def test_relay_publishes_every_stored_event_and_each_status_change(
        core: Core, kafka: Kafka) -> None:
    owner, requester, sku = await give_story(core)
    marks = await kafka.ends(RESERVE_EVENTS, ORDER_STATUS)
    relay = Relay(core.store, core.pool, kafka.producer)

    stored = stored_events(core)
    assert await relay_all(relay) == len(stored)

    records = await kafka.read_to_end(marks)
    events = of(records, RESERVE_EVENTS, {e["aggregate_id"] for e in stored})
    statuses = of(records, ORDER_STATUS, {owner, requester})
    messages = [value(r) for r in events]
    for record, message in zip(events, messages, strict=True):
        assert set(message) == EVENT_KEYS
        assert record.key == message["aggregate_id"].encode()
        assert datetime.fromisoformat(message["occurred_at"]).tzinfo is not None
        assert isinstance(message["data"], dict)
    published = by_aggregate([{k: m[k] for k in ("event_id", "type", "aggregate_id",
                                                  "position")} for m in messages])
    assert published == by_aggregate(stored)  # every event, once, in store order per aggregate

    given = [m for m in messages if m["type"] == "ReserveGiven"]
    assert len(given) == 1
    assert given[0]["data"] == {"from_order_id": owner, "to_order_id": requester, "sku": sku,
                                "warehouse": WAREHOUSE, "quantity": 8}

    changes = [m for m in messages if m["type"] == "OrderStatusChanged"]
    bodies = [value(r) for r in statuses]
    assert sorted(b["event_id"] for b in bodies) == sorted(m["event_id"] for m in changes)
    for record, body in zip(statuses, bodies, strict=True):
        assert set(body) == STATUS_KEYS
        assert record.key == body["order_id"].encode()
        assert datetime.fromisoformat(body["occurred_at"]).tzinfo is not None
        for line in body["lines"]:
            assert {"sku", "warehouse", "ordered", "reserved", "shortage"} <= set(line)

    def story(order_id: str) -> list[tuple[str | None, str]]:
        return [(b["previous_status"], b["status"]) for b in bodies if b["order_id"] == order_id]

    assert story(requester) == [(None, "new"), ("new", "green")]
    assert story(owner) == [(None, "new"), ("new", "green"), ("green", "new")]
    last = [b for b in bodies if b["order_id"] == requester][-1]
    assert last["number"] == "F4718999"
    assert last["lines"] == [{"sku": sku, "warehouse": WAREHOUSE, "ordered": 10,
                              "reserved": 10, "shortage": 0}]


async def test_relay_republish_emits_the_same_event_ids(core: Core, kafka: Kafka) -> None:
    owner, requester, _ = await give_story(core)
    relay = Relay(core.store, core.pool, kafka.producer)
    first_marks = await kafka.ends(RESERVE_EVENTS, ORDER_STATUS)
    total = await relay_all(relay)
    first = await kafka.read_to_end(first_marks)

    again_marks = await kafka.ends(RESERVE_EVENTS, ORDER_STATUS)
    assert await relay.republish(1) == total
    again = await kafka.read_to_end(again_marks)

    aggregates = {e["aggregate_id"] for e in stored_events(core)}
    for topic, keys in ((RESERVE_EVENTS, aggregates), (ORDER_STATUS, {owner, requester})):
        first_ids = [value(r)["event_id"] for r in of(first, topic, keys)]
        again_ids = [value(r)["event_id"] for r in of(again, topic, keys)]
        assert again_ids == first_ids
        assert len(set(first_ids)) == len(first_ids) > 0
    assert len(of(first, RESERVE_EVENTS, aggregates)) == total
    assert await relay.run_once() == 0  # republishing does not move the relay's position


async def unpublished(core: Core, relay: Relay) -> int:
    return (core.store.recorder.max_notification_id() or 0) - await asyncio.to_thread(
        relay.position)


async def test_a_woken_relay_reads_the_log_again_only_when_more_was_stored(
        core: Core, kafka: Kafka) -> None:
    await give_story(core)
    relay = Relay(core.store, core.pool, kafka.producer)
    await relay_all(relay)
    reads: list[int] = []
    read = relay._read

    async def counted(after: int, stop: int | None) -> list[Any]:
        rows = await read(after, stop)
        reads.append(len(rows))
        return rows

    relay._read = counted  # type: ignore[method-assign]
    wake = asyncio.Event()
    await give_story(core)
    stored = await unpublished(core, relay)

    assert await relay.catch_up(wake) == stored > 0
    # one read found the new events (less than a page: the end of the log); nothing was
    # stored meanwhile (``wake`` stayed clear), so no read after it came back empty
    assert reads == [stored]

    reads.clear()
    await give_story(core)
    more = await unpublished(core, relay)
    wake.set()  # as the store's NOTIFY does
    assert await relay.catch_up(wake) == more > 0
    assert reads == [more]
    assert await asyncio.to_thread(relay.position) == core.store.recorder.max_notification_id()


async def test_relay_rewind_leaves_the_position_when_the_topic_has_data(
        core: Core, kafka: Kafka) -> None:
    await give_story(core)
    relay = Relay(core.store, core.pool, kafka.producer)
    await relay_all(relay)
    position = await asyncio.to_thread(relay.position)
    assert position > 0
    await relay.rewind_if_topic_lost()
    assert await asyncio.to_thread(relay.position) == position
    assert await relay.run_once() == 0
