"""The relay after a broker that restarted empty while the relay kept running (found by the
fault-injection suite): the topics come back and everything stored is published again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from handlers.wire import parse_erp_body
from projections.relay import Relay
from services.embedded import EmbeddedBroker, free_port
from services.runtime import Core
from services.topics import RESERVE_EVENTS, ensure_topics
from tests.support import seed_facts, uid

pytestmark = pytest.mark.integration


async def _count(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum((await consumer.end_offsets(partitions)).values()) if partitions else 0
    finally:
        await consumer.stop()


async def _drain(relay: Relay) -> None:
    while await relay.run_once():
        pass


async def test_relay_republishes_everything_when_the_broker_lost_its_data(
        core: Core, traversable_tmp: Path) -> None:
    broker = EmbeddedBroker(traversable_tmp, port=free_port())
    bootstrap = broker.start()
    producer = None
    try:
        await ensure_topics(bootstrap, 3, 1)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        relay = Relay(core.store, core.pool, producer, bootstrap_servers=bootstrap)
        core.erp.ingest(parse_erp_body(seed_facts(uid("o-"), uid("r-"))))
        await _drain(relay)
        first = await _count(bootstrap, RESERVE_EVENTS)
        assert first == relay.position() > 0

        await relay.rewind_if_topic_lost()  # nothing lost: nothing republished
        assert relay.position() == first

        broker.stop()  # memory only: the restarted broker is empty
        broker.start()
        await asyncio.wait_for(ensure_topics(bootstrap, 3, 1), 30)
        core.erp.ingest(parse_erp_body(seed_facts(uid("o-"), uid("r-"))))
        await _drain(relay)  # new events reach the new, otherwise empty, topic
        stored = core.store.recorder.max_notification_id() or 0
        assert 0 < await _count(bootstrap, RESERVE_EVENTS) < stored  # the old ones are gone

        await relay.rewind_if_topic_lost()
        assert relay.position() == 0
        await _drain(relay)
        assert await _count(bootstrap, RESERVE_EVENTS) >= stored
    finally:
        if producer is not None:
            await producer.stop()
        broker.stop()
