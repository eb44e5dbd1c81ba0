"""The Kafka entry points, run on FastStream's in-memory TestKafkaBroker with fake handlers.

Each test publishes to ``erp.events`` or ``reserve.commands`` and looks at what reached the fake
handlers and what was published to ``reserve.dlq`` and ``reserve.command-results``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
import pytest
from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from domain import commands as c
from domain import facts as f
from domain.errors import UnknownOrderError
from handlers import kafka_consumers
from handlers.commands import CommandHandler
from handlers.erp import Envelope, ErpIngest, FactRefusedError, IngestResult, Message
from handlers.kafka_consumers import register_consumers
from handlers.outcome import Outcome, error_body
from services.topics import COMMAND_RESULTS, COMMANDS, DLQ, ERP_EVENTS
from tests.support import envelope

MANAGERS = frozenset({"ivanov", "petrova"})


class FakeErp:
    """Refuses a message whose envelopes' event_ids are in ``refuse``; raises ``raises``."""

    def __init__(self) -> None:
        self.batches: list[list[Envelope]] = []
        self.passes: list[list[Message]] = []
        self.raises: Exception | None = None
        self.refuse: set[str] = set()

    def ingest(self, envelopes: list[Envelope]) -> IngestResult:
        self.batches.append(envelopes)
        if self.raises is not None:
            raise self.raises
        for index, e in enumerate(envelopes):
            if e.event_id in self.refuse:
                raise FactRefusedError(index, e.event_id, UnknownOrderError("Refused here."))
        return IngestResult(accepted=len(envelopes), duplicates=0)

    def ingest_messages(self, messages: list[Message]) -> list[IngestResult | FactRefusedError]:
        self.passes.append(list(messages))
        out: list[IngestResult | FactRefusedError] = []
        for message in messages:
            try:
                out.append(self.ingest(message.envelopes))
            except FactRefusedError as e:
                out.append(e)
        return out


class FakeCommands:
    def __init__(self) -> None:
        self.calls: list[tuple[c.Command, str, str | None]] = []
        self.outcome = Outcome(201, {"request_id": "r1", "status": "pending"})
        self.raises: Exception | None = None

    def execute(self, command: c.Command, actor: str, key: str | None = None) -> Outcome:
        self.calls.append((command, actor, key))
        if self.raises is not None:
            raise self.raises
        return self.outcome


@dataclass(frozen=True)
class Received:
    body: bytes
    key: bytes | None
    headers: dict[str, Any]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Rig:
    broker: KafkaBroker
    erp: FakeErp
    commands: FakeCommands
    dlq: list[Received] = field(default_factory=list)
    results: list[Received] = field(default_factory=list)

    async def publish(self, body: Any, topic: str, key: bytes | None = None) -> None:
        await self.broker.publish(body, topic=topic, key=key)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    broker = KafkaBroker()
    setup = Rig(broker, FakeErp(), FakeCommands())
    register_consumers(broker, erp=cast(ErpIngest, setup.erp),
                       commands=cast(CommandHandler, setup.commands), managers=MANAGERS)

    def record(into: list[Received], msg: KafkaMessage) -> None:
        raw = msg.raw_message
        assert isinstance(raw, ConsumerRecord)
        into.append(Received(msg.body, raw.key, dict(msg.headers)))

    @broker.subscriber(DLQ)
    async def on_dlq(msg: KafkaMessage) -> None:
        record(setup.dlq, msg)

    @broker.subscriber(COMMAND_RESULTS)
    async def on_result(msg: KafkaMessage) -> None:
        record(setup.results, msg)

    async with TestKafkaBroker(broker):
        yield setup


def order_placed(event_id: str = "ev-1") -> dict[str, Any]:
    return envelope("CustomerOrderPlaced", {
        "order_id": "o1", "number": "F4718837", "date": "2020-04-30T08:42:28",
        "partner": "ООО Ромашка", "manager": "petrova",
        "lines": [{"sku": "S1", "warehouse": "W1", "quantity": 8}]}, event_id)


def as_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def command(type_: str, data: dict[str, Any], actor: str = "ivanov",
            command_id: str = "cmd-1") -> dict[str, Any]:
    return {"command_id": command_id, "type": type_, "actor": actor, "data": data}


