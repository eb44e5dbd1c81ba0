"""The relay: publishes every stored event to ``reserve.events`` from the event store's own log.

Publication happens after the commit and from the log, never beside the write, so nothing is
published that was not stored and nothing stored goes unpublished. The position published up
to is tracked in PostgreSQL after the broker has acknowledged each page: delivery is at least
once, and a repeat carries the same ``event_id``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from psycopg_pool import ConnectionPool

from domain.ids import event_uuid
from projections.projector import tracked_position
from services.eventstore import ReserveStore
from services.topics import ORDER_STATUS, RESERVE_EVENTS
from services.tracing import HEADER, correlation_ids, log_correlated

log = logging.getLogger(__name__)

TRACKING_NAME = "relay"
_ENVELOPE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic"}


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
    """A stored event as the contract's ``reserve.events`` message."""
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
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class Relay:
    def __init__(self, store: ReserveStore, pool: ConnectionPool[Any],
                 producer: AIOKafkaProducer, page: int = 500,
                 bootstrap_servers: str | None = None) -> None:
        self.store = store
        self.pool = pool
        self.producer = producer
        self.page = page
        self.bootstrap_servers = bootstrap_servers or producer.client._bootstrap_servers

    def position(self) -> int:
        return tracked_position(self.pool, TRACKING_NAME)

    def set_position(self, position: int) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE rm_tracking SET position = %s WHERE name = %s",
                         (position, TRACKING_NAME))

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
            ends = await consumer.end_offsets([TopicPartition(RESERVE_EVENTS, p)
                                               for p in partitions])
        finally:
            await consumer.stop()
        on_topic = sum(ends.values())
        if on_topic >= position:  # at most ``position`` events were published: nothing lost
            return
        published = await asyncio.to_thread(self.published_count, position)
        if on_topic < published:
            log.warning("reserve.events holds %d messages but %d events were published before: "
                        "the broker lost its data; publishing the event store again",
                        on_topic, published)
            await asyncio.to_thread(self.set_position, 0)

    async def _publish(self, notifications: list[Any]) -> None:
        """Sends a page, ``order.status`` before ``reserve.events`` for each event, and waits
        until the broker acknowledged all of it."""
        pending = []
        cids = await asyncio.to_thread(self._correlation_ids, notifications)
        for notification in notifications:
            message = event_message(self.store.mapper.to_domain_event(notification),
                                    notification.id)
            cid = cids.get(notification.id)
            headers = [(HEADER, cid.encode())] if cid else None
            if message["type"] == "OrderStatusChanged":
                status = status_message(message)
                pending.append(await self.producer.send(
                    ORDER_STATUS, encode(status), key=status["order_id"].encode(),
                    headers=headers))
            pending.append(await self.producer.send(
                RESERVE_EVENTS, encode(message), key=message["aggregate_id"].encode(),
                headers=headers))
        await asyncio.gather(*pending)
        log_correlated(log, "published", notifications, cids)

    def _correlation_ids(self, notifications: list[Any]) -> dict[int, str]:
        with self.pool.connection() as conn:
            return correlation_ids(conn, notifications)

    async def _page(self, after: int, stop: int | None = None) -> list[Any]:
        return list(await asyncio.to_thread(
            self.store.recorder.select_notifications, after, self.page, stop, (),
            inclusive_of_start=False,
        ))

    async def run_once(self) -> int:
        """Publishes the next page; returns how many events it published (0: caught up)."""
        notifications = await self._page(await asyncio.to_thread(self.position))
        if notifications:
            await self._publish(notifications)
            await asyncio.to_thread(self.set_position, notifications[-1].id)
        return len(notifications)

    async def republish(self, start: int, stop: int | None = None) -> int:
        """Re-emits stored events with positions in [start, stop] (same ids as the first time)."""
        sent, position = 0, start - 1
        while notifications := await self._page(position, stop):
            await self._publish(notifications)
            sent += len(notifications)
            position = notifications[-1].id
        return sent
