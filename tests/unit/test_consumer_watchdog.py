"""The consumer watchdog's judgement of a subscriber whose group join never completes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.consumer_watchdog import ConsumerWatchdog


@dataclass
class _State:
    reassignment_in_progress: bool


@dataclass
class _Consumer:
    joining: bool
    partitions: set[Any] = field(default_factory=set)

    @property
    def _subscription(self) -> _State:
        return _State(self.joining)

    def assignment(self) -> set[Any]:
        return self.partitions

    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return dict.fromkeys(tps, 0)

    async def position(self, tp: Any) -> int:
        return 0


@dataclass
class _Subscriber:
    consumer: _Consumer
    tasks: list[asyncio.Task[None]]
    running: bool = True
    topic_names: tuple[str, ...] = ("reserve.commands",)


@pytest.fixture
async def consuming() -> AsyncIterator[list[asyncio.Task[None]]]:
    async def consume() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(consume())  # a consume task that is still running
    yield [task]
    task.cancel()


def _watchdog(stall_s: float) -> ConsumerWatchdog:
    return ConsumerWatchdog(None, stall_s=stall_s)  # type: ignore[arg-type]  # _stalled only


async def test_a_join_that_never_completes_is_a_stall(
        consuming: list[asyncio.Task[None]]) -> None:
    subscriber = _Subscriber(_Consumer(joining=True), consuming)
    reason = await _watchdog(stall_s=0.0)._stalled(subscriber)
    assert reason is not None and "group join has not completed" in reason


async def test_a_join_younger_than_the_stall_time_is_left_alone(
        consuming: list[asyncio.Task[None]]) -> None:
    watchdog = _watchdog(stall_s=60.0)
    subscriber = _Subscriber(_Consumer(joining=True), consuming)
    assert await watchdog._stalled(subscriber) is None
    assert await watchdog._stalled(subscriber) is None


async def test_a_completed_join_starts_the_clock_again(
        consuming: list[asyncio.Task[None]]) -> None:
    watchdog = _watchdog(stall_s=0.2)
    consumer = _Consumer(joining=True)
    subscriber = _Subscriber(consumer, consuming)
    assert await watchdog._stalled(subscriber) is None  # the clock starts here
    await asyncio.sleep(0.3)  # older than the stall time now (time itself is what is tested)
    consumer.joining = False  # joined, and given no partitions: a member idle by design
    assert await watchdog._stalled(subscriber) is None
    consumer.joining = True
    assert await watchdog._stalled(subscriber) is None  # a new join, a new clock


async def test_a_member_given_no_partitions_is_not_restarted(
        consuming: list[asyncio.Task[None]]) -> None:
    subscriber = _Subscriber(_Consumer(joining=False), consuming)
    assert await _watchdog(stall_s=0.0)._stalled(subscriber) is None
