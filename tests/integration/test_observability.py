"""Metrics, readiness and correlation ids, on real PostgreSQL and the real (Tansu) broker.

Counters are process-wide (one Prometheus registry per process), so tests compare a sample
before and after what they do. Topics are shared by the session's broker: each test reads
from the offsets it took before acting and filters by its own keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from asgi_correlation_id import CorrelationIdFilter
from fastapi.testclient import TestClient
from faststream.kafka import KafkaBroker
from prometheus_client import REGISTRY
from psycopg_pool import ConnectionPool

from domain.ids import order_uuid
from handlers.http_api import create_http_app
from handlers.kafka_consumers import COMMANDS_GROUP, register_consumers
from handlers.wire import parse_erp_body
from projections.relay import Relay
from services.embedded import free_port
from services.observability import Monitor, MonitorSettings
from services.runtime import Core
from services.topics import COMMAND_RESULTS, COMMANDS, DLQ, RESERVE_EVENTS, ensure_topics
from services.tracing import CorrelationMiddleware, correlated
from tests.support import ERP_AUTH, SKU, WAREHOUSE, auth, eventually, seed_facts, uid

pytestmark = pytest.mark.integration

FAST = MonitorSettings(interval=0.2, timeout=2.0, ready_max_projection_lag=1000)


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def correlations(core: Core, aggregate_id: uuid.UUID) -> set[str]:
    with core.pool.connection() as conn:
        rows = conn.execute("SELECT correlation_id FROM event_correlations "
                            "WHERE originator_id = %s", (aggregate_id,)).fetchall()
    return {r[0] for r in rows}


class Capture(logging.Handler):
    """Keeps (message, correlation id) of what a logger says."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(CorrelationIdFilter())
        self.lines: list[tuple[str, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.getMessage(), getattr(record, "correlation_id", None)))


def captured(name: str) -> Capture:
    capture = Capture()
    logger = logging.getLogger(name)
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    return capture


# -- HTTP: correlation ids, metrics, /ready -------------------------------------------------

def test_an_http_command_keeps_its_correlation_id_in_the_store_and_is_counted(
        core: Core) -> None:
    owner, requester = uid("own-"), uid("req-")
    before_ok = sample("reserves_commands_total", type="RequestReserve", outcome="ok",
                       source="http")
    before_refused = sample("reserves_refusals_total", code="insufficient_reserve", source="http")
    with TestClient(create_http_app(core)) as client:
        facts = client.post("/v1/erp/events", json=seed_facts(owner, requester),
                            headers={**ERP_AUTH, "X-Correlation-Id": "erp-batch-1"})
        assert facts.status_code == 200 and facts.headers["x-correlation-id"] == "erp-batch-1"
        cid = f"trace-{uuid.uuid4()}"
        body = {"from_order_id": owner, "to_order_id": requester, "sku": SKU,
                "warehouse": WAREHOUSE, "quantity": 8}
        asked = client.post("/v1/reserve-requests", json=body,
                            headers={**auth("ivanov"), "X-Correlation-Id": cid})
        assert asked.status_code == 201, asked.text
        assert asked.headers["x-correlation-id"] == cid
        too_many = client.post("/v1/reserve-requests", json={**body, "quantity": 9},
                               headers=auth("ivanov"))
        assert too_many.status_code == 409
        assert too_many.json()["error"]["code"] == "insufficient_reserve"
        generated = too_many.headers["x-correlation-id"]
        assert uuid.UUID(generated).version == 4
        bad = client.get("/v1/inbox", headers={**auth("ivanov"), "X-Correlation-Id": "a\tb"})
        assert bad.headers["x-correlation-id"] != "a\tb"  # replaced, never refused
        metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert correlations(core, order_uuid(owner)) == {"erp-batch-1"}
    assert correlations(core, uuid.UUID(asked.json()["request_id"])) == {cid}
    assert sample("reserves_commands_total", type="RequestReserve", outcome="ok",
                  source="http") == before_ok + 1
    assert sample("reserves_refusals_total", code="insufficient_reserve",
                  source="http") == before_refused + 1
    assert 'handler="/v1/reserve-requests"' in metrics.text
    assert "http_request_duration_seconds_bucket" in metrics.text
    assert "reserves_erp_facts_total" in metrics.text


