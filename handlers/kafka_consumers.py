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
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from handlers import wire
from handlers.commands import CommandHandler
from handlers.erp import ErpIngest, FactRefusedError
from handlers.http_api import UNAVAILABLE
from handlers.outcome import Outcome, error_body
from services.observability import record_command, record_erp, record_erp_refusal
from services.topics import COMMAND_RESULTS, COMMANDS, DLQ, ERP_EVENTS

log = logging.getLogger(__name__)

ERP_GROUP = "reserves-erp"
COMMANDS_GROUP = "reserves-commands"
UNAVAILABLE_BACKOFF_S = 1.0


async def dead_letter(broker: KafkaBroker, msg: Any, reason: str) -> None:
    raw = msg.raw_message
    source = f"{raw.topic}/{raw.partition}/{raw.offset}"
    log.warning("dead letter from %s: %s", source, reason)
    original = {k: (v or b"").decode("utf-8", "replace") for k, v in raw.headers or ()}
    await broker.publish(raw.value, topic=DLQ, key=raw.key,
                         headers={**original, "error": reason, "source": source})


def _decode(body: bytes) -> Any:
    return wire.decode_json(body)


async def _undecoded(msg: Any) -> Any:
    """FastStream's own decoder parses JSON before the handler runs, and its errors there
    (a 5,000-digit number, nesting past the recursion limit) would be nacked and redelivered
    forever: the handlers read the bytes themselves, so every such message is dead-lettered."""
    return msg.body


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

    @broker.subscriber(ERP_EVENTS, group_id=ERP_GROUP, title=ERP_EVENTS, **common)
    async def on_erp_events(msg: KafkaMessage) -> None:
        """ERP facts (key order_id, or warehouse/sku for stock): one envelope or an array of
        up to 1,000, applied all or nothing; a refused or invalid message goes to reserve.dlq."""
        try:
            envelopes = wire.parse_erp_body(_decode(msg.body))
        except wire.MalformedJsonError:
            return await dead_letter(broker, msg, "The message is not UTF-8 JSON.")
        except wire.WireError as e:
            return await dead_letter(broker, msg, f"Invalid ERP envelope: {e}")
        try:
            result = await asyncio.to_thread(erp.ingest, envelopes)
        except FactRefusedError as e:
            record_erp_refusal(e.error.code, len(envelopes), "kafka")
            return await dead_letter(broker, msg, str(e))
        except UNAVAILABLE:
            await asyncio.sleep(UNAVAILABLE_BACKOFF_S)
            raise
        except Exception as e:
            log.exception("unexpected error on an erp.events message")
            return await dead_letter(broker, msg, f"Internal error ({type(e).__name__}); "
                                                  "the message can be re-driven once fixed.")
        record_erp(result.accepted, result.duplicates, "kafka")
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
