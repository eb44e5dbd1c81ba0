"""``loop_forever``: how a background role's step is repeated."""

from __future__ import annotations

import asyncio
import itertools

from services.runtime import loop_forever


async def _steps_of(step_result: int, wait_returns_at_once: bool, min_interval: float,
                    seconds: float = 0.3) -> list[float]:
    """When each step started, over ``seconds`` of ``loop_forever``."""
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def step() -> int:
        starts.append(loop.time())
        await asyncio.sleep(0)  # a real step awaits its database
        return step_result

    async def woken(idle: float) -> None:  # as if every commit NOTIFYed
        await asyncio.sleep(0 if wait_returns_at_once else idle)

    task = asyncio.create_task(loop_forever("test", step, 10.0, woken, min_interval))
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return starts


async def test_a_step_woken_at_once_waits_out_the_min_interval() -> None:
    starts = await _steps_of(0, wait_returns_at_once=True, min_interval=0.05)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert 3 <= len(starts) <= 7
    assert min(gaps) >= 0.05 - 0.002


async def test_without_a_min_interval_a_wake_up_runs_the_step_at_once() -> None:
    assert len(await _steps_of(0, wait_returns_at_once=True, min_interval=0.0)) > 50


async def test_a_step_with_work_runs_again_at_once_whatever_the_min_interval() -> None:
    assert len(await _steps_of(1, wait_returns_at_once=False, min_interval=0.05)) > 50


async def test_an_idle_step_waits_for_its_wake_up() -> None:
    assert len(await _steps_of(0, wait_returns_at_once=False, min_interval=0.0)) == 1
