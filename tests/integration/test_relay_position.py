"""The relay's position written at most every ``position_every`` seconds (the service's mode):
in memory at once, in rm_tracking by a timer, at a stop, and never over a rewind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from handlers.wire import parse_erp_body
from projections.relay import Relay
from services.runtime import Core
from services.topics import ensure_topics
from tests.support import eventually, seed_facts, uid

pytestmark = pytest.mark.integration

EVERY = 0.5


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    await ensure_topics(kafka_bootstrap, 3, 1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    yield producer
    await producer.stop()


def _store_some(core: Core) -> int:
    core.erp.ingest(parse_erp_body(seed_facts(uid("o-"), uid("r-"))))
    return int(core.store.recorder.max_notification_id() or 0)


async def _written(relay: Relay, position: int, within: float) -> None:
    """Waits until rm_tracking holds ``position`` (never one past it)."""
    async def reached() -> bool:
        got = await asyncio.to_thread(relay.position)
        assert got <= position
        return got == position

    await eventually(reached, f"rm_tracking to hold {position}", within=within, interval=0.01)


async def test_the_position_is_written_at_once_then_at_most_every_interval(
        core: Core, producer: AIOKafkaProducer, kafka_bootstrap: str) -> None:
    relay = Relay(core.store, core.pool, producer, bootstrap_servers=kafka_bootstrap,
                  position_every=EVERY)
    try:
        first = _store_some(core)
        assert await relay.catch_up() > 0
        assert relay.position() == first  # the first write goes at once
        second = _store_some(core)
        assert await relay.catch_up() > 0
        assert relay.position() == first  # within the interval: not written yet...
        assert await relay.catch_up() == 0  # ...but published: the next read starts after it
        # ...and written by the timer, without another page
        await _written(relay, second, within=EVERY + 5)
    finally:
        await relay.stop()


async def test_a_stop_writes_what_was_acknowledged(
        core: Core, producer: AIOKafkaProducer, kafka_bootstrap: str) -> None:
    relay = Relay(core.store, core.pool, producer, bootstrap_servers=kafka_bootstrap,
                  position_every=60.0)
    _store_some(core)
    await relay.catch_up()
    head = _store_some(core)
    await relay.catch_up()
    assert relay.position() < head
    await relay.stop()
    assert relay.position() == head


async def test_a_rewind_is_not_overwritten_by_a_pending_write(
        core: Core, producer: AIOKafkaProducer, kafka_bootstrap: str) -> None:
    relay = Relay(core.store, core.pool, producer, bootstrap_servers=kafka_bootstrap,
                  position_every=EVERY)
    try:
        _store_some(core)
        await relay.catch_up()
        _store_some(core)
        await relay.catch_up()  # acknowledged, its write pending
        async with relay._lock:  # as rewind_if_topic_lost does
            await asyncio.to_thread(relay.set_position, 0)
        pending = relay._flush
        assert pending is not None
        await pending  # the timer has fired
        assert relay.position() == 0
    finally:
        await relay.stop()
    assert relay.position() == 0  # nor by the stop