def test_ready_is_200_when_postgres_broker_and_projections_are_fine(
        core: Core, kafka_bootstrap: str) -> None:
    monitor = Monitor(core.pool, kafka_bootstrap, settings=FAST)
    with TestClient(create_http_app(core, readiness=monitor)) as client:
        response = client.get("/ready")
        client.portal.call(monitor.close)  # type: ignore[union-attr]
        health = client.get("/health")
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert checks["postgres"]["ok"] and checks["broker"]["ok"] and checks["projections"]["ok"]
    assert checks["projections"]["lag"] == {"orders": 0, "requests": 0}
    assert health.json() == {"status": "ok"}


def test_ready_is_503_with_reasons_when_the_broker_is_down(core: Core) -> None:
    monitor = Monitor(core.pool, f"127.0.0.1:{free_port()}",
                      settings=MonitorSettings(timeout=1.0))
    with TestClient(create_http_app(core, readiness=monitor)) as client:
        started = time.monotonic()
        response = client.get("/ready")
        took = time.monotonic() - started
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"]["code"] == "not_ready" and "broker" in body["error"]["message"]
    assert body["checks"]["broker"]["ok"] is False and body["checks"]["postgres"]["ok"] is True
    assert took < 10, f"/ready took {took:.1f} s with the broker down"


async def test_ready_fails_when_projections_lag_beyond_the_bound_or_postgres_is_down(
        core: Core) -> None:
    await asyncio.to_thread(core.erp.ingest, parse_erp_body(seed_facts(uid("o-"), uid("r-"))))
    strict = Monitor(core.pool, None, settings=MonitorSettings(ready_max_projection_lag=0))
    ok, checks = await strict.readiness()
    assert not ok and not checks["projections"]["ok"] and "broker" not in checks
    assert "orders" in checks["projections"]["error"]
    assert "requests" in checks["projections"]["error"]
    await asyncio.to_thread(core.projector.run_once)
    assert (await strict.readiness())[0]

    nowhere = ConnectionPool(f"postgresql://postgres@127.0.0.1:{free_port()}/x", min_size=0,
                             max_size=1, open=True, timeout=1.0)
    try:
        ok, checks = await Monitor(nowhere, None, settings=MonitorSettings(timeout=1.0)
                                   ).readiness()
    finally:
        nowhere.close()
    assert not ok and checks["postgres"]["ok"] is False and "projections" not in checks


# -- lag figures ----------------------------------------------------------------------------

async def test_relay_and_projection_lag_follow_the_store(core: Core, kafka_bootstrap: str
                                                         ) -> None:
    monitor = Monitor(core.pool, None, settings=FAST)
    await asyncio.to_thread(core.erp.ingest, parse_erp_body(seed_facts(uid("o-"), uid("r-"))))
    stored = await asyncio.to_thread(core.store.recorder.max_notification_id) or 0
    assert stored > 0
    await monitor.refresh()
    assert sample("reserves_store_position") == stored
    assert sample("reserves_relay_lag_events") == stored
    for projection in ("orders", "requests"):
        assert sample("reserves_projection_lag_events", projection=projection) == stored
    assert sample("reserves_dependency_up", dependency="postgres") == 1
    await asyncio.to_thread(core.projector.run_once)
    await monitor.refresh()
    for projection in ("orders", "requests"):
        assert sample("reserves_projection_lag_events", projection=projection) == 0
    assert sample("reserves_relay_lag_events") == stored


