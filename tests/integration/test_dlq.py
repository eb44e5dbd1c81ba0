"""Dead letters: listed with their reason and source, re-driven once, unchanged, to the source.

The module runs its own Tansu broker, so `retry --all` meets only this module's letters.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faststream.kafka import KafkaBroker

from handlers.kafka_consumers import register_consumers
from handlers.wire import parse_erp_body
from services.embedded import EmbeddedBroker, free_port
from services.ops_dlq import DeadLetter, DeadLetterError, DeadLetters, dlq_depth
from services.runtime import Core
from services.topics import ERP_EVENTS, ensure_topics
from tests.support import ERP_TOKEN, SKU, TOKENS, WAREHOUSE, envelope, eventually, uid

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = EmbeddedBroker(Path(tmp_path_factory.mktemp("dlq-broker")), port=free_port())
    yield broker.start()
    broker.stop()


@pytest.fixture
async def running(core: Core, own_broker: str) -> AsyncIterator[KafkaBroker]:
    """The service's erp.events and reserve.commands consumers, as `serve` runs them."""
    await ensure_topics(own_broker, partitions=2, replication_factor=1)
    broker = KafkaBroker(own_broker, logger=None)
    register_consumers(broker, erp=core.erp, commands=core.commands,
                       managers=frozenset(TOKENS.values()), session_timeout_ms=6000)
    await broker.start()
    yield broker
    await broker.stop()


def placed(order_id: str) -> dict[str, Any]:
    return envelope("CustomerOrderPlaced", {
        "order_id": order_id, "number": f"N-{order_id}", "date": "2020-05-01T09:00:00",
        "partner": "ООО Ромашка", "manager": "ivanov",
        "lines": [{"sku": SKU, "warehouse": WAREHOUSE, "quantity": 10}]})


async def redriven(bootstrap: str, key: bytes) -> list[Any]:
    """Every erp.events message with ``key``."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        await reader.topics()
        tps = [TopicPartition(ERP_EVENTS, p) for p in reader.partitions_for_topic(ERP_EVENTS)
               or ()]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        found: list[Any] = []
        while batch := await reader.getmany(timeout_ms=500):
            found.extend(r for rs in batch.values() for r in rs if r.key == key)
        return found
    finally:
        await reader.stop()


async def test_dead_letters_are_listed_and_redriven_once(core: Core, own_broker: str,
                                                         running: KafkaBroker) -> None:
    order_id = uid("o-")
    reserve = json.dumps(envelope("ReservePlaced", {
        "order_id": order_id, "sku": SKU, "warehouse": WAREHOUSE, "quantity": 3})).encode()
    producer = AIOKafkaProducer(bootstrap_servers=own_broker, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(ERP_EVENTS, reserve, key=order_id.encode(),
                                     headers=[("trace", b"t-1")])
        await producer.send_and_wait(ERP_EVENTS, b"\xff not json", key=b"junk")
    finally:
        await producer.stop()
    letters = DeadLetters(core.pool, own_broker)

    async def two_letters() -> list[DeadLetter] | None:
        found = await letters.letters()
        return found if len(found) >= 2 else None

    listed = {d.key: d for d in await eventually(two_letters, "two dead letters")}
    unknown, junk = listed[order_id.encode()], listed[b"junk"]
    assert unknown.value == reserve and junk.value == b"\xff not json"
    assert unknown.source.startswith(f"{ERP_EVENTS}/") and unknown.source_topic == ERP_EVENTS
    assert "unknown" in unknown.error and "JSON" in junk.error
    assert unknown.retried_at is None and unknown.preview(40).endswith("…")
    assert await letters.pending() == 2
    assert await dlq_depth(own_broker) >= 2

    # the ERP sends the missing order; the dead reserve can now be applied
    await asyncio.to_thread(core.erp.ingest, parse_erp_body([placed(order_id)]))
    done = await letters.retry([unknown.id])
    assert [d.id for d in done] == [unknown.id]

    async def applied() -> bool:
        order = await asyncio.to_thread(core.store.find_order, order_id)
        return order is not None and order.held(WAREHOUSE, SKU) == 3

    await eventually(applied, "the re-driven reserve to be applied")
    copies = await redriven(own_broker, order_id.encode())
    assert len(copies) == 2 and copies[1].value == reserve
    headers = dict(copies[1].headers)
    assert headers["trace"] == b"t-1"  # the original's headers, without error and source
    assert "error" not in headers and "source" not in headers
    relisted = {d.id: d for d in await letters.letters()}
    assert relisted[unknown.id].retried_at is not None
    with pytest.raises(DeadLetterError, match="was retried"):
        await letters.retry([unknown.id])
    with pytest.raises(DeadLetterError, match="no dead letter"):
        await letters.retry(["9:999999"])

    first_all = await letters.retry(None)
    assert [d.id for d in first_all] == [junk.id]  # the reserve is not re-driven again

    async def junk_dead_again() -> list[DeadLetter] | None:
        found = [d for d in await letters.letters() if d.key == b"junk"]
        return found if len(found) == 2 else None

    again = await eventually(junk_dead_again, "the junk to be dead-lettered again")
    second_all = await letters.retry(None)
    assert [d.id for d in second_all] == [d.id for d in again if d.id != junk.id]


def _cli(*args: str, database_url: str, kafka: str, var: Path
         ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "RESERVES_VAR_DIR": str(var),
           "KAFKA_BOOTSTRAP_SERVERS": kafka, "COLUMNS": "220",
           "RESERVES_API_TOKENS": ",".join(f"{m}={t}" for t, m in TOKENS.items()),
           "RESERVES_ERP_TOKENS": ERP_TOKEN}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


async def test_dlq_commands_list_and_retry(core: Core, database_url: str, own_broker: str,
                                           running: KafkaBroker, tmp_path: Path) -> None:
    key = uid("bad-")
    producer = AIOKafkaProducer(bootstrap_servers=own_broker, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(ERP_EVENTS, b"{not json", key=key.encode())
    finally:
        await producer.stop()
    letters = DeadLetters(core.pool, own_broker)

    async def listed() -> DeadLetter | None:
        return next((d for d in await letters.letters() if d.key == key.encode()), None)

    letter = await eventually(listed, "the dead letter")

    shown = await asyncio.to_thread(_cli, "dlq", "list", "--json", database_url=database_url,
                                    kafka=own_broker, var=tmp_path)
    assert shown.returncode == 0, shown.stderr
    mine = [d for d in json.loads(shown.stdout) if d["key"] == key]
    assert mine == [{"id": letter.id, "source": letter.source, "error": letter.error,
                     "time": letter.timestamp.isoformat(), "key": key, "value": "{not json",
                     "retried_at": None}]
    table = await asyncio.to_thread(_cli, "dlq", "list", database_url=database_url,
                                    kafka=own_broker, var=tmp_path)
    assert letter.id in table.stderr and "JSON" in table.stderr

    retried = await asyncio.to_thread(_cli, "dlq", "retry", letter.id,
                                      database_url=database_url, kafka=own_broker, var=tmp_path)
    assert retried.returncode == 0, retried.stderr
    assert f"re-drove {letter.id} to {ERP_EVENTS}" in retried.stderr
    refused = await asyncio.to_thread(_cli, "dlq", "retry", letter.id,
                                      database_url=database_url, kafka=own_broker, var=tmp_path)
    assert refused.returncode == 1 and "--again" in refused.stderr
