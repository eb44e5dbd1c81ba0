"""Kafka entry points: ``erp.events`` and ``reserve.commands``.

Each subscriber only translates: bytes in, one handler call, an answer or a dead letter out.
Offsets are committed after the work is stored (and its answer published); a message that can
never be processed goes to ``reserve.dlq`` unchanged, with the reason, and the partition goes
on. While PostgreSQL is unreachable the message is not acknowledged and is delivered again;
any other failure is a dead letter too, so a bug never blocks a partition for good.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from handlers import wire
from handlers.commands import CommandHandler
from handlers.erp import ErpIngest, FactRefusedError, IngestResult, Message
from handlers.http_api import UNAVAILABLE
from handlers.outcome import Outcome, error_body
from services.observability import record_command, record_erp, record_erp_refusal
from services.topics import COMMAND_RESULTS, COMMANDS, DLQ, ERP_EVENTS
from services.tracing import HEADER as CORRELATION_HEADER
from services.tracing import correlated, payload_correlation_id

log = logging.getLogger(__name__)

ERP_GROUP = "reserves-erp"
COMMANDS_GROUP = "reserves-commands"
UNAVAILABLE_BACKOFF_S = 1.0
# erp.events is consumed in batches: up to this many messages per pass (one transaction), and
# a poll that finds nothing waits this long for more.
ERP_MAX_RECORDS = 1000
ERP_BATCH_TIMEOUT_MS = 200


async def dead_letter(broker: KafkaBroker, msg: Any, reason: str) -> None:
    await dead_letter_record(broker, msg.raw_message, reason)


async def dead_letter_record(broker: KafkaBroker, raw: Any, reason: str) -> None:
    """Publishes the consumed record ``raw`` to reserve.dlq unchanged, with the reason."""
    source = _source(raw)
    log.warning("dead letter from %s: %s", source, reason)
    await broker.publish(raw.value, topic=DLQ, key=raw.key,
                         headers={**_headers(raw), "error": reason, "source": source})


def _decode(body: bytes) -> Any:
    return wire.decode_json(body)


async def _undecoded(msg: Any) -> Any:
    """FastStream's own decoder parses JSON before the handler runs, and its errors there
    (a 5,000-digit number, nesting past the recursion limit) would be nacked and redelivered
    forever: the handlers read the bytes themselves, so every such message is dead-lettered."""
    return msg.body


@dataclass(frozen=True)
class _Handled:
    """One erp.events message of a batch: stored (``result``), or why it is a dead letter."""

    record: Any
    correlation_id: str
    facts: int = 0
    result: IngestResult | None = None
    dead: str | None = None
    refusal: str | None = None  # the refusal's code, for the metrics


def _headers(record: Any) -> dict[str, str]:
    return {k: (v or b"").decode("utf-8", "replace") for k, v in record.headers or ()}


def _source(record: Any) -> str:
    return f"{record.topic}/{record.partition}/{record.offset}"


def _parse_erp(record: Any) -> tuple[Message | None, _Handled | None]:
    """The message's envelopes, or its dead letter when they cannot be read."""
    header = _headers(record).get(CORRELATION_HEADER)
    try:
        payload = _decode(record.value or b"")
    except wire.MalformedJsonError:
        cid = payload_correlation_id(header, None, _source(record))
        return None, _Handled(record, cid, dead="The message is not UTF-8 JSON.")
    cid = payload_correlation_id(header, payload, _source(record))
    try:
        envelopes = wire.parse_erp_body(payload)
    except wire.WireError as e:
        return None, _Handled(record, cid, dead=f"Invalid ERP envelope: {e}")
    return Message(envelopes, cid), None


def _erp_batch(erp: ErpIngest, records: Sequence[Any]) -> list[_Handled]:
    """Reads every message of the batch and stores the valid ones in one pass (a thread)."""
    parsed = [_parse_erp(record) for record in records]
    messages = [message for message, _ in parsed if message is not None]
    outcomes = iter(erp.ingest_messages(messages))
    out = []
    for record, (message, dead) in zip(records, parsed, strict=True):
        if message is None:
            assert dead is not None
            out.append(dead)
            continue
        outcome = next(outcomes)
        cid, facts = message.correlation_id or "", len(message.envelopes)
        if isinstance(outcome, FactRefusedError):
            out.append(_Handled(record, cid, facts, dead=str(outcome),
                                refusal=outcome.error.code))
        else:
            out.append(_Handled(record, cid, facts, result=outcome))
    return out


async def _erp_answer(broker: KafkaBroker, item: _Handled) -> None:
    if item.refusal is not None:
        record_erp_refusal(item.refusal, item.facts, "kafka")
    if item.dead is not None:
        await dead_letter_record(broker, item.record, item.dead)
    elif item.result is not None:
        record_erp(item.result.accepted, item.result.duplicates, "kafka")


