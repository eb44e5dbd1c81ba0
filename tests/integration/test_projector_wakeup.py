"""The live projector is woken by the event store's NOTIFY: idle it does not poll, and what is
stored reaches the views without waiting for its fallback poll."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from handlers.wire import parse_erp_body
from projections.projector import PAGE
from services import runtime
from services.runtime import Infrastructure, Service
from tests.support import SKU, WAREHOUSE, make_settings, seed_facts, uid, wait_for

pytestmark = pytest.mark.integration


async def test_the_projector_waits_for_a_notify_not_a_poll(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "FALLBACK_POLL_S", 60.0)  # no fallback poll within the test
    service = await asyncio.to_thread(Service, make_settings(tmp_path, database_url),
                                      Infrastructure(database_url, ""),
                                      frozenset({"projections"}))
    core = service.core
    runs = 0
    run_once = core.projector.run_once

    def counted() -> int:
        nonlocal runs
        runs += 1
        return run_once()

    monkeypatch.setattr(core.projector, "run_once", counted)
    try:
        await service.start_background()
        await asyncio.to_thread(wait_for, lambda: runs >= 1, 10, what="the projector's first run")
        await asyncio.sleep(0.5)  # its first runs (and the listener's first wake-up) are over
        idle_from = runs
        await asyncio.sleep(1.0)
        assert runs - idle_from <= 1  # polling every 20 ms, as before, made ~50

        owner = uid("o-")
        await asyncio.to_thread(core.erp.ingest, parse_erp_body(seed_facts(owner, uid("r-"))))
        await asyncio.to_thread(wait_for, lambda: core.views.order(owner), 10,
                                what="the stored events in the views, without a poll")
        assert core.views.stock(WAREHOUSE, SKU)["on_hand"] >= 10
    finally:
        await service.stop_background()
        service.close()


@pytest.mark.parametrize(("read", "runs_in_a_second"), [(5, (2, 6)), (PAGE, (50, 10**9))])
async def test_a_page_that_is_not_full_waits_for_the_min_interval(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        read: int, runs_in_a_second: tuple[int, int]) -> None:
    """Under a steady load each run finds what the last one left (a give or two): it waits
    for the min interval instead of running back to back; a full page (behind) runs at once."""
    monkeypatch.setattr(runtime, "FALLBACK_POLL_S", 60.0)
    monkeypatch.setattr(runtime, "PROJECTOR_MIN_INTERVAL_S", 0.25)
    service = await asyncio.to_thread(Service, make_settings(tmp_path, database_url),
                                      Infrastructure(database_url, ""),
                                      frozenset({"projections"}))
    core = service.core
    runs = 0

    def always_more() -> int:  # as if every commit had NOTIFYed and left events
        nonlocal runs
        runs += 1
        return read

    monkeypatch.setattr(core.projector, "run_once", always_more)
    monkeypatch.setattr(runtime, "_woken_by", lambda listener: lambda idle: asyncio.sleep(0))
    try:
        await service.start_background()
        await asyncio.to_thread(wait_for, lambda: runs >= 1, 10, what="the projector's first run")
        first = runs
        await asyncio.sleep(1.0)
        low, high = runs_in_a_second
        assert low <= runs - first <= high
    finally:
        await service.stop_background()
        service.close()