REQUEST = {"from_order_id": "o1", "to_order_id": "o2", "sku": "S1", "warehouse": "W1",
           "quantity": 8}


# -- erp.events ---------------------------------------------------------------------------------

async def test_a_valid_erp_envelope_reaches_the_ingest(rig: Rig) -> None:
    await rig.publish(as_bytes(order_placed("ev-7")), ERP_EVENTS, key=b"o1")
    [[ingested]] = rig.erp.batches
    assert ingested.event_id == "ev-7"
    assert isinstance(ingested.fact, f.CustomerOrderPlaced) and ingested.fact.order_id == "o1"
    assert rig.dlq == []


async def test_a_list_of_erp_envelopes_is_ingested_as_one_batch(rig: Rig) -> None:
    body = [envelope("StockLevelSet", {"warehouse": "W1", "sku": "S1", "on_hand": 3}, "ev-1"),
            envelope("OrderShipped", {"order_id": "o1"}, "ev-2")]
    await rig.publish(as_bytes(body), ERP_EVENTS)
    assert [[e.event_id for e in batch] for batch in rig.erp.batches] == [["ev-1", "ev-2"]]
    assert rig.dlq == []


async def test_non_json_erp_bytes_go_to_the_dlq_unchanged(rig: Rig) -> None:
    await rig.publish(b"\xff not json", ERP_EVENTS, key=b"W1/S1")
    [dead] = rig.dlq
    assert dead.body == b"\xff not json"
    assert dead.key == b"W1/S1"
    assert dead.headers["error"] == "The message is not UTF-8 JSON."
    assert dead.headers["source"] == f"{ERP_EVENTS}/0/0"
    assert rig.erp.batches == []


async def test_an_invalid_erp_envelope_goes_to_the_dlq_with_the_reason(rig: Rig) -> None:
    bad = as_bytes(envelope("ReservePlaced", {"order_id": "o1", "sku": "S1", "warehouse": "W1",
                                              "quantity": 0}))
    await rig.publish(bad, ERP_EVENTS, key=b"o1")
    [dead] = rig.dlq
    assert dead.body == bad and dead.key == b"o1"
    assert dead.headers["error"].startswith("Invalid ERP envelope: ")
    assert "quantity" in dead.headers["error"]
    assert dead.headers["source"] == f"{ERP_EVENTS}/0/0"
    assert rig.erp.batches == []


async def test_a_fact_the_ingest_refuses_goes_to_the_dlq_with_the_reason(rig: Rig) -> None:
    rig.erp.raises = FactRefusedError(0, "ev-1", UnknownOrderError("Customer order 'o9' is "
                                                                   "unknown."))
    body = as_bytes(envelope("OrderShipped", {"order_id": "o9"}, "ev-1"))
    await rig.publish(body, ERP_EVENTS, key=b"o9")
    assert len(rig.erp.batches) == 1
    [dead] = rig.dlq
    assert dead.body == body and dead.key == b"o9"
    assert dead.headers["error"] == "Event #1 ('ev-1') was refused: Customer order 'o9' is unknown."
    assert dead.headers["source"] == f"{ERP_EVENTS}/0/0"


async def test_a_batch_is_ingested_in_one_pass_and_a_refused_message_is_dead_lettered_alone(
    rig: Rig,
) -> None:
    rig.erp.refuse = {"ev-2"}
    bodies = [as_bytes(order_placed(f"ev-{i}")) for i in (1, 2, 3)]
    await rig.broker.publish_batch(*bodies, topic=ERP_EVENTS)
    [one_pass] = rig.erp.passes
    assert [[e.event_id for e in m.envelopes] for m in one_pass] == [["ev-1"], ["ev-2"], ["ev-3"]]
    [dead] = rig.dlq
    assert dead.body == bodies[1]
    assert dead.headers["error"] == "Event #1 ('ev-2') was refused: Refused here."
    assert dead.headers["source"].startswith(f"{ERP_EVENTS}/")


