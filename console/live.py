"""Live updates: server-sent events from the same process.

Each connection polls one small query every ``POLL_S`` (the views' position and the manager's
unread count) and sends a ``pulse`` when either changed; the page then refetches itself and
swaps its live regions. A stream ends after ``LIFETIME_S`` and the browser reconnects on its
own (``retry``): uvicorn waits for open responses before it stops, so a bounded stream keeps
Ctrl-C prompt while a browser is still watching."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

log = logging.getLogger(__name__)

POLL_S = 0.3
LIFETIME_S = 5.0
RETRY_MS = 500


def event_stream(request: Request, pulse: Callable[[], tuple[int, int]]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        last: tuple[int, int] | None = None
        ends = time.monotonic() + LIFETIME_S
        while time.monotonic() < ends and not await request.is_disconnected():
            try:
                now = await run_in_threadpool(pulse)
            except Exception as e:  # e.g. the database is unreachable: end; the browser retries
                log.warning("console live updates paused: %s", type(e).__name__)
                return
            if now != last:
                last = now
                data = json.dumps({"position": now[0], "unread": now[1]})
                yield f"event: pulse\ndata: {data}\n\n"
            await asyncio.sleep(POLL_S)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
