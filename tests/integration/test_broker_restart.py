"""The ``reserve.commands`` consumers after the broker is killed (-9) and restarted empty on
the same port while commands keep coming: every command sent once the topics are back must be
handled (issue 3 follow-up, docs/reliability.md). No SQL: a recording command handler stands in
for the store, the subscribers are the service's own (``register_consumers``), on a FastStream
KafkaBroker with the service's settings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker

from handlers.kafka_consumers import register_consumers
from handlers.outcome import Outcome
from services.consumer_watchdog import ConsumerWatchdog
from services.embedded import EmbeddedBroker, free_port
from services.runtime import METADATA_MAX_AGE_MS
from services.topics import COMMANDS, ensure_topics

pytestmark = pytest.mark.integration

ROUNDS = 2
SETTLE_S = 12.0  # a re-join (~3 s) plus a rebalance (~8 s) on Tansu
DEADLINE_S = 20.0
WATCHDOG_STALL_S = 8.0


class RecordingCommands:
    """Stands in for CommandHandler: records which command ids were executed, and when."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}

    def execute(self, command: Any, actor: str, idempotency_key: str) -> Outcome:
        time.sleep(0.01)  # a handler in flight when the broker dies
        self.seen.setdefault(idempotency_key.removeprefix("kafka:"), time.monotonic())
        return Outcome(200, {"ok": True})


def _command(command_id: str) -> bytes:
    return json.dumps({"command_id": command_id, "type": "CancelReserveRequest",
                       "actor": "ivanov",
                       "data": {"request_id": "00000000-0000-4000-8000-000000000001"}}).encode()


async def _pump(bootstrap: str, sent: list[tuple[str, float]], stop: asyncio.Event) -> None:
    """Sends a command every 50 ms, as a client would, through the restart."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=5000)
    await producer.start()
    try:
        n = 0
        while not stop.is_set():
            command_id = f"c{n}"
            n += 1
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(producer.send_and_wait(
                    COMMANDS, _command(command_id), key=command_id.encode()), 6)
                sent.append((command_id, time.monotonic()))
            await asyncio.sleep(0.05)
    finally:
        await producer.stop()


def _kill(broker: EmbeddedBroker) -> None:
    proc = broker._proc  # a kill -9, not stop()'s SIGTERM
    assert proc is not None
    proc.kill()
    proc.wait()
    broker._proc = None
    broker.stop()  # closes the log


async def _until(condition: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.1)
    return bool(condition())


async def test_command_consumers_carry_on_after_kill_9_and_an_empty_restart(
        traversable_tmp: Path) -> None:
    rnd = random.Random(20261127)
    embedded = EmbeddedBroker(traversable_tmp, port=free_port())
    bootstrap = embedded.start()
    await ensure_topics(bootstrap, 3, 1)
    handler = RecordingCommands()
    broker = KafkaBroker(bootstrap, logger=None, metadata_max_age_ms=METADATA_MAX_AGE_MS)
    register_consumers(broker, erp=None, commands=handler,  # type: ignore[arg-type]
                       managers=frozenset({"ivanov"}), session_timeout_ms=6000)
    await broker.start()
    # as `reserves serve` runs its consumers: with the watchdog, which restarts a subscriber
    # that stopped moving (aiokafka on Tansu sometimes stays stalled after an empty restart;
    # the watchdog's stall time is shortened here, 30 s in the service)
    watchdog = asyncio.create_task(
        ConsumerWatchdog(broker, stall_s=WATCHDOG_STALL_S, check_s=0.5).run())
    sent: list[tuple[str, float]] = []
    stop = asyncio.Event()
    pump = asyncio.create_task(_pump(bootstrap, sent, stop))
    try:
        assert await _until(lambda: len(handler.seen) >= 20, DEADLINE_S), "no command handled"
        for round_ in range(ROUNDS):
            _kill(embedded)
            await asyncio.sleep(rnd.uniform(0, 1.5))  # the time the broker stays down
            embedded.start()
            await asyncio.sleep(rnd.uniform(0, 3))  # the relay re-creates topics within 5 s
            await asyncio.wait_for(ensure_topics(bootstrap, 3, 1), 30)
            settled = time.monotonic() + SETTLE_S
            await _until(lambda s=settled: bool(sent) and sent[-1][1] > s + 2, SETTLE_S + 20)
            late = [c for c, t in sent if t > settled]
            assert late, f"round {round_}: no command could be sent after the restart"
            handled = await _until(lambda cs=late: all(c in handler.seen for c in cs),
                                   DEADLINE_S + WATCHDOG_STALL_S + SETTLE_S)
            missing = [c for c in late if c not in handler.seen]
            assert handled, (f"round {round_}: {len(missing)} of {len(late)} commands sent after "
                             f"the restart were never handled: {missing[:5]}")
    finally:
        stop.set()
        watchdog.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await watchdog
        with contextlib.suppress(Exception):
            await pump
        await broker.stop()
        embedded.stop()


@dataclass
class Handled:
    """The service's command subscriber on a broker of its own, one command already handled."""

    handler: RecordingCommands
    broker: KafkaBroker
    producer: AIOKafkaProducer
    subscriber: Any

    async def send(self, ids: list[str]) -> None:
        for command_id in ids:
            await self.producer.send_and_wait(COMMANDS, _command(command_id),
                                              key=command_id.encode())


