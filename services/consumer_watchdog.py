"""Restarts a Kafka subscriber that stopped making progress (docs/reliability.md, "found").

Twice the fault-injection suite saw the ``reserve.commands`` consumers idle for over a minute
after a broker restart; a focused reproduction (tests/integration/test_broker_restart.py) did
not reproduce it, so the cause is not known. aiokafka's ``getone()`` waits without a deadline,
and it raises the coordinator's failure only when called, so a consumer whose background
routines ended, or which stays behind without moving, would otherwise wait forever. This
watchdog notices both and restarts the subscriber (a new aiokafka consumer, a new group join).
It also rewinds a partition positioned past the log's end, which Tansu leaves waiting where
Apache Kafka would reset it, and restarts a subscriber whose group join never completes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from faststream.kafka import KafkaBroker

log = logging.getLogger(__name__)

CHECK_S = 5.0
STALL_S = 30.0
PROBE_TIMEOUT_S = 10.0


def _running_consumer(subscriber: Any) -> Any | None:
    """The aiokafka consumer of a running subscriber; None while it is stopped or starting."""
    consumer = getattr(subscriber, "consumer", None)
    return consumer if consumer is not None and getattr(subscriber, "running", False) else None


def _dead_routine(consumer: Any) -> str | None:
    """The name of an aiokafka background routine that has ended, if any."""
    coordinator = getattr(consumer, "_coordinator", None)
    fetcher = getattr(consumer, "_fetcher", None)
    for name, task in (("coordinator", getattr(coordinator, "_coordination_task", None)),
                       ("fetcher", getattr(fetcher, "_fetch_task", None))):
        if isinstance(task, asyncio.Task) and task.done():
            return name
    return None


async def _beyond_log_end(consumer: Any) -> list[Any]:
    """Assigned partitions whose position lies past the broker's high watermark (as its last
    fetch answer gave it; ``end_offsets`` undercounts on Tansu, the high watermark does not).

    That is a log the broker lost under the consumer: a broker restarted empty, and the
    position kept from before (or committed to the new broker from before). Apache Kafka
    answers such a fetch with OFFSET_OUT_OF_RANGE and the consumer resets to the earliest
    offset; Tansu answers with no records, so the consumer would wait there, then skip every
    record below its position once the new log grew past it."""
    beyond = []
    for tp in list(consumer.assignment()):
        try:
            high = consumer.highwater(tp)
            if high is not None and await consumer.position(tp) > high:
                beyond.append(tp)
        except Exception as e:  # reassigned meanwhile: the next check sees the new state
            log.debug("consumer watchdog: no position for %s: %s", tp, e)
    return beyond


def _joining(consumer: Any) -> bool:
    """Whether the consumer holds no partitions because its group (re)join has not completed
    (a member that joined and was given none is not joining)."""
    try:
        in_progress = bool(consumer._subscription.reassignment_in_progress)
    except AttributeError:  # not subscribed to topics (a manual assignment, or stopped)
        return False
    return in_progress and not consumer.assignment()


@dataclass
class _Progress:
    positions: dict[Any, int] = field(default_factory=dict)
    since: float = field(default_factory=time.monotonic)


async def _lagging_positions(consumer: Any) -> dict[Any, int] | None:
    """Positions of assigned partitions that have messages left; None when all caught up."""
    assigned = list(consumer.assignment())
    if not assigned:
        return None
    ends = await consumer.end_offsets(assigned)
    positions = {tp: await consumer.position(tp) for tp in assigned}
    lagging = {tp: p for tp, p in positions.items() if ends.get(tp, 0) > p}
    return lagging or None


class ConsumerWatchdog:
    """``run()`` checks every ``CHECK_S`` each subscriber of ``broker``. Partitions positioned
    past the log's end are read again from the beginning. A subscriber is restarted when its
    consumer's background routine ended, no consume task runs, its group join has not
    completed for ``stall_s`` (no partitions meanwhile), or, with no message in its handler,
    it has assigned partitions with messages left and no position moved (or could be read)
    for ``stall_s``."""

    def __init__(self, broker: KafkaBroker, *, stall_s: float = STALL_S,
                 check_s: float = CHECK_S) -> None:
        self.broker = broker
        self.stall_s = stall_s
        self.check_s = check_s
        self.restarts = 0
        self.rewinds = 0
        self._progress: dict[int, _Progress] = {}
        self._joining_since: dict[int, float] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            for subscriber in list(self.broker.subscribers):
                try:
                    await self._rewind_if_beyond_log_end(subscriber)
                    reason = await self._stalled(subscriber)
                    if reason is not None:
                        await self._restart(subscriber, reason)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("consumer watchdog: check failed: %s: %s", type(e).__name__, e)

    async def _rewind_if_beyond_log_end(self, subscriber: Any) -> None:
        """Does what Kafka's ``auto_offset_reset="earliest"`` does on an offset out of range:
        partitions positioned past the log's end start again from its beginning (a record
        handled twice is a duplicate, which every handler here recognises by its id)."""
        if (consumer := _running_consumer(subscriber)) is None:
            return
        beyond = await asyncio.wait_for(_beyond_log_end(consumer), PROBE_TIMEOUT_S)
        if beyond:
            log.warning("consumer watchdog: %s positioned past the log's end (the broker lost "
                        "its log); reading them from the beginning",
                        ", ".join(f"{tp.topic}/{tp.partition}" for tp in beyond))
            await consumer.seek_to_beginning(*beyond)
            self.rewinds += 1

    async def _stalled(self, subscriber: Any) -> str | None:
        if (consumer := _running_consumer(subscriber)) is None:
            return None
        if (dead := _dead_routine(consumer)) is not None:
            return f"aiokafka's {dead} routine ended"
        tasks = getattr(subscriber, "tasks", None) or []
        if all(t.done() for t in tasks):
            return "it has no consume task running"
        now = time.monotonic()
        if _joining(consumer):
            # A consumer whose re-join after an empty broker restart never completes holds no
            # partitions, so nothing looks behind below: the join itself is timed here.
            since = self._joining_since.setdefault(id(subscriber), now)
            if now - since >= self.stall_s:
                return f"its group join has not completed for {now - since:.0f} s"
            return None
        self._joining_since.pop(id(subscriber), None)
        progress = self._progress.setdefault(id(subscriber), _Progress())
        try:
            lagging = await asyncio.wait_for(_lagging_positions(consumer), PROBE_TIMEOUT_S)
        except Exception as e:  # a timeout, a broker away: no progress either
            log.debug("consumer watchdog: probe failed: %s", e)
            lagging = {"unknown": -1}
        now = time.monotonic()
        in_flight = getattr(getattr(subscriber, "lock", None), "qsize", 0)
        if lagging is None or lagging != progress.positions or in_flight:
            # caught up, moving, or a handler still at work (its own timeouts apply)
            self._progress[id(subscriber)] = _Progress(lagging or {}, now)
            return None
        if now - progress.since >= self.stall_s:
            return f"no progress for {now - progress.since:.0f} s with messages left"
        return None

    async def _restart(self, subscriber: Any, reason: str) -> None:
        log.warning("consumer watchdog: restarting the %s subscriber: %s",
                    ",".join(subscriber.topic_names), reason)
        self._progress.pop(id(subscriber), None)
        self._joining_since.pop(id(subscriber), None)
        await subscriber.stop()
        await subscriber.start()
        self.restarts += 1
