"""The machine's own limits, measured in the same run as the product: raw psycopg and raw
aiokafka doing the least work that the product's path must also do."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.stats import rate

_RAW_TABLE = ("CREATE TABLE IF NOT EXISTS bench_raw "
              "(id bigserial PRIMARY KEY, payload text NOT NULL)")
_PAYLOAD = "x" * 200
# Tansu answers a fetch when its wait runs out, not when a message arrives, so the consumer's
# fetch wait bounds every round trip; both the baseline and the e2e consumer use this one.
FETCH_MAX_WAIT_MS = 5


def pg_single_row_commits(database_url: str, seconds: float) -> float:
    """Single-row INSERT + COMMIT per second on one connection."""
    with psycopg.connect(database_url) as conn:
        conn.execute(_RAW_TABLE)
        conn.commit()
        done, started = 0, time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            conn.execute("INSERT INTO bench_raw (payload) VALUES (%s)", (_PAYLOAD,))
            conn.commit()
            done += 1
        return rate(done, time.perf_counter() - started)


def pg_batched_rows(database_url: str, seconds: float, batch: int = 100) -> float:
    """Rows per second inserted ``batch`` rows per transaction on one connection."""
    rows = [(_PAYLOAD,)] * batch
    with psycopg.connect(database_url) as conn:
        conn.execute(_RAW_TABLE)
        conn.commit()
        done, started = 0, time.perf_counter()
        deadline = started + seconds
        with conn.cursor() as cur:
            while time.perf_counter() < deadline:
                cur.executemany("INSERT INTO bench_raw (payload) VALUES (%s)", rows)
                conn.commit()
                done += batch
        return rate(done, time.perf_counter() - started)


async def create_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if name not in set(await admin.list_topics()):
            await admin.create_topics([NewTopic(name=name, num_partitions=partitions,
                                                replication_factor=1)])
    finally:
        await admin.close()


async def kafka_round_trips(bootstrap: str, count: int) -> list[float]:
    """Produce → consume round trips in seconds, one message at a time (linger 0)."""
    topic = f"bench.rtt.{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
    await producer.start()
    await consumer.start()
    samples: list[float] = []
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await producer.send_and_wait(topic, b"warm-up")
        await consumer.getone()
        for i in range(count):
            body = f"{i}".encode()
            started = time.perf_counter()
            await producer.send(topic, body)
            while (await consumer.getone()).value != body:
                pass
            samples.append(time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()
    return samples


async def kafka_produce_rate(bootstrap: str, size: int, count: int) -> float:
    """Messages per second of ``size`` bytes, keyed, acks=all, acknowledged by the broker."""
    topic = f"bench.produce.{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        body = os.urandom(size // 2).hex().encode()[:size]
        keys = [uuid.uuid4().hex.encode() for _ in range(64)]
        await producer.send_and_wait(topic, body, key=keys[0])
        started = time.perf_counter()
        pending = [await producer.send(topic, body, key=keys[i % len(keys)])
                   for i in range(count)]
        await asyncio.gather(*pending)
        return rate(count, time.perf_counter() - started)
    finally:
        await producer.stop()


@dataclass(frozen=True)
class ReadDecode:
    events: int
    seconds: float

    @property
    def per_second(self) -> float:
        return rate(self.events, self.seconds)


def read_and_decode(database_url: str, page: int = 2000) -> ReadDecode:
    """Reads every stored event in pages and decodes it to a domain event, projecting
    nothing: the floor under a replay."""
    from services.eventstore import ReserveStore, postgres_env

    store = ReserveStore(env=postgres_env(database_url, pool_size=1))
    try:
        position, count = 0, 0
        started = time.perf_counter()
        while True:
            page_of = store.recorder.select_notifications(start=position, limit=page,
                                                          inclusive_of_start=False)
            if not page_of:
                break
            for notification in page_of:
                store.mapper.to_domain_event(notification)
            count += len(page_of)
            position = page_of[-1].id
        return ReadDecode(count, time.perf_counter() - started)
    finally:
        store.close()