@contextlib.asynccontextmanager
async def _handled_one(tmp: Path, partitions: int) -> AsyncIterator[Handled]:
    embedded = EmbeddedBroker(tmp, port=free_port())
    bootstrap = embedded.start()
    await ensure_topics(bootstrap, partitions, 1)
    handler = RecordingCommands()
    broker = KafkaBroker(bootstrap, logger=None, metadata_max_age_ms=METADATA_MAX_AGE_MS)
    register_consumers(broker, erp=None, commands=handler,  # type: ignore[arg-type]
                       managers=frozenset({"ivanov"}), session_timeout_ms=6000)
    await broker.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(COMMANDS, _command("first"), key=b"first")
        assert await _until(lambda: "first" in handler.seen, DEADLINE_S)
        subscriber = next(s for s in broker.subscribers
                          if COMMANDS in getattr(s, "topic_names", ()))
        yield Handled(handler, broker, producer, subscriber)
    finally:
        await producer.stop()
        await broker.stop()
        embedded.stop()


@contextlib.asynccontextmanager
async def _watching(watchdog: ConsumerWatchdog) -> AsyncIterator[None]:
    task = asyncio.create_task(watchdog.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_watchdog_restarts_a_subscriber_whose_consumer_stopped_fetching(
        traversable_tmp: Path) -> None:
    """aiokafka's ``getone()`` waits without a deadline: with its fetch routine gone (as if it
    had died) the subscriber would wait forever. The watchdog restarts it."""
    async with _handled_one(traversable_tmp, 3) as one:
        watchdog = ConsumerWatchdog(one.broker, stall_s=3, check_s=0.5)
        fetch_task = one.subscriber.consumer._fetcher._fetch_task
        fetch_task.cancel()  # the consumer now hangs in getone(), as a dead routine leaves it
        with contextlib.suppress(asyncio.CancelledError):
            await fetch_task
        async with _watching(watchdog):
            ids = [f"after-{n}" for n in range(5)]
            await one.send(ids)
            assert await _until(lambda: all(c in one.handler.seen for c in ids), DEADLINE_S), \
                "the stalled subscriber was not restarted"
        assert watchdog.restarts >= 1


async def test_the_watchdog_rewinds_a_subscriber_positioned_past_the_log_end(
        traversable_tmp: Path) -> None:
    """A position past the log's end (kept from before a broker lost its log) gets no records
    from Tansu and no OFFSET_OUT_OF_RANGE either: without the watchdog the subscriber waits
    there, then skips what lies below. With it, the partition is read from its beginning."""
    async with _handled_one(traversable_tmp, 1) as one:
        watchdog = ConsumerWatchdog(one.broker, stall_s=60, check_s=0.5)
        (tp,) = one.subscriber.consumer.assignment()
        one.subscriber.consumer.seek(tp, 1000)  # as a position kept from a log the broker lost
        ids = [f"after-{n}" for n in range(5)]
        await one.send(ids)
        # the stuck state is real: nothing sent after the seek is handled without the watchdog
        assert not await _until(lambda: any(c in one.handler.seen for c in ids), 3)
        async with _watching(watchdog):
            assert await _until(lambda: all(c in one.handler.seen for c in ids), DEADLINE_S), \
                "the subscriber past the log's end was not rewound"
        assert watchdog.rewinds >= 1
        assert watchdog.restarts == 0  # rewound in place, not restarted
