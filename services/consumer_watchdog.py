"""Restarts a Kafka subscriber that stopped making progress (docs/reliability.md, "found").

Twice the fault-injection suite saw the ``reserve.commands`` consumers idle for over a minute
after a broker restart; a focused reproduction (tests/integration/test_broker_restart.py) did
not reproduce it, so the cause is not known. aiokafka's ``getone()`` waits without a deadline,
and it raises the coordinator's failure only when called, so a consumer whose background
routines ended, or which stays behind without moving, would otherwise wait forever. This
watchdog notices both and restarts the subscriber (a new aiokafka consumer, a new group join).
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


def _dead_routine(consumer: Any) -> str | None:
    """The name of an aiokafka background routine that has ended, if any."""
    coordinator = getattr(consumer, "_coordinator", None)
    fetcher = getattr(consumer, "_fetcher", None)
    for name, task in (("coordinator", getattr(coordinator, "_coordination_task", None)),
                       ("fetcher", getattr(fetcher, "_fetch_task", None))):
        if isinstance(task, asyncio.Task) and task.done():
            return name
    return None


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
    """``run()`` checks every ``CHECK_S`` each subscriber of ``broker``; a subscriber is
    restarted when its consumer's background routine ended, no consume task runs, or, with no
    message in its handler, it has assigned partitions with messages left and no position moved
    (or could be read) for ``stall_s``."""

    def __init__(self, broker: KafkaBroker, *, stall_s: float = STALL_S,
                 check_s: float = CHECK_S) -> None:
        self.broker = broker
        self.stall_s = stall_s
        self.check_s = check_s
        self.restarts = 0
        self._progress: dict[int, _Progress] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            for subscriber in list(self.broker.subscribers):
                try:
                    reason = await self._stalled(subscriber)
                    if reason is not None:
                        await self._restart(subscriber, reason)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("consumer watchdog: check failed: %s: %s", type(e).__name__, e)

    async def _stalled(self, subscriber: Any) -> str | None:
        consumer = getattr(subscriber, "consumer", None)
        if consumer is None or not getattr(subscriber, "running", False):
            return None
        if (dead := _dead_routine(consumer)) is not None:
            return f"aiokafka's {dead} routine ended"
        tasks = getattr(subscriber, "tasks", None) or []
        if all(t.done() for t in tasks):
            return "it has no consume task running"
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
        await subscriber.stop()
        await subscriber.start()
        self.restarts += 1
