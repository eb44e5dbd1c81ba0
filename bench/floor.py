"""The floor under a give: the least an HTTP command with a durable effect costs on this
machine, measured the way the gives are (the harness's client, 32 clients, closed loop).

A FastAPI app in a child process, on uvicorn with uvloop and httptools as ``reserves serve``
runs, whose one POST route does nothing but store one row in PostgreSQL and answer 200:

- ``none``: not even that: it answers at once (the HTTP floor, the harness included);
- ``commit``: an INSERT and a COMMIT per request, on a pool of connections;
- ``group``: the ideal group commit: every request waiting when the writer is free goes
  into one multi-row INSERT and one COMMIT, and each gets its own answer.

No authentication, no aggregates, no events, no relay, no projections: every give does all of
this and more, so the product's gives cannot go faster than these figures. The bench reports
them beside ``give_throughput`` (``give_floor_{none,commit,group}_throughput``); run alone:
``python -m bench.floor [--database-url URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.baselines import pg_single_row_commits
from bench.cpu import CpuMeter, describe, ms_per, postmaster_pid
from bench.infra import PYTHON, BenchInfra
from bench.product import closed_loop, http_client, wait_answering
from bench.stats import percentile
from services.embedded import free_port

_TABLE = ("CREATE TABLE IF NOT EXISTS bench_floor "
          "(id bigserial PRIMARY KEY, payload text NOT NULL)")
_PAYLOAD = "x" * 200
POOL_SIZE = 8
MODES = ("none", "commit", "group")


def create_app(database_url: str, mode: str) -> Any:
    """The floor's app (imported in the child process only)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(database_url, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False)
    queue: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()
    tasks: list[asyncio.Task[None]] = []

    async def writer() -> None:
        # one connection, as the service's group writer: all waiting requests in one commit
        async with pool.connection() as conn:
            while True:
                group = [await queue.get()]
                while not queue.empty():
                    group.append(queue.get_nowait())
                try:
                    async with conn.cursor() as cur:
                        await cur.executemany("INSERT INTO bench_floor (payload) VALUES (%s)",
                                              [(_PAYLOAD,)] * len(group))
                    await conn.commit()
                except Exception as e:  # every waiter gets the failure; the writer goes on
                    with contextlib.suppress(Exception):
                        await conn.rollback()
                    for waiter in group:
                        waiter.set_exception(e)
                    continue
                for waiter in group:
                    waiter.set_result(None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        await pool.open(wait=True)
        async with pool.connection() as conn:
            await conn.execute(_TABLE)
        if mode == "group":
            tasks.append(asyncio.create_task(writer()))
        yield
        for task in tasks:
            task.cancel()
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/up", response_model=None)
    async def up() -> Any:
        return JSONResponse({"up": True})

    @app.post("/floor/{key}", response_model=None)
    async def store(key: str) -> Any:
        if mode == "none":
            pass
        elif mode == "commit":
            async with pool.connection() as conn:
                await conn.execute("INSERT INTO bench_floor (payload) VALUES (%s)", (_PAYLOAD,))
        else:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            queue.put_nowait(done)
            await done
        return JSONResponse({"stored": key})

    return app


@dataclass
class FloorRun:
    mode: str
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per request: app, postgres, harness

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


async def _drive(base_url: str, mode: str, concurrency: int, seconds: float) -> FloorRun:
    run = FloorRun(mode)
    async with http_client(base_url, concurrency) as client:
        sent = [0] * concurrency

        async def store(n: int) -> bool:
            sent[n] += 1
            t0 = time.perf_counter()
            try:
                async with client.post(f"/floor/{n}-{sent[n]}", data=b"{}",
                                       headers={"Content-Type": "application/json"}
                                       ) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                run.ok += 1
                run.latencies.append(time.perf_counter() - t0)
            else:
                run.failed += 1
            return True

        run.seconds = await closed_loop(concurrency, seconds, store)
    return run


def floor(database_url: str, mode: str, concurrency: int = 32, seconds: float = 10.0,
          warmup: float = 2.0) -> FloorRun:
    """Start the floor app in ``mode``, warm it up, then drive it for ``seconds``."""
    port = free_port()
    env = {**os.environ, "BENCH_FLOOR_DATABASE_URL": database_url, "BENCH_FLOOR_MODE": mode}
    proc = subprocess.Popen(  # noqa: S603
        [PYTHON, "-m", "uvicorn", "bench.floor:app_from_env", "--factory", "--host",
         "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
         "--log-level", "warning"], env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_answering(f"{base_url}/up", proc, 60.0, "the floor app")
        if warmup > 0:
            asyncio.run(_drive(base_url, mode, concurrency, warmup))
        meter = CpuMeter({"app": proc.pid, "postgres": postmaster_pid(database_url)})
        before = meter.sample()
        run = asyncio.run(_drive(base_url, mode, concurrency, seconds))
        run.cpu_ms = ms_per(before, meter.sample(), run.ok)
        return run
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def app_from_env() -> Any:
    """uvicorn's ``--factory`` entry in the child process."""
    return create_app(os.environ["BENCH_FLOOR_DATABASE_URL"], os.environ["BENCH_FLOOR_MODE"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""),
                        help="default: DATABASE_URL, else an embedded PostgreSQL")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    infra = None
    if not args.database_url:
        infra = BenchInfra.start()
        args.database_url = infra.fresh_database("floor")
    try:
        report(args.database_url, args.concurrency, args.seconds)
    finally:
        if infra is not None:
            infra.stop()
    return 0


def report(database_url: str, concurrency: int, seconds: float) -> None:
    baseline = pg_single_row_commits(database_url, 3.0)
    print(f"baseline: {baseline:,.0f} single-row commits/s, one connection")
    for mode in MODES:
        run = floor(database_url, mode, concurrency, seconds)
        print(f"{mode}: {run.per_second:,.0f} requests/s ({run.per_second / baseline:.3f} of the "
              f"baseline), p50 {percentile(run.latencies, 50) * 1000:.1f} ms, p99 "
              f"{percentile(run.latencies, 99) * 1000:.1f} ms, {run.failed} failed; CPU per "
              f"request (ms): {describe(run.cpu_ms)}")


if __name__ == "__main__":
    sys.exit(main())
