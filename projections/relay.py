"""The relay: publishes every stored event to ``reserve.events`` from the event store's own log.

Publication happens after the commit and from the log, never beside the write, so nothing is
published that was not stored and nothing stored goes unpublished. The position published up
to is tracked in PostgreSQL after the broker has acknowledged each page: delivery is at least
once, and a repeat carries the same ``event_id``.

How it goes fast (docs/performance.md, "Relay"):

- one query per page reads the events with their correlation ids, on a connection of the
  relay's own (asynchronous: no thread hop, no pool check per use);
- messages are built from the stored state as it is (JSON already), without decoding to domain
  events and encoding again; the result is the same bytes (``event_message`` is the reference,
  and the fallback for anything the fast path does not know: upcasts, unknown transcodings);
- messages go to the producer in batches of our own, one per partition (the same partition
  ``send`` would choose), so the per-message cost of ``send`` is not paid;
- pages are pipelined: page n+1 is read, built and handed to the producer while page n is
  being acknowledged; the position is written after each acknowledged page, in order.

Order per key: aiokafka sends at most one request per broker at a time and holds a partition
back while its batch is in flight (retries included), so batches of a partition reach the
broker in the order they were handed over, and pages are handed over in log order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from eventsourcing.application import Application
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Notification, UUIDAsHex
from eventsourcing.utils import resolve_topic
from psycopg.sql import SQL, Identifier
from psycopg_pool import ConnectionPool

from domain.ids import event_uuid
from projections.projector import tracked_position
from services.eventstore import ReserveStore
from services.observability import true_end_offsets
from services.topics import ORDER_STATUS, RESERVE_EVENTS
from services.tracing import CORRELATIONS_TABLE, HEADER, log_correlated

log = logging.getLogger(__name__)

TRACKING_NAME = "relay"
_ENVELOPE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic"}
_STATE_ONLY = ("timestamp", "originator_topic", "class_version")
PAGE = 1000
# Pages handed to the producer and not yet acknowledged. Two: one being acknowledged while the
# next is read and sent. More buys nothing (the producer holds back a partition while its batch
# is in flight) and widens what a failure sends again.
DEPTH = 2
YIELD_EVERY = 200  # messages built between two chances for the rest of the event loop
END_PROBE_S = 5.0
CONSUMER_STOP_S = 5.0  # reading the last record of each partition, to count what the topic holds


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def event_message(event: Any, position: int) -> dict[str, Any]:
    """A stored event as the contract's ``reserve.events`` message (from the domain event:
    the reference the fast path below must match, and its fallback)."""
    data = {k: _jsonable(v) for k, v in event.__dict__.items() if k not in _ENVELOPE_FIELDS}
    return {
        "event_id": str(event_uuid(event.originator_id, event.originator_version)),
        "type": type(event).__name__,
        "aggregate_id": str(event.originator_id),
        "position": position,
        "occurred_at": event.timestamp.isoformat(),
        "data": data,
    }


def status_message(message: dict[str, Any]) -> dict[str, Any]:
    """An ``OrderStatusChanged`` event as the contract's ``order.status`` message."""
    data = message["data"]
    return {
        "event_id": message["event_id"],
        "order_id": data["order_id"],
        "number": data["number"],
        "status": data["status"],
        "previous_status": data["previous_status"],
        "lines": data["lines"],
        "occurred_at": message["occurred_at"],
    }


