"""The live projector is woken by the event store's NOTIFY: idle it does not poll, and what is
stored reaches the views without waiting for its fallback poll."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from handlers.wire import parse_erp_body
from services import runtime
from services.runtime import Infrastructure, Service
from tests.support import SKU, WAREHOUSE, make_settings, seed_facts, uid

pytestmark = pytest.mark.integration


async def _until(condition: Any, within: float) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while not await asyncio.to_thread(condition):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


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
        assert await _until(lambda: runs >= 1, 10), "the projector never ran"
        await asyncio.sleep(0.5)  # its first runs (and the listener's first wake-up) are over
        idle_from = runs
        await asyncio.sleep(1.0)
        assert runs - idle_from <= 1  # polling every 20 ms, as before, made ~50

        owner = uid("o-")
        await asyncio.to_thread(core.erp.ingest, parse_erp_body(seed_facts(owner, uid("r-"))))
        assert await _until(lambda: core.views.order(owner) is not None, 10), \
            "the stored events did not reach the views without a poll"
        assert core.views.stock(WAREHOUSE, SKU)["on_hand"] >= 10
    finally:
        await service.stop_background()
        service.close()