async def test_unreadable_messages_of_a_batch_are_dead_lettered_in_order_and_the_rest_stored(
    rig: Rig,
) -> None:
    invalid = as_bytes(envelope("ReservePlaced", {"order_id": "o1", "sku": "S1",
                                                  "warehouse": "W1", "quantity": 0}))
    bodies = [b"\xff not json", as_bytes(order_placed("ev-2")), invalid]
    await rig.broker.publish_batch(*bodies, topic=ERP_EVENTS)
    [one_pass] = rig.erp.passes
    assert [[e.event_id for e in m.envelopes] for m in one_pass] == [["ev-2"]]
    assert [d.body for d in rig.dlq] == [bodies[0], bodies[2]]
    assert rig.dlq[0].headers["error"] == "The message is not UTF-8 JSON."
    assert rig.dlq[1].headers["error"].startswith("Invalid ERP envelope: ")


async def test_an_unexpected_failure_of_a_batch_falls_back_to_one_message_at_a_time(
    rig: Rig,
) -> None:
    """A bug in the batch path must not block the partition: each message is tried alone
    and only the one that fails there is dead-lettered."""

    def broken(messages: list[Message]) -> list[IngestResult | FactRefusedError]:
        raise ValueError("a bug in batches")

    rig.erp.ingest_messages = broken  # type: ignore[method-assign]
    rig.erp.refuse = {"ev-2"}
    bodies = [as_bytes(order_placed(f"ev-{i}")) for i in (1, 2, 3)]
    await rig.broker.publish_batch(*bodies, topic=ERP_EVENTS)
    assert [[e.event_id for e in b] for b in rig.erp.batches] == [["ev-1"], ["ev-2"], ["ev-3"]]
    [dead] = rig.dlq
    assert dead.body == bodies[1]
    assert "Refused here." in dead.headers["error"]


async def test_an_unreachable_store_fails_the_whole_batch_for_redelivery(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_consumers, "UNAVAILABLE_BACKOFF_S", 0.0)
    rig.erp.raises = psycopg.OperationalError("connection refused")
    with pytest.raises(psycopg.OperationalError):
        await rig.broker.publish_batch(as_bytes(order_placed("ev-1")),
                                       as_bytes(order_placed("ev-2")), topic=ERP_EVENTS)
    assert rig.dlq == []


async def test_an_unreachable_store_is_not_dead_lettered_but_raised_for_redelivery(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_consumers, "UNAVAILABLE_BACKOFF_S", 0.0)
    rig.erp.raises = psycopg.OperationalError("connection refused")
    with pytest.raises(psycopg.OperationalError):
        await rig.publish(as_bytes(order_placed()), ERP_EVENTS)
    assert len(rig.erp.batches) == 1
    assert rig.dlq == []


async def test_an_unexpected_failure_is_dead_lettered_so_the_partition_goes_on(rig: Rig) -> None:
    rig.erp.raises = ValueError("a bug")
    body = as_bytes(order_placed())
    await rig.publish(body, ERP_EVENTS, key=b"o1")
    [dead] = rig.dlq
    assert dead.body == body
    assert "Internal error (ValueError)" in dead.headers["error"]


async def test_an_unexpected_command_failure_is_answered_and_dead_lettered(rig: Rig) -> None:
    rig.commands.raises = ValueError("a bug")
    await rig.publish(as_bytes(command("RequestReserve", REQUEST)), COMMANDS, key=b"cmd-1")
    [result] = rig.results
    assert result.json()["ok"] is False
    assert result.json()["error"]["code"] == "internal_error"
    assert len(rig.dlq) == 1


# -- reserve.commands ---------------------------------------------------------------------------

async def test_a_command_is_executed_and_its_result_published(rig: Rig) -> None:
    await rig.publish(as_bytes(command("RequestReserve", REQUEST)), COMMANDS, key=b"cmd-1")
    assert rig.commands.calls == [
        (c.RequestReserve("o1", "o2", "S1", "W1", 8), "ivanov", "kafka:cmd-1")]
    [result] = rig.results
    assert result.key == b"cmd-1"
    assert result.json() == {"command_id": "cmd-1", "ok": True, "error": None,
                             "result": {"request_id": "r1", "status": "pending"}}
    assert rig.dlq == []