async def test_consumer_lag_and_dlq_size_count_every_record_on_tansu(
        core: Core, kafka_bootstrap: str) -> None:
    """Tansu's end_offsets stop at the start of the last batch; the figures must not."""
    topic, group = uid("obs-topic-"), uid("obs-group-")
    await ensure_topics(kafka_bootstrap, 3, 1)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    monitor = Monitor(core.pool, kafka_bootstrap, {group: topic}, FAST)
    try:
        dlq_before = (await monitor.read_broker_figures()).dlq
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50)
        await producer.start()
        try:
            for batch in (5, 4):  # two batches of several records each
                await asyncio.gather(*[await producer.send(topic, b"m", partition=0)
                                       for _ in range(batch)])
            await asyncio.gather(*[await producer.send(DLQ, b"poison", key=uid().encode())
                                   for _ in range(3)])
        finally:
            await producer.stop()
        committer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group,
                                     enable_auto_commit=False)
        await committer.start()
        try:
            committer.assign([TopicPartition(topic, 0)])
            await committer.commit({TopicPartition(topic, 0): 3})
        finally:
            await committer.stop()
        figures = await monitor.read_broker_figures()
        assert figures.consumer_lag == {(topic, group): 9 - 3}
        assert figures.dlq == dlq_before + 3
        await monitor.refresh()
        assert sample("reserves_consumer_lag_messages", topic=topic, group=group) == 6
        assert sample("reserves_dlq_messages") == dlq_before + 3
        assert sample("reserves_dependency_up", dependency="broker") == 1
    finally:
        await monitor.close()


async def test_a_dead_broker_drops_broker_figures_instead_of_hanging(core: Core) -> None:
    monitor = Monitor(core.pool, f"127.0.0.1:{free_port()}", {"g": "t"},
                      MonitorSettings(timeout=1.0))
    started = time.monotonic()
    await monitor.refresh()
    assert time.monotonic() - started < 10
    assert sample("reserves_dependency_up", dependency="broker") == 0
    assert sample("reserves_dependency_up", dependency="postgres") == 1
    await monitor.close()


# -- the correlation id through Kafka, the relay and the projector ---------------------------

async def test_the_relay_and_projector_carry_the_stored_correlation_id(
        core: Core, kafka_bootstrap: str) -> None:
    await ensure_topics(kafka_bootstrap, 3, 1)
    owner = uid("own-")
    cid = f"erp-{uuid.uuid4()}"
    with correlated(cid):
        await asyncio.to_thread(core.erp.ingest, parse_erp_body(seed_facts(owner, uid("r-"))))
    relay_log, projector_log = captured("projections.relay"), captured("projections.projector")
    reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await reader.start()
    await producer.start()
    try:
        await reader.topics()
        tps = [TopicPartition(RESERVE_EVENTS, p)
               for p in sorted(reader.partitions_for_topic(RESERVE_EVENTS) or ())]
        marks = await reader.end_offsets(tps)
        reader.assign(tps)
        for tp in tps:
            reader.seek(tp, marks[tp])
        await Relay(core.store, core.pool, producer).run_once()
        await asyncio.to_thread(core.projector.run_once)
        key = str(order_uuid(owner)).encode()
        seen: list[dict[str, str]] = []

        async def ours() -> bool:
            for records in (await reader.getmany(timeout_ms=200)).values():
                seen.extend({k: v.decode() for k, v in r.headers} for r in records
                            if r.key == key)
            return len(seen) >= 2  # OrderPlaced and ReservePlaced of the owner's order

        await eventually(ours, "the owner's order events on reserve.events")
    finally:
        await reader.stop()
        await producer.stop()
        for name, handler in (("projections.relay", relay_log),
                              ("projections.projector", projector_log)):
            logging.getLogger(name).removeHandler(handler)
    assert all(h.get("correlation_id") == cid for h in seen), seen
    assert any(c == cid and m.startswith("published") for m, c in relay_log.lines)
    assert any(c == cid and m.startswith("projected") for m, c in projector_log.lines)