def encode(value: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the bytes ``json.dumps(value, ensure_ascii=False,
    separators=(",", ":"))`` gives for these plain values, several times faster (orjson)."""
    return orjson.dumps(value)


# -- building messages from the stored state ---------------------------------------------

class _NotFast(Exception):
    """The stored state holds something only the mapper knows how to read."""


def _state_hook(d: dict[str, Any]) -> Any:
    """``json.loads`` hook: the transcoder's tagged values, as ``_jsonable`` would write the
    decoded objects (an ISO datetime, a UUID with dashes); anything else is left to the
    mapper (same test as ``JSONTranscoder._decode_obj``)."""
    if len(d) == 2 and "_type_" in d and "_data_" in d:
        kind, data = d["_type_"], d["_data_"]
        if kind == "datetime_iso" and isinstance(data, str):
            return datetime.fromisoformat(data).isoformat()
        if kind == "uuid_hex" and isinstance(data, str):
            return str(UUID(data))
        raise _NotFast(kind)
    return d


_decode_state = json.JSONDecoder(object_hook=_state_hook).decode
_plain_decode = orjson.loads


@dataclass(frozen=True, slots=True)
class Row:
    """One stored event as the relay reads it."""

    id: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes
    correlation_id: str | None


class MessageBuilder:
    """Builds ``reserve.events`` messages from stored events, straight from their state when
    the store's mapper would only have decoded it (no upcast, no compression, no cipher, only
    the standard transcodings), otherwise through the mapper."""

    def __init__(self, store: Application[Any]) -> None:
        mapper = store.mapper
        transcoder = mapper.transcoder
        self.mapper = mapper
        self.fast = (mapper.compressor is None and mapper.cipher is None
                     and isinstance(transcoder, JSONTranscoder)
                     and type(transcoder.names.get("datetime_iso")) is DatetimeAsISO
                     and type(transcoder.names.get("uuid_hex")) is UUIDAsHex)

    def message(self, row: Row) -> dict[str, Any]:
        if self.fast:
            with contextlib.suppress(_NotFast):
                return self._fast(row)
        event = self.mapper.to_domain_event(Notification(
            id=row.id, originator_id=row.originator_id,
            originator_version=row.originator_version, topic=row.topic, state=row.state))
        return event_message(event, row.id)

    @staticmethod
    def _fast(row: Row) -> dict[str, Any]:
        cls = resolve_topic(row.topic)
        try:
            text = row.state.decode("utf8")
            # Every tagged value has a "_type_" key (which cannot occur unescaped inside a
            # string): one occurrence is the timestamp's, and then nothing else needs the hook.
            only_timestamp = text.count('"_type_"') == 1
            state = _plain_decode(text) if only_timestamp else _decode_state(text)
        except (ValueError, TypeError) as e:  # let the mapper raise its own error
            raise _NotFast(str(e)) from e
        if not isinstance(state, dict) or state.pop("class_version", 1) != getattr(
                cls, "class_version", 1):
            raise _NotFast("upcast")
        occurred_at = state.pop("timestamp", None)
        if only_timestamp:
            occurred_at = _state_hook(occurred_at) if isinstance(occurred_at, dict) else None
        if not isinstance(occurred_at, str):
            raise _NotFast("timestamp")
        state.pop("originator_topic", None)
        state.pop("originator_id", None)
        state.pop("originator_version", None)
        return {
            "event_id": str(event_uuid(row.originator_id, row.originator_version)),
            "type": cls.__name__,
            "aggregate_id": str(row.originator_id),
            "position": row.id,
            "occurred_at": occurred_at,
            "data": state,
        }


# -- the relay -------------------------------------------------------------------------------

Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers


class Relay:
    def __init__(self, store: ReserveStore, pool: ConnectionPool[Any],
                 producer: AIOKafkaProducer, page: int = PAGE,
                 bootstrap_servers: str | None = None, position_every: float = 0.0) -> None:
        """``position_every``: write the position (the relay's checkpoint in ``rm_tracking``)
        at most this often, in seconds, and that long after an acknowledgement at the latest;
        0 writes it after every page. See :meth:`_write_position`."""
        self.store = store
        self.pool = pool
        self.producer = producer
        self.page = page
        self.bootstrap_servers = bootstrap_servers or producer.client._bootstrap_servers
        self.builder = MessageBuilder(store)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._partitions: dict[str, tuple[list[int], dict[bytes, int]]] = {}
        # Held while publishing and moving the position, so that a rewind decided meanwhile
        # (a check running beside the publishing) is not overwritten by a page's position.
        self._lock = asyncio.Lock()
        self._position: int | None = None  # see _position_now
        self.position_every = position_every
        self._written_at = -float("inf")  # time.monotonic() of the last write of the position
        self._unwritten = False  # _position is acknowledged but not written yet
        self._flush: asyncio.Task[None] | None = None
        recorder: Any = store.recorder
        schema = Identifier(recorder.datastore.schema)
        events = SQL("{}.{}").format(schema, Identifier(recorder.events_table_name))
        self._select = SQL(
            "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state, "
            "c.correlation_id FROM {events} e LEFT JOIN {schema}.{correlations} c "
            "ON c.originator_id = e.originator_id AND c.originator_version = e.originator_version "
            "WHERE e.notification_id > %s AND e.notification_id <= %s "
            "ORDER BY e.notification_id LIMIT %s"
        ).format(events=events, schema=schema, correlations=Identifier(CORRELATIONS_TABLE)
                 ).as_bytes(None)  # rendered once, not at every read

    # -- the position (synchronous: tools and tests) -------------------------------------------

    def position(self) -> int:
        return tracked_position(self.pool, TRACKING_NAME)

    def set_position(self, position: int) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE rm_tracking SET position = %s WHERE name = %s",
                         (position, TRACKING_NAME))
        self._position = None
        self._unwritten = False

    def published_count(self, position: int) -> int:
        """How many stored events lie at or below ``position`` (ids may have gaps)."""
        table = self.store.recorder.events_table_name  # type: ignore[attr-defined]
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT count(*) FROM {table} WHERE notification_id <= %s",  # noqa: S608 - ours
                (position,)).fetchone()
        return int(row[0]) if row else 0

    async def rewind_if_topic_lost(self) -> None:
        """A broker that lost its data (the embedded one keeps nothing across restarts) holds
        fewer messages on ``reserve.events`` than were published there: then everything stored
        is published again, same ids. End offsets never fall on a broker that kept its data
        (retention deletes from the start, not the end), so this is never a false alarm."""
        position = await asyncio.to_thread(self.position)
        if position == 0:
            return
        await self.producer.client.force_metadata_update()
        partitions = self.producer.client.cluster.partitions_for_topic(RESERVE_EVENTS) or set()
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers)
        await consumer.start()
        try:
            # not ``end_offsets`` alone: Tansu answers the start of the last record batch, which
            # undercounts by the rest of that batch and made this check republish everything
            # after any burst (a catch-up) that ended in a batch of several records
            ends = await asyncio.wait_for(
                true_end_offsets(consumer, [TopicPartition(RESERVE_EVENTS, p)
                                            for p in partitions], END_PROBE_S),
                END_PROBE_S + CONSUMER_STOP_S)
        finally:
            await _stop_without_hanging(consumer)
        on_topic = sum(ends.values())
        if on_topic >= position:  # at most ``position`` events were published: nothing lost
            return
        published = await asyncio.to_thread(self.published_count, position)
        if on_topic < published:
            log.warning("reserve.events holds %d messages but %d events were published before: "
                        "the broker lost its data; publishing the event store again",
                        on_topic, published)
            async with self._lock:
                await asyncio.to_thread(self.set_position, 0)

    # -- reading -------------------------------------------------------------------------------

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            conninfo, kwargs = pool_conninfo(self.pool)
            self._conn = await psycopg.AsyncConnection.connect(conninfo, **kwargs)
        return self._conn

    async def _sql(self, query: Any, params: Sequence[Any], *, rows: bool = True
                   ) -> list[tuple[Any, ...]]:
        """One statement on the relay's own connection (its rows unless ``rows`` is False); a
        broken connection is dropped (the next call opens another) and the error raised (the
        caller's loop backs off)."""
        conn = await self._connection()
        try:
            cur = await conn.execute(query, params, prepare=True)
            return await cur.fetchall() if rows else []
        except psycopg.OperationalError:
            await self.close()
            raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _read(self, after: int, stop: int | None) -> list[Row]:
        rows = await self._sql(self._select, (after, stop if stop is not None else 2**62,
                                              self.page))
        return [Row(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in rows]

    async def _position_now(self) -> int:
        """The relay's position: read once, then kept (the relay runs in one process only and
        is the only writer of its row; a rewind or a failure makes it read again)."""
        if self._position is None:
            rows = await self._sql("SELECT position FROM rm_tracking WHERE name = %s",
                                   (TRACKING_NAME,))
            self._position = int(rows[0][0]) if rows else 0
        return self._position

    async def _write_position(self, position: int) -> None:
        """Each page's ``acknowledged``: the position moves in memory at once (the next read
        starts there) and is written at most every ``position_every`` seconds, at the latest
        that long after this call. Live at 200 gives/s a page holds one give, and its own
        UPDATE and commit were one of the relay's two round trips per page and a commit of
        PostgreSQL's own. A crash loses at most that much of the position: the relay publishes
        those events again, with the same ids (delivery is at least once)."""
        self._position = position
        wait = self._written_at + self.position_every - time.monotonic()
        if wait <= 0:
            await self._store_position(position)
            return
        self._unwritten = True
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._flush_later(wait))

    async def _store_position(self, position: int) -> None:
        await self._sql("UPDATE rm_tracking SET position = %s WHERE name = %s",
                        (position, TRACKING_NAME), rows=False)
        self._written_at = time.monotonic()
        self._unwritten = self._position != position

    async def _flush_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        async with self._lock:  # not while a page is being published or the position rewound
            try:
                await self.flush_position()
            except Exception as e:  # the next page's acknowledgement writes it, or a restart
                log.warning("could not write the relay's position: %s", e)  # reads it again

    async def flush_position(self) -> None:
        """Writes the acknowledged position if it is not written yet (the timer; a stop)."""
        if self._unwritten and self._position is not None:
            await self._store_position(self._position)

    async def stop(self) -> None:
        """Writes what was acknowledged, then closes the connection."""
        flush, self._flush = self._flush, None
        if flush is not None:
            flush.cancel()
            with contextlib.suppress(BaseException):
                await flush
        try:
            async with self._lock:
                await self.flush_position()
        except Exception as e:
            log.warning("could not write the relay's position at its stop: %s", e)
        finally:
            await self.close()

    # -- sending -------------------------------------------------------------------------------

    async def _records(self, rows: list[Row]) -> list[Record]:
        """A page as Kafka records: ``order.status`` before ``reserve.events`` for each event.
        Lets the event loop run between slices: the HTTP API shares it."""
        out: list[Record] = []
        for n, row in enumerate(rows, 1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            message = self.builder.message(row)
            headers = [(HEADER, row.correlation_id.encode())] if row.correlation_id else []
            if message["type"] == "OrderStatusChanged":
                status = status_message(message)
                out.append((ORDER_STATUS, status["order_id"].encode(), encode(status), headers))
            out.append((RESERVE_EVENTS, message["aggregate_id"].encode(), encode(message),
                        headers))
        return out

    async def _partitioner(self, topic: str) -> Callable[[bytes], int]:
        """The partition ``producer.send`` would choose for a key (its own partitioner over
        the topic's partitions now), remembered per key while the partitions stay the same."""
        partitions = sorted(await self.producer.partitions_for(topic))
        cached = self._partitions.get(topic)
        if cached is None or cached[0] != partitions or len(cached[1]) > 100_000:
            cached = (partitions, {})
            self._partitions[topic] = cached
        memo = cached[1]
        producer: Any = self.producer
        choose = producer._partitioner
        metadata = producer._metadata

        def partition(key: bytes) -> int:
            p = memo.get(key)
            if p is None:
                p = memo[key] = choose(key, list(metadata.partitions_for_topic(topic)),
                                       list(metadata.available_partitions_for_topic(topic)))
            return int(p)

        return partition

    async def _send(self, records: list[Record]) -> list[Awaitable[Any]]:
        """Hands the records to the producer in batches per partition, in order; returns what
        to await for their acknowledgement."""
        partitioners = {t: await self._partitioner(t) for t in {r[0] for r in records}}
        open_batches: dict[tuple[str, int], Any] = {}
        acks: list[Awaitable[Any]] = []
        for topic, key, value, headers in records:
            tp = (topic, partitioners[topic](key))
            batch = open_batches.get(tp)
            if batch is None:
                batch = open_batches[tp] = self.producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                acks.append(await self._submit(batch, tp))
                batch = open_batches[tp] = self.producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    raise ValueError(f"a message of {len(value)} bytes fits no batch")
        for tp, batch in open_batches.items():
            acks.append(await self._submit(batch, tp))
        return acks

    async def _submit(self, batch: Any, tp: tuple[str, int]) -> Awaitable[Any]:
        batch.close()  # complete: no linger, the sender takes it at once
        ack: Awaitable[Any] = await self.producer.send_batch(batch, tp[0], partition=tp[1])
        return ack

    async def _publish(self, rows: list[Row]) -> asyncio.Future[Any]:
        """Hands a page to the producer; returns what completes when the broker has
        acknowledged all of it."""
        acks = await self._send(await self._records(rows))
        ids = {r.id: r.correlation_id for r in rows if r.correlation_id}
        log_correlated(log, "published", rows, ids)
        return asyncio.gather(*acks)

    async def _pump(self, after: int, stop: int | None,
                    acknowledged: Callable[[int], Awaitable[None]] | None,
                    wake: asyncio.Event | None = None) -> int:
        """Publishes events after ``after`` (up to ``stop``), up to ``DEPTH`` pages in flight;
        ``acknowledged(last id)`` after each page, in order. While pages are in flight and
        nothing more is stored it waits for the oldest acknowledgement or for ``wake`` (set
        when events are stored), whichever comes first: new events never wait for the
        acknowledgement of older ones. Returns how many it published once all is
        acknowledged and nothing more is stored."""
        in_flight: list[tuple[asyncio.Future[Any], int]] = []
        ahead: asyncio.Future[list[Row]] | None = None  # the next page, read meanwhile
        sent = 0
        # The last read found less than a page: it reached the end of the log as it was then,
        # and ``wake`` (cleared before that read) says whether anything was stored since. Not
        # reading again until it does saves two of a live cycle's four queries. (A page is read
        # ahead only after a full one, so at the end none is.)
        at_end = False

        def read() -> asyncio.Future[list[Row]]:
            if wake is not None:
                wake.clear()  # before reading: what is stored from now on sets it again
            return asyncio.ensure_future(self._read(after, stop))

        try:
            while True:
                if at_end and wake is not None and not wake.is_set():
                    rows = []  # nothing stored since the read that reached the end
                else:
                    rows = await (ahead or read())
                    at_end = len(rows) < self.page
                ahead = None
                if rows:
                    after = rows[-1].id
                    if not at_end:  # more is likely stored: read it meanwhile
                        ahead = read()
                    in_flight.append((await self._publish(rows), rows[-1].id))
                    sent += len(rows)
                    if len(in_flight) < DEPTH:
                        continue
                elif not in_flight:
                    return sent
                elif wake is not None and not in_flight[0][0].done():
                    woken = asyncio.ensure_future(wake.wait())
                    try:
                        await asyncio.wait((in_flight[0][0], woken),
                                           return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        woken.cancel()
                    if not in_flight[0][0].done():
                        continue  # woken: read what was stored
                acks, last = in_flight.pop(0)
                await acks
                if acknowledged is not None:
                    await acknowledged(last)
        finally:
            for acks, _ in in_flight:  # after a failure: nobody waits for these any more
                acks.add_done_callback(_retrieve)
            if ahead is not None:  # a read cut short leaves the connection in doubt
                ahead.cancel()
                ahead.add_done_callback(_retrieve)
                await self.close()

    async def catch_up(self, wake: asyncio.Event | None = None) -> int:
        """Publishes everything stored after the relay's position, moving the position as
        pages are acknowledged (written as ``position_every`` says); returns how many events it
        published (0: caught up)."""
        async with self._lock:
            try:
                return await self._pump(await self._position_now(), None, self._write_position,
                                        wake)
            except BaseException:
                self._position = None  # read it again: what was written is what counts
                self._unwritten = False
                raise

    async def run_once(self) -> int:
        """Publishes the next page alone; returns how many events it published (0: caught up)."""
        async with self._lock:
            rows = await self._read(await self._position_now(), None)
            if rows:
                await (await self._publish(rows))
                await self._write_position(rows[-1].id)
            return len(rows)

    async def republish(self, start: int, stop: int | None = None) -> int:
        """Re-emits stored events with positions in [start, stop] (same ids as the first time)."""
        return await self._pump(start - 1, stop, None)


def pool_conninfo(pool: ConnectionPool[Any]) -> tuple[str, dict[str, Any]]:
    """Where ``pool`` connects, to open a connection of one's own there (autocommit)."""
    conninfo = pool.conninfo() if callable(pool.conninfo) else pool.conninfo
    kwargs = pool.kwargs() if callable(pool.kwargs) else pool.kwargs
    return conninfo, {**(kwargs or {}), "autocommit": True}


async def _stop_without_hanging(consumer: AIOKafkaConsumer) -> None:
    """``consumer.stop()``, given up on after ``CONSUMER_STOP_S``: after a broker restart a
    consumer that fetched (the probe above) was seen never to finish stopping (its fetch task
    stuck while cancelled), which held the relay's step, and so the relay, for good (fault
    suite, seed 101075)."""
    stopping = asyncio.ensure_future(consumer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=CONSUMER_STOP_S)
    if not done:
        log.warning("a consumer of the relay's loss check did not stop in %.0f s; left behind",
                    CONSUMER_STOP_S)
        stopping.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


# -- waking up when events are stored ---------------------------------------------------

class StoreListener:
    """LISTENs on the event store's channel (the recorder NOTIFYs it in every transaction that
    stores events, delivered at commit) on a connection of its own, and sets ``event``. While
    it cannot listen (PostgreSQL down) ``listening`` is False and callers poll."""

    def __init__(self, pool: ConnectionPool[Any], channel: str, retry_s: float = 1.0) -> None:
        self.conninfo, self.kwargs = pool_conninfo(pool)
        self.channel = channel
        self.retry_s = retry_s
        self.event = asyncio.Event()
        self.listening = False

    async def run(self) -> None:
        failing = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.conninfo, **self.kwargs)
                async with conn:
                    await conn.execute(SQL("LISTEN {}").format(Identifier(self.channel)))
                    self.listening = True
                    self.event.set()  # whatever was stored while nobody listened
                    if failing:
                        log.info("listening on %s again", self.channel)
                        failing = False
                    async for _ in conn.notifies():
                        self.event.set()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not failing:
                    log.warning("cannot listen on %s, polling meanwhile: %s: %s",
                                self.channel, type(e).__name__, e)
                failing = True
            finally:
                self.listening = False
            await asyncio.sleep(self.retry_s)

    async def wait(self, seconds: float) -> None:
        """Until an event is stored, or ``seconds`` pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)