async def test_a_command_about_a_request_takes_its_request_id_from_the_data(rig: Rig) -> None:
    await rig.publish(as_bytes(command("GiveReserve", {"request_id": "r1", "quantity": 2},
                                       actor="petrova", command_id="cmd-2")), COMMANDS)
    assert rig.commands.calls == [(c.GiveReserve("r1", 2), "petrova", "kafka:cmd-2")]
    assert [r.json()["command_id"] for r in rig.results] == ["cmd-2"]


async def test_a_refused_command_is_answered_with_its_error(rig: Rig) -> None:
    rig.commands.outcome = Outcome(409, error_body("not_enough_reserve", "Not enough."))
    await rig.publish(as_bytes(command("RequestReserve", REQUEST)), COMMANDS)
    [result] = rig.results
    assert result.json() == {"command_id": "cmd-1", "ok": False, "result": None,
                             "error": {"code": "not_enough_reserve", "message": "Not enough."}}


async def test_a_command_from_an_unknown_actor_is_refused_without_running_it(rig: Rig) -> None:
    await rig.publish(as_bytes(command("RequestReserve", REQUEST, actor="mallory")), COMMANDS)
    assert rig.commands.calls == []
    [result] = rig.results
    answer = result.json()
    assert answer["command_id"] == "cmd-1"
    assert answer["ok"] is False and answer["result"] is None
    assert answer["error"]["code"] == "unknown_actor"
    assert "mallory" in answer["error"]["message"]
    assert rig.dlq == []


async def test_an_invalid_command_is_answered_with_a_validation_error(rig: Rig) -> None:
    await rig.publish(as_bytes(command("GiveReserve", {"quantity": 2})), COMMANDS)
    assert rig.commands.calls == []
    [result] = rig.results
    answer = result.json()
    assert (answer["command_id"], answer["ok"], answer["result"]) == ("cmd-1", False, None)
    assert answer["error"]["code"] == "validation_failed"
    assert "request_id" in answer["error"]["message"]


async def test_a_command_of_an_unknown_type_is_answered_with_a_validation_error(
    rig: Rig,
) -> None:
    await rig.publish(as_bytes(command("ExpireReserveRequest", {"request_id": "r1"})), COMMANDS)
    assert rig.commands.calls == []
    [result] = rig.results
    assert result.json()["error"]["code"] == "validation_failed"
    assert rig.dlq == []


@pytest.mark.parametrize("payload", [
    {"type": "CancelReserveRequest", "actor": "ivanov", "data": {"request_id": "r1"}},
    {"command_id": "", "type": "CancelReserveRequest", "actor": "ivanov",
     "data": {"request_id": "r1"}},
    {"command_id": 17, "type": "CancelReserveRequest", "actor": "ivanov",
     "data": {"request_id": "r1"}},
    ["not", "an", "object"],
], ids=["missing", "empty", "not-a-string", "not-an-object"])
async def test_a_command_without_a_command_id_goes_to_the_dlq(rig: Rig, payload: Any) -> None:
    body = as_bytes(payload)
    await rig.publish(body, COMMANDS, key=b"k")
    assert rig.commands.calls == [] and rig.results == []
    [dead] = rig.dlq
    assert dead.body == body and dead.key == b"k"
    assert dead.headers["error"] == "The command has no command_id to answer to."
    assert dead.headers["source"] == f"{COMMANDS}/0/0"


async def test_non_json_command_bytes_go_to_the_dlq(rig: Rig) -> None:
    await rig.publish(b"{broken", COMMANDS)
    assert rig.commands.calls == [] and rig.results == []
    [dead] = rig.dlq
    assert dead.body == b"{broken"
    assert dead.headers["error"] == "The message is not UTF-8 JSON."
    assert dead.headers["source"] == f"{COMMANDS}/0/0"


async def test_an_unreachable_store_leaves_a_command_unanswered_for_redelivery(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_consumers, "UNAVAILABLE_BACKOFF_S", 0.0)
    rig.commands.raises = psycopg.OperationalError("connection refused")
    with pytest.raises(psycopg.OperationalError):
        await rig.publish(as_bytes(command("CancelReserveRequest", {"request_id": "r1"})),
                          COMMANDS)
    assert len(rig.commands.calls) == 1
    assert rig.results == [] and rig.dlq == []