async def check_dead_letter_keeps_the_correlation_id(kafka_bootstrap: str,
                                                     consuming: KafkaBroker) -> None:
    """A command without command_id goes to reserve.dlq with the id it came with."""
    key, cid = uid("dl-").encode(), f"tool-{uuid.uuid4()}"
    reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await reader.start()
    try:
        await reader.topics()
        tps = [TopicPartition(DLQ, p) for p in sorted(reader.partitions_for_topic(DLQ) or ())]
        marks = await reader.end_offsets(tps)
        reader.assign(tps)
        for tp in tps:
            reader.seek(tp, marks[tp])
        await consuming.publish({"type": "RequestReserve", "actor": "ivanov", "data": {}},
                                topic=COMMANDS, key=key, correlation_id=cid)
        found: list[Any] = []

        async def dead() -> bool:
            for records in (await reader.getmany(timeout_ms=200)).values():
                found.extend(r for r in records if r.key == key)
            return bool(found)

        await eventually(dead, "the command without command_id on reserve.dlq")
    finally:
        await reader.stop()
    headers = {k: v.decode() for k, v in found[0].headers}
    assert headers["correlation_id"] == cid
    assert "command_id" in headers["error"] and headers["source"].startswith(f"{COMMANDS}/")


@pytest.fixture
async def consuming(core: Core, kafka_bootstrap: str) -> AsyncIterator[KafkaBroker]:
    await ensure_topics(kafka_bootstrap, 3, 1)
    broker = KafkaBroker(kafka_bootstrap, logger=None, middlewares=[CorrelationMiddleware])
    register_consumers(broker, erp=core.erp, commands=core.commands,
                       managers=frozenset({"ivanov", "petrova", "sidorov"}),
                       session_timeout_ms=6000)
    await broker.start()
    yield broker
    await broker.stop()


async def test_kafka_messages_are_correlated_by_header_into_store_result_and_dlq(
        core: Core, kafka_bootstrap: str, consuming: KafkaBroker) -> None:
    owner, requester = uid("own-"), uid("req-")
    await asyncio.to_thread(core.erp.ingest, parse_erp_body(seed_facts(owner, requester)))
    await asyncio.to_thread(core.projector.run_once)
    command_id, cid = uid("cmd-"), f"tool-{uuid.uuid4()}"
    reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await reader.start()
    try:
        await reader.topics()
        tps = [TopicPartition(COMMAND_RESULTS, p)
               for p in sorted(reader.partitions_for_topic(COMMAND_RESULTS) or ())]
        marks = await reader.end_offsets(tps)
        reader.assign(tps)
        for tp in tps:
            reader.seek(tp, marks[tp])
        before = sample("reserves_commands_total", type="RequestReserve", outcome="ok",
                        source="kafka")
        await consuming.publish(
            {"command_id": command_id, "type": "RequestReserve", "actor": "ivanov",
             "data": {"from_order_id": owner, "to_order_id": requester, "sku": SKU,
                      "warehouse": WAREHOUSE, "quantity": 8}},
            topic=COMMANDS, key=command_id.encode(), correlation_id=cid)
        found: list[Any] = []

        async def answered() -> bool:
            for records in (await reader.getmany(timeout_ms=200)).values():
                found.extend(r for r in records if r.key == command_id.encode())
            return bool(found)

        await eventually(answered, f"the result of {command_id} (group {COMMANDS_GROUP})")
    finally:
        await reader.stop()
    result = found[0]
    assert dict((k, v.decode()) for k, v in result.headers)["correlation_id"] == cid
    request_id = json.loads(result.value)["result"]["request_id"]
    assert correlations(core, uuid.UUID(request_id)) == {cid}
    assert sample("reserves_commands_total", type="RequestReserve", outcome="ok",
                  source="kafka") == before + 1
    await check_dead_letter_keeps_the_correlation_id(kafka_bootstrap, consuming)