async def _erp_alone(broker: KafkaBroker, erp: ErpIngest, record: Any) -> None:
    """One message on its own, as before batches: any failure but an unreachable store is
    its dead letter, so a bug never blocks a partition."""
    message, dead = _parse_erp(record)
    if message is None:
        assert dead is not None
        with correlated(dead.correlation_id):
            return await _erp_answer(broker, dead)
    with correlated(message.correlation_id):
        try:
            result = await asyncio.to_thread(erp.ingest, message.envelopes)
        except FactRefusedError as e:
            return await _erp_answer(broker, _Handled(record, "", len(message.envelopes),
                                                      dead=str(e), refusal=e.error.code))
        except UNAVAILABLE:
            await asyncio.sleep(UNAVAILABLE_BACKOFF_S)
            raise
        except Exception as e:
            log.exception("unexpected error on an erp.events message")
            return await dead_letter_record(
                broker, record, f"Internal error ({type(e).__name__}); "
                                "the message can be re-driven once fixed.")
        record_erp(result.accepted, result.duplicates, "kafka")
    return None


def command_result(command_id: str, outcome: Outcome) -> dict[str, Any]:
    return {"command_id": command_id, "ok": outcome.ok, "error": outcome.error,
            "result": outcome.body if outcome.ok else None}


def register_consumers(broker: KafkaBroker, *, erp: ErpIngest, commands: CommandHandler,
                       managers: frozenset[str], session_timeout_ms: int = 10_000) -> None:
    common: dict[str, Any] = {
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": session_timeout_ms,
        "heartbeat_interval_ms": max(session_timeout_ms // 4, 100),
        "decoder": _undecoded,
    }

    @broker.subscriber(ERP_EVENTS, group_id=ERP_GROUP, title=ERP_EVENTS, batch=True,
                       max_records=ERP_MAX_RECORDS, batch_timeout_ms=ERP_BATCH_TIMEOUT_MS,
                       **common)
    async def on_erp_events(msg: KafkaMessage) -> None:
        """ERP facts (key order_id, or warehouse/sku for stock), consumed in batches: each
        message is one envelope or an array of up to 1,000, applied all or nothing; the
        accepted messages of a batch are stored in one transaction, and a refused or invalid
        message goes to reserve.dlq alone. Offsets are committed after that."""
        raw = msg.raw_message
        records = tuple(raw) if isinstance(raw, (tuple, list)) else (raw,)
        try:
            handled = await asyncio.to_thread(_erp_batch, erp, records)
        except UNAVAILABLE:
            await asyncio.sleep(UNAVAILABLE_BACKOFF_S)
            raise  # nothing was stored: the whole batch is delivered again
        except Exception:
            log.exception("unexpected error on a batch of erp.events; one at a time instead")
            for record in records:
                await _erp_alone(broker, erp, record)
            return None
        accepted = duplicates = 0
        for item in handled:
            if item.result is not None:
                accepted += item.result.accepted
                duplicates += item.result.duplicates
            else:
                with correlated(item.correlation_id):
                    await _erp_answer(broker, item)
        if accepted or duplicates:  # one line per batch: a line per message cost more than
            record_erp(accepted, duplicates, "kafka")  # the message's own work
        return None

    @broker.subscriber(COMMANDS, group_id=COMMANDS_GROUP, title=COMMANDS, **common)
    async def on_reserve_commands(msg: KafkaMessage) -> None:
        """Commands (key command_id), answered once each on reserve.command-results under
        their command_id; a message without one goes to reserve.dlq."""
        try:
            payload = _decode(msg.body)
        except wire.MalformedJsonError:
            return await dead_letter(broker, msg, "The message is not UTF-8 JSON.")
        command_id = payload.get("command_id") if isinstance(payload, dict) else None
        if not isinstance(command_id, str) or not command_id:
            return await dead_letter(broker, msg, "The command has no command_id to answer to.")
        try:
            message = wire.CommandMessage.model_validate(payload)
            command = message.command()
        except ValidationError as e:
            outcome = Outcome(422, error_body("validation_failed", wire.validation_message(e)))
        else:
            if message.actor not in managers:
                outcome = Outcome(403, error_body("unknown_actor",
                                                  f"{message.actor!r} is not a known manager."))
            else:
                try:
                    outcome = await asyncio.to_thread(
                        commands.execute, command, message.actor, f"kafka:{command_id}")
                except UNAVAILABLE:
                    await asyncio.sleep(UNAVAILABLE_BACKOFF_S)
                    raise
                except Exception as e:
                    log.exception("unexpected error on a reserve.commands message")
                    reason = f"Internal error ({type(e).__name__}); nothing was changed."
                    await dead_letter(broker, msg, reason)
                    outcome = Outcome(500, error_body("internal_error", reason))
        kind = payload.get("type")
        record_command(kind if isinstance(kind, str) and kind in wire.COMMAND_BODIES
                       else "unknown", outcome, "kafka")
        await broker.publish(command_result(command_id, outcome), topic=COMMAND_RESULTS,
                             key=command_id.encode())
        return None
