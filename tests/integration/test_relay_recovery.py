"""A broker that restarted empty under a running service (found by the fault-injection suite):
the topics come back, everything stored is published again, and the consumers carry on."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from domain.ids import event_uuid
from handlers.wire import parse_erp_body
from projections.relay import Relay
from services.consumer_watchdog import STALL_S, _dead_routine
from services.embedded import EmbeddedBroker, free_port
from services.runtime import Core, Infrastructure, Service
from services.settings import ROLES
from services.topics import COMMAND_RESULTS, COMMANDS, RESERVE_EVENTS, ensure_topics
from tests.faults.checker import read_topic
from tests.support import make_settings, seed_facts, uid

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


async def _publish_until_whole(relay: Relay, bootstrap: str) -> set[str]:
    """Drains the relay and lets it check the topic until it finds nothing lost (Tansu itself
    now and then drops a batch it acknowledged, which the same check heals); the event ids on
    ``reserve.events``."""
    for _ in range(10):
        await _drain(relay)
        before = relay.position()
        await relay.rewind_if_topic_lost()
        if relay.position() == before:
            break
    return {m["event_id"] for m in await read_topic(bootstrap, RESERVE_EVENTS)}


def _stored_ids(core: Core) -> set[str]:
    return {str(event_uuid(UUID(str(n.originator_id)), n.originator_version))
            for n in core.store.recorder.select_notifications(0, 10_000)}


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
        assert await _publish_until_whole(relay, bootstrap) == _stored_ids(core)
        first = relay.position()
        assert first > 0

        broker.stop()  # memory only: the restarted broker is empty
        broker.start()
        await asyncio.wait_for(ensure_topics(bootstrap, 3, 1), 30)
        core.erp.ingest(parse_erp_body(seed_facts(uid("o-"), uid("r-"))))
        await _drain(relay)  # new events reach the new, otherwise empty, topic
        assert await _count(bootstrap, RESERVE_EVENTS) <= relay.position() - first

        await relay.rewind_if_topic_lost()
        assert relay.position() == 0  # the loss is seen: everything is published again
        assert await _publish_until_whole(relay, bootstrap) == _stored_ids(core)
    finally:
        if producer is not None:
            await producer.stop()
        broker.stop()


async def test_a_burst_published_in_batches_is_not_taken_for_a_loss(
        core: Core, traversable_tmp: Path) -> None:
    """Tansu's end offsets stop at the start of a partition's last record batch; the relay
    sends batches of many records, so counting with them alone took every burst for a loss
    and published the whole store again."""
    broker = EmbeddedBroker(traversable_tmp, port=free_port())
    bootstrap = broker.start()
    producer = None
    try:
        await ensure_topics(bootstrap, 3, 1)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        relay = Relay(core.store, core.pool, producer, bootstrap_servers=bootstrap)
        for _ in range(10):
            core.erp.ingest(parse_erp_body(seed_facts(uid("o-"), uid("r-"))))
        assert await relay.catch_up() == len(_stored_ids(core))
        position = relay.position()
        await relay.rewind_if_topic_lost()
        assert relay.position() == position
    finally:
        if producer is not None:
            await producer.stop()
        broker.stop()


async def test_the_relay_catches_up_after_the_broker_restarted_empty_while_events_flow(
        database_url: str, traversable_tmp: Path) -> None:
    """The relay role alone, events stored all along, the broker restarted (empty) under it:
    the relay must come back and publish everything stored (found by the fault suite)."""
    broker = EmbeddedBroker(traversable_tmp, port=free_port())
    bootstrap = broker.start()
    settings = make_settings(traversable_tmp, database_url, kafka=bootstrap)
    service = await asyncio.to_thread(Service, settings, Infrastructure(database_url, bootstrap),
                                      frozenset({"relay"}))
    core = service.core
    stop = asyncio.Event()

    async def store_events() -> None:
        while not stop.is_set():
            await asyncio.to_thread(core.erp.ingest,
                                    parse_erp_body(seed_facts(uid("o-"), uid("r-"))))
            await asyncio.sleep(0.05)

    writer = asyncio.create_task(store_events())
    try:
        await service.start_background()
        await asyncio.sleep(2)
        broker.stop()
        await asyncio.sleep(3)  # events stored meanwhile: the relay tries to send them
        broker.start()
        await asyncio.sleep(8)
        stop.set()
        await writer
        head = await asyncio.to_thread(core.store.recorder.max_notification_id)
        assert service.relay is not None
        relay = service.relay
        deadline = asyncio.get_running_loop().time() + 90
        while await asyncio.to_thread(relay.position) < (head or 0):
            if asyncio.get_running_loop().time() > deadline:
                for task in asyncio.all_tasks():
                    task.print_stack(limit=12)
                raise AssertionError(f"relay at {relay.position()} of {head} after the restart")
            await asyncio.sleep(0.2)
        ids = {m["event_id"] for m in await read_topic(bootstrap, RESERVE_EVENTS)}
        assert ids >= _stored_ids(core)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await writer
        await service.stop_background()
        service.close()
        broker.stop()


async def _results(bootstrap: str, command_id: str, within: float) -> list[dict[str, Any]]:
    """Results for ``command_id`` on reserve.command-results, waiting until one arrives."""
    consumer = AIOKafkaConsumer(COMMAND_RESULTS, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        found: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + within
        while not found and asyncio.get_running_loop().time() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                found += [v for v in (json.loads(m.value or b"{}") for m in messages)
                          if v.get("command_id") == command_id]
        return found
    finally:
        await consumer.stop()


async def test_consumers_carry_on_after_the_broker_restarted_empty(
        database_url: str, traversable_tmp: Path) -> None:
    broker = EmbeddedBroker(traversable_tmp, port=free_port())
    bootstrap = broker.start()
    settings = make_settings(traversable_tmp, database_url, kafka=bootstrap)
    service = await asyncio.to_thread(Service, settings,
                                      Infrastructure(database_url, bootstrap), frozenset(ROLES))
    # Its metadata is refreshed, as the service's own clients' is. Tansu creates a topic that a
    # metadata request names, with 4 partitions; the relay re-creates the lost topics with 3.
    # After the empty restart the two race, and a client may keep the count it was told first:
    # a failing run (likely this) showed the consumer holding reserve.commands 0-2, all empty,
    # while a passing one held 0-3 with the command in 3.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                metadata_max_age_ms=1_000)
    try:
        await service.start_background()
        broker.stop()  # memory only: the restarted broker has no topics, groups or offsets
        broker.start()
        await producer.start()
        command_id = uid("c-")
        command = {"command_id": command_id, "type": "CancelReserveRequest", "actor": "ivanov",
                   "data": {"request_id": str(uuid4())}}
        # the relay re-creates the topics; until then a send may fail, as for any client. A
        # consumer that aiokafka leaves stalled after the restart (seen under a loaded machine,
        # docs/reliability.md) is restarted by the service's watchdog after STALL_S: allow for
        # that, and for the group join after it.
        deadline = asyncio.get_running_loop().time() + STALL_S + 60
        results: list[dict[str, Any]] = []
        while not results and asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(KafkaError):
                await producer.client.force_metadata_update()  # the partitions as they are now
                # partition 0 exists whether the topic came back with 3 or 4 partitions
                await producer.send_and_wait(COMMANDS, json.dumps(command).encode(),
                                             key=command_id.encode(), partition=0)
            results = await _results(bootstrap, command_id, 10)
        assert results, ("no answer on reserve.command-results after the broker restart; "
                         f"the consumers: {await _consumer_states(service)}")
        assert results[0]["error"]["code"] == "request_not_found"
    finally:
        await producer.stop()
        await service.stop_background()
        service.close()
        broker.stop()


async def _consumer_states(service: Service) -> list[dict[str, Any]]:
    """What each subscriber's aiokafka consumer holds, for a failure's message: this test failed
    in two full suites of about eight, without the watchdog acting, and never alone."""
    states: list[dict[str, Any]] = []
    for subscriber in list(service.broker.subscribers) if service.broker is not None else []:
        consumer: Any = getattr(subscriber, "consumer", None)
        state: dict[str, Any] = {"topics": getattr(subscriber, "topic_names", None),
                                 "running": getattr(subscriber, "running", None)}
        if consumer is not None:
            with contextlib.suppress(Exception):
                assigned = sorted(consumer.assignment())
                state["assignment"] = {
                    f"{tp.topic}/{tp.partition}": (await consumer.position(tp),
                                                   consumer.highwater(tp))
                    for tp in assigned}
                state["joining"] = consumer._subscription.reassignment_in_progress
                state["coordinator_id"] = consumer._coordinator.coordinator_id
                state["dead_routine"] = _dead_routine(consumer)
        states.append(state)
    return states
