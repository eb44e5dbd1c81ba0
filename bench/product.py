"""Driving the product the way its users do: a real ``reserves serve`` over HTTP and Kafka,
and ``reserves replay`` as the operator runs it, in a child process whose peak RSS is read."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.baselines import FETCH_MAX_WAIT_MS
from bench.infra import PYTHON
from bench.seed import OWNER, REQUESTER, WAREHOUSE, Slot
from services.topics import ERP_EVENTS, ORDER_STATUS

EVENTS_TABLE = "reserves_events"


def wait_answering(url: str, proc: subprocess.Popen[bytes], timeout: float, what: str,
                   output: Callable[[], str] = lambda: "") -> None:
    """Poll ``url`` until it answers 200; raise if ``proc`` exits first (with ``output()``)
    or ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{output()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not answer {url} in {timeout} s")
        time.sleep(0.1)


class Serve:
    """``reserves serve`` as a child process; its log goes to a file."""

    def __init__(self, env: dict[str, str], log: Path, *, split: bool = False) -> None:
        self.env = env
        self.log = log
        self.url = f"http://127.0.0.1:{env['HTTP_PORT']}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.split = split
        self.background: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def background_pid(self) -> int | None:
        """The process of the background roles with ``split``; None without."""
        return self.background.pid if self.background is not None else None

    def start(self, timeout: float = 120.0) -> None:
        api = ["--roles", "api"] if self.split else []
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([PYTHON, "-m", "services.cli", "serve", *api],  # noqa: S603
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT)
            if self.split:
                env = {**self.env, "HTTP_PORT": str(int(self.env["HTTP_PORT"]) + 1)}
                self.background = subprocess.Popen(  # noqa: S603
                    [PYTHON, "-m", "services.cli", "serve", "--roles",
                     "consumers,relay,projections,expiry"],
                    env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_answering(f"{self.url}/health", self.proc, timeout, "reserves serve",
                       lambda: self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.background is not None:
            self.background.send_signal(signal.SIGINT)
            try:
                self.background.wait(30)
            except subprocess.TimeoutExpired:
                self.background.kill()
            self.background = None
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


# -- the store's positions -------------------------------------------------------------------

@dataclass(frozen=True)
class Positions:
    head: int  # the newest stored event's notification id
    views: int
    relay: int

    @property
    def views_lag(self) -> int:
        return max(self.head - self.views, 0)

    @property
    def relay_lag(self) -> int:
        return max(self.head - self.relay, 0)


def positions(database_url: str) -> Positions:
    with psycopg.connect(database_url, autocommit=True) as conn:
        head = conn.execute(
            f"SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}").fetchone()  # noqa: S608
        rows: dict[str, int] = dict(
            conn.execute("SELECT name, position FROM rm_tracking").fetchall())
    # 'views': the projections together (each has its own row: 'orders', 'requests')
    views = min((v for k, v in rows.items() if k != "relay"), default=0)
    return Positions(int(head[0]) if head else 0, int(views), int(rows.get("relay", 0)))


def wait_caught_up(database_url: str, target: int | None = None, timeout: float = 600.0,
                   interval: float = 0.05) -> float:
    """Seconds until the projections and the relay reached ``target`` (default: the head now).
    Raises TimeoutError after ``timeout``."""
    started = time.perf_counter()
    goal = positions(database_url).head if target is None else target
    while True:
        p = positions(database_url)
        if p.views >= goal and p.relay >= goal:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"views at {p.views}, relay at {p.relay}, wanted {goal}")
        time.sleep(interval)


@dataclass(frozen=True)
class CatchUp:
    events: int
    seconds: float
    complete: bool

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def catch_up(database_url: str, timeout: float,
             interval: float = 0.05) -> dict[str, CatchUp]:
    """Times the projections ('views') and the relay from their first step forward to the
    head of the log; the serve process's start-up is not counted."""
    head = positions(database_url).head
    deadline = time.perf_counter() + timeout
    first: dict[str, tuple[float, int]] = {}
    last: dict[str, tuple[float, int]] = {}
    while time.perf_counter() < deadline:
        now, p = time.perf_counter(), positions(database_url)
        for name, pos in (("views", p.views), ("relay", p.relay)):
            if name in last and last[name][1] >= head:
                continue  # done: keep the time it first got there
            if pos > 0 and name not in first:
                first[name] = (now, pos)
            last[name] = (now, pos)
        if p.views >= head and p.relay >= head:
            break
        time.sleep(interval)
    out = {}
    for name in ("views", "relay"):
        if name not in first:
            out[name] = CatchUp(0, 0.0, False)
        else:
            out[name] = CatchUp(last[name][1] - first[name][1], last[name][0] - first[name][0],
                                last[name][1] >= head)
    return out


def catch_up_from_log(log: Path, head: int) -> dict[str, CatchUp]:
    """The same figures from the service's own log: the relay's "published …" and the
    projector's "projected …" lines carry their positions and the time. Counted from the end
    of the first page it logged to the first line that reached ``head``, so the first page's
    own time is neither counted nor missed. The polling in ``catch_up`` starts only once the
    service answers /health, by which time a fast relay may already be done."""
    loggers = {"projections.relay": ("relay", "published"),
               "projections.projector": ("views", "projected")}
    first: dict[str, tuple[float, int]] = {}
    done: dict[str, tuple[float, int]] = {}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
            name, verb = loggers[entry["logger"]]
            high = int(entry["positions"][-1])
            at = datetime.fromisoformat(entry["time"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if not str(entry.get("message", "")).startswith(verb) or name in done:
            continue
        if name not in first:
            first[name] = (at, high)
        if high >= head:
            done[name] = (at, high)
    out = {}
    for name in ("views", "relay"):
        if name in first and name in done and done[name][0] > first[name][0]:
            out[name] = CatchUp(head - first[name][1], done[name][0] - first[name][0], True)
    return out


# -- gives over HTTP ---------------------------------------------------------------------------

@dataclass
class GiveRun:
    concurrency: int
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, successful gives
    answered_at: dict[str, float] = field(default_factory=dict)  # to_order_id -> perf_counter
    failures: dict[str, int] = field(default_factory=dict)  # "status code" -> count
    exhausted: bool = False

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


def http_client(base_url: str, connections: int) -> aiohttp.ClientSession:
    """The load generator's HTTP client. aiohttp, not httpx: on this machine httpx's
    AsyncClient tops out near 270 requests/s at 32 connections against an empty FastAPI
    endpoint, aiohttp near 5,700/s (docs/performance.md), so with httpx the harness, not the
    service, was the bottleneck."""
    return aiohttp.ClientSession(
        base_url, connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=30))


async def _give(client: aiohttp.ClientSession, slot: Slot, token: str, run: GiveRun) -> None:
    started = time.perf_counter()
    try:
        # with an Idempotency-Key, as a careful client sends it: the receipt is part of the path
        async with client.post(f"/v1/reserve-requests/{slot.request_id}/give", data=b"{}",
                               headers={"Authorization": f"Bearer {token}",
                                        "Content-Type": "application/json",
                                        "Idempotency-Key": f"give-{slot.request_id}"}
                               ) as response:
            body = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as e:
        run.failed += 1
        run.failures[type(e).__name__] = run.failures.get(type(e).__name__, 0) + 1
        return
    done = time.perf_counter()
    if status == 200:
        run.ok += 1
        run.latencies.append(done - started)
        run.answered_at[slot.to_order_id] = done
    else:
        run.failed += 1
        try:
            code = f"{status} {json.loads(body)['error']['code']}"
        except (ValueError, KeyError, TypeError):
            code = str(status)
        run.failures[code] = run.failures.get(code, 0) + 1


async def closed_loop(concurrency: int, seconds: float,
                      step: Callable[[int], Awaitable[bool]]) -> float:
    """``concurrency`` workers, each awaiting ``step(worker)`` again as soon as the last one
    returned, until ``seconds`` are up or it returns False; the seconds it took."""
    started = time.perf_counter()
    deadline = started + seconds

    async def worker(n: int) -> None:
        while time.perf_counter() < deadline:
            if not await step(n):
                return

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return time.perf_counter() - started


async def closed_loop_gives(base_url: str, owner_token: str, supply: Iterator[Slot],
                            concurrency: int, seconds: float) -> GiveRun:
    """``concurrency`` clients, each giving on the next pending request as soon as its last
    give was answered, for ``seconds``."""
    run = GiveRun(concurrency)
    async with http_client(base_url, concurrency) as client:

        async def give(_: int) -> bool:
            slot = next(supply, None)
            if slot is None:
                run.exhausted = True
                return False
            await _give(client, slot, owner_token, run)
            return True

        run.seconds = await closed_loop(concurrency, seconds, give)
    return run


@dataclass
class E2ERun:
    gives: GiveRun
    # per give whose message arrived: (seconds from the run's start to its HTTP answer,
    # seconds from that answer to the order.status message), in the order answered
    samples: list[tuple[float, float]]
    missing: int

    @property
    def latencies(self) -> list[float]:
        return [latency for _, latency in self.samples]

    def latencies_answered_within(self, start: float, end: float) -> list[float]:
        """The latencies of the gives answered from ``start`` to ``end`` (seconds into the run):
        the broker's share of e2e grows as the run writes record batches (docs/performance.md,
        "The broker's share of e2e"), which the first and last seconds of a run show."""
        return [latency for at, latency in self.samples if start <= at < end]


async def e2e_gives(base_url: str, owner_token: str, bootstrap: str, supply: Iterator[Slot],
                    per_second: float, seconds: float, settle: float = 15.0) -> E2ERun:
    """Gives at a steady rate (open loop: each starts on schedule, whatever the others do)
    while a consumer of ``order.status`` notes when each requester's order turns green."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
    await consumer.start()
    arrived: dict[str, float] = {}
    try:
        partitions = consumer.partitions_for_topic(ORDER_STATUS)
        if not partitions:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(ORDER_STATUS) or set()
        tps = [TopicPartition(ORDER_STATUS, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        stop = asyncio.Event()

        async def consume() -> None:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=50)
                now = time.perf_counter()
                for messages in batches.values():
                    for message in messages:
                        body = json.loads(message.value or b"{}")
                        if body.get("status") == "green":
                            arrived.setdefault(str(body.get("order_id")), now)

        consuming = asyncio.create_task(consume())
        run = GiveRun(concurrency=0)
        tasks: list[asyncio.Task[None]] = []
        async with http_client(base_url, 64) as client:
            started = time.perf_counter()
            total = int(per_second * seconds)
            for i in range(total):
                slot = next(supply, None)
                if slot is None:
                    run.exhausted = True
                    break
                delay = started + i / per_second - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(_give(client, slot, owner_token, run)))
            await asyncio.gather(*tasks)
            run.seconds = time.perf_counter() - started
        deadline = time.perf_counter() + settle
        # the consumer task fills `arrived`; wait for it (bounded) to see every give's message
        while time.perf_counter() < deadline and not set(run.answered_at) <= set(arrived):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        stop.set()
        await consuming
    finally:
        await consumer.stop()
    samples = [(t - started, arrived[o] - t) for o, t in run.answered_at.items() if o in arrived]
    return E2ERun(run, samples, len(run.answered_at) - len(samples))


# -- ERP facts through erp.events --------------------------------------------------------------

def erp_facts(run: str, count: int) -> Iterator[tuple[bytes, dict[str, object]]]:
    """``count`` facts, keyed as the contract says: per unit a stock level, an order placed
    with one line of 2, and a reserve of 1 for it."""
    i = 0
    while True:
        sku, order_id = f"ERP-{run}-{i}", f"{run}-erp{i}"
        unit: list[tuple[bytes, dict[str, object]]] = [
            (f"{WAREHOUSE}/{sku}".encode(), {"type": "StockLevelSet", "data": {
                "warehouse": WAREHOUSE, "sku": sku, "on_hand": 5}}),
            (order_id.encode(), {"type": "CustomerOrderPlaced", "data": {
                "order_id": order_id, "number": f"E{i}", "date": "2020-04-30T08:42:28",
                "partner": "ООО Ромашка", "manager": OWNER if i % 2 else REQUESTER,
                "lines": [{"sku": sku, "warehouse": WAREHOUSE, "quantity": 2}]}}),
            (order_id.encode(), {"type": "ReservePlaced", "data": {
                "order_id": order_id, "sku": sku, "warehouse": WAREHOUSE, "quantity": 1}}),
        ]
        for n, (key, fact) in enumerate(unit):
            if i * 3 + n >= count:
                return
            fact["event_id"] = f"{run}-f{i}-{n}"
            fact["occurred_at"] = "2020-04-30T08:00:00+03:00"
            yield key, fact
        i += 1


def stored_receipts(database_url: str, run: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM processed_messages WHERE key LIKE %s",
                           (f"erp:{run}-f%",)).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class IngestRun:
    facts: int
    stored: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.stored / self.seconds if self.seconds > 0 else 0.0


async def ingest(bootstrap: str, database_url: str, run: str, count: int,
                 within: float) -> IngestRun:
    """Produces ``count`` facts to ``erp.events`` and times until each has its receipt (the
    proof that the service consumed and stored it)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    started = time.perf_counter()
    try:
        pending = [await producer.send(ERP_EVENTS, json.dumps(fact, ensure_ascii=False).encode(),
                                       key=key) for key, fact in erp_facts(run, count)]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    stored = 0
    while time.perf_counter() - started < within:
        stored = await asyncio.to_thread(stored_receipts, database_url, run)
        if stored >= count:
            break
        await asyncio.sleep(0.5)  # a count over the receipts: not too often, it loads the server
    return IngestRun(count, stored, time.perf_counter() - started)


# -- replay in a child process --------------------------------------------------------------------

@dataclass(frozen=True)
class ReplayRun:
    events: int
    seconds: float  # the replay's own timing (process start-up excluded) when it reported it
    wall_seconds: float
    peak_rss_mb: float  # the peak of the summed RSS of the replay's process tree
    returncode: int
    timed_out: bool = False
    max_rss_mb: float = 0.0  # ru_maxrss: the largest single process of the tree (a note)
    processes: int = 1  # the most processes of the tree seen at once


_DONE = re.compile(r"replay done: (\d+) events .* in ([\d.]+) s")
_PROGRESS = re.compile(r"replay[^:\n]*: position (\d+)/\d+ \(([\d,]+) events/s")
RSS_EVERY_S = 0.05


class TreeRss:
    """Samples the summed resident memory of a process and all its descendants (a replay of
    several projections runs one child process each), every ``RSS_EVERY_S``; keeps the peak.
    ``ru_maxrss`` would give only the largest single process of the tree."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.peak = 0
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-rss", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for proc in tree:
            with contextlib.suppress(psutil.Error):  # exited meanwhile
                total += proc.memory_info().rss
        self.peak = max(self.peak, total)
        self.most = max(self.most, len(tree))

    def _run(self) -> None:
        while not self._stop.wait(RSS_EVERY_S):
            self._sample()

    def descendants(self) -> list[Any]:
        import psutil

        try:
            return list(self.root.children(recursive=True))
        except psutil.Error:
            return []

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> float:
        """Stops sampling; the peak in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def replay(env: dict[str, str], log: Path, events: int, within: float,
           profile: Path | None = None) -> ReplayRun:
    """``reserves replay`` in a child; peak RSS is the peak of its process tree's summed RSS,
    sampled every 50 ms (``ru_maxrss`` from ``wait4`` on the child is kept as a note). A
    replay still running after ``within`` seconds is stopped, with its children; its rate is
    then read from its last progress line."""
    start_of_log = log.stat().st_size if log.exists() else 0
    started = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen([PYTHON, "-m", "services.cli", "replay"],  # noqa: S603
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    rss = TreeRss(proc.pid)
    spies: list[subprocess.Popen[bytes]] = []
    if profile is not None:  # the command, and each projection's process as it appears
        spies.append(attach_py_spy(proc.pid, profile))
        threading.Thread(target=_spy_on_children, args=(rss, profile, spies), daemon=True,
                         name="replay-spies").start()

    def stop_tree() -> None:
        children = rss.descendants()
        proc.kill()
        for child in children:
            with contextlib.suppress(OSError):
                os.kill(child.pid, signal.SIGKILL)

    timer = threading.Timer(within, stop_tree)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
        peak_mb = rss.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    for spy in list(spies):
        spy.wait(30)
    with open(log, "rb") as f:
        f.seek(start_of_log)
        text = f.read().decode(errors="replace")
    seconds = wall
    timed_out = proc.returncode == -signal.SIGKILL
    done = _DONE.findall(text)
    if done:
        events, seconds = int(done[-1][0]), float(done[-1][1])
    elif timed_out and (progress := _PROGRESS.findall(text)):
        events = int(progress[-1][0])
        seconds = events / float(progress[-1][1].replace(",", ""))
    # ru_maxrss (kilobytes on Linux) covers the child and its waited-for descendants, but as
    # the largest one of them, not their sum; and it counts the moment between fork and exec,
    # when the child still maps this harness (250 MB after seeding a million events). So it
    # is only a note; the figure is the sampled sum.
    maxrss_mb = max(usage.ru_maxrss, 0) / 1024
    return ReplayRun(events, seconds, wall, peak_mb if peak_mb > 0 else maxrss_mb,
                     proc.returncode,
                     timed_out, maxrss_mb, rss.most)


def _spy_on_children(rss: TreeRss, profile: Path, spies: list[subprocess.Popen[bytes]]
                     ) -> None:
    """py-spy on each projection's process of a replay (``py-spy --subprocesses`` did not
    follow them here), into ``<profile>-<projection>.txt``."""
    seen: set[int] = set()
    while not rss.stopped:
        for child in rss.descendants():
            if child.pid in seen:
                continue
            seen.add(child.pid)
            with contextlib.suppress(Exception):
                name = child.cmdline()[-1]
                out = profile.with_name(f"{profile.stem}-{name}{profile.suffix}")
                spies.append(attach_py_spy(child.pid, out))
        time.sleep(0.05)


def attach_py_spy(pid: int, out: Path, seconds: float | None = None) -> subprocess.Popen[bytes]:
    """Samples ``pid`` with py-spy (collapsed stacks, which speedscope also opens) until it
    exits or ``seconds`` pass."""
    from bench.infra import PYTHON as python

    spy = str(Path(python).with_name("py-spy"))
    # BENCH_PROFILE_GIL=1: only the thread holding the GIL (where the CPU of the one
    # interpreter goes), instead of every thread, waits included
    who = ["--gil"] if os.environ.get("BENCH_PROFILE_GIL") == "1" else ["--idle"]
    # BENCH_PROFILE_BLOCKING=1: pause the process for each sample (whole stacks of the event
    # loop's tasks; without it about a third of them come out cut off at a coroutine)
    pause = [] if os.environ.get("BENCH_PROFILE_BLOCKING") == "1" else ["--nonblocking"]
    args = [spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw",
            "--output", str(out), *pause, *who]
    if seconds is not None:
        args += ["--duration", str(int(seconds))]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL,  # noqa: S603
                            stderr=subprocess.DEVNULL)
