"""Dead letters on ``reserve.dlq``: read them, and re-drive them to the topic they came from.

A dead letter is the original message, unchanged, with two headers added by the consumer that
gave up on it: ``error`` (why) and ``source`` (``topic/partition/offset``). Re-driving produces
the original key, value and headers (without those two) to the source topic, then records the
retry in PostgreSQL (``ops_dlq_retries``), keyed by the letter's DLQ partition and offset and a
digest of its bytes, so listings show it and a second ``retry --all`` leaves it alone. A crash
between the two steps re-drives a letter twice at worst: the consumers are idempotent by
``event_id`` and ``command_id``.
"""

from __future__ import annotations

import getpass
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from psycopg_pool import ConnectionPool

from services.topics import DLQ

DLQ_HEADERS = frozenset({"error", "source"})
_LOCK = 7412003
QUIET_POLLS = 3
_DDL = (
    "CREATE TABLE IF NOT EXISTS ops_dlq_retries ("
    "id text NOT NULL, digest text NOT NULL, target text NOT NULL, "
    "retried_at timestamptz NOT NULL DEFAULT now(), retried_by text NOT NULL, "
    "PRIMARY KEY (id, digest))"
)


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    retried_at: datetime | None = None

    @property
    def id(self) -> str:
        """``partition:offset`` in ``reserve.dlq``: what ``reserves dlq retry`` takes."""
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return ""

    @property
    def error(self) -> str:
        return self.header("error")

    @property
    def source(self) -> str:
        return self.header("source")

    @property
    def source_topic(self) -> str | None:
        parts = self.source.rsplit("/", 2)
        return parts[0] if len(parts) == 3 and parts[0] else None

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(self.key or b"")
        h.update(b"\0")
        h.update(self.value)
        return h.hexdigest()

    def preview(self, width: int = 80) -> str:
        text = self.value.decode("utf-8", "replace").replace("\n", " ")
        return text if len(text) <= width else text[: width - 1] + "…"


class DeadLetterError(Exception):
    """A retry that cannot be done; the message says why."""


async def _dlq_partitions(consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    await consumer.topics()  # loads the cluster's metadata
    return [TopicPartition(DLQ, p) for p in sorted(consumer.partitions_for_topic(DLQ) or ())]


async def dlq_depth(bootstrap_servers: str) -> int:
    """How many messages ``reserve.dlq`` holds (retried or not): cheap, for a gauge. On Tansu
    it can count a few too few (its end offset is the last batch's base offset + 1)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await _dlq_partitions(consumer)
        if not tps:
            return 0
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


async def read_dead_letters(bootstrap_servers: str) -> list[DeadLetter]:
    """Every message on ``reserve.dlq``, oldest first per partition (no consumer group).
    Messages written while it reads may or may not be included."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        tps = await _dlq_partitions(consumer)
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # Tansu's reported end offsets lag behind and undercount (its ListOffsets answers the
        # last batch's base offset + 1, sometimes 0 just after a write), so the end is where
        # the position has passed the reported end and several fetches in a row come back
        # empty.
        quiet = 0
        while quiet < QUIET_POLLS:
            batches = await consumer.getmany(*tps, timeout_ms=300, max_records=1000)
            for records in batches.values():
                letters.extend(DeadLetter(
                    r.partition, r.offset, datetime.fromtimestamp(r.timestamp / 1000, UTC),
                    r.key, r.value or b"", tuple((k, bytes(v)) for k, v in r.headers))
                    for r in records)
            if any(batches.values()):
                quiet = 0
                continue
            ends = await consumer.end_offsets(tps)
            behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            quiet = 0 if behind else quiet + 1
    finally:
        await consumer.stop()
    return letters


class DeadLetters:
    def __init__(self, pool: ConnectionPool[Any], bootstrap_servers: str) -> None:
        self.pool = pool
        self.bootstrap_servers = bootstrap_servers
        with pool.connection() as conn:
            conn.execute(_DDL)

    def _retried(self, letters: list[DeadLetter]) -> dict[tuple[str, str], datetime]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, digest, retried_at FROM ops_dlq_retries WHERE id = ANY(%s)",
                ([d.id for d in letters],)).fetchall()
        return {(r[0], r[1]): r[2] for r in rows}

    async def letters(self) -> list[DeadLetter]:
        """The dead letters, each with when it was retried (None: never)."""
        letters = await read_dead_letters(self.bootstrap_servers)
        retried = self._retried(letters)
        return [DeadLetter(d.partition, d.offset, d.timestamp, d.key, d.value, d.headers,
                           retried.get((d.id, d.digest))) for d in letters]

    async def pending(self) -> int:
        """How many dead letters were never retried (reads the whole topic)."""
        return sum(1 for d in await self.letters() if d.retried_at is None)

    async def retry(self, ids: list[str] | None, *, again: bool = False) -> list[DeadLetter]:
        """Re-drives the letters named by ``ids`` (None: every one not retried yet) to their
        source topics; returns those re-driven. A named letter already retried is re-driven
        only with ``again``."""
        with self.pool.connection() as lock_conn:
            locked = lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK,)).fetchone()
            if not locked or not locked[0]:
                raise DeadLetterError("another `reserves dlq retry` is running; try again later")
            try:
                return await self._retry(ids, again)
            finally:
                lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))

    async def _retry(self, ids: list[str] | None, again: bool) -> list[DeadLetter]:
        letters = await self.letters()
        if ids is None:
            chosen = [d for d in letters if d.retried_at is None]
        else:
            by_id = {d.id: d for d in letters}
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise DeadLetterError(f"no dead letter {missing[0]!r} on {DLQ} "
                                      "(ids are partition:offset, see `reserves dlq list`)")
            done = [i for i in ids if by_id[i].retried_at is not None and not again]
            if done:
                raise DeadLetterError(f"dead letter {done[0]} was retried at "
                                      f"{by_id[done[0]].retried_at}; add --again to re-drive it")
            chosen = [by_id[i] for i in ids]
        unroutable = [d.id for d in chosen if d.source_topic is None]
        if unroutable:
            raise DeadLetterError(f"dead letter {unroutable[0]} has no usable `source` header")
        if not chosen:
            return []
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, acks="all")
        await producer.start()
        try:
            for d in chosen:
                headers = [(k, v) for k, v in d.headers if k not in DLQ_HEADERS]
                await (await producer.send(str(d.source_topic), d.value, key=d.key,
                                           headers=headers))
                with self.pool.connection() as conn:
                    conn.execute(
                        "INSERT INTO ops_dlq_retries (id, digest, target, retried_by) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT (id, digest) DO UPDATE SET "
                        "retried_at = now(), retried_by = EXCLUDED.retried_by",
                        (d.id, d.digest, d.source_topic, getpass.getuser()))
        finally:
            await producer.stop()
        return chosen
