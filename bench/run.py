"""``make bench``: the machine's limits and the product's figures, measured in one run.

    python -m bench.run            # the issue's sizes (several minutes)
    python -m bench.run --quick    # everything scaled down, for development

Prints a table, writes ``bench/results.json`` and ``bench/results.png``, and exits 1 when a
target is missed (2 when a stage could not run at all). Servers: the embedded PostgreSQL and
Tansu broker in a scratch directory, or those named by ``DATABASE_URL`` and
``KAFKA_BOOTSTRAP_SERVERS`` (each stage then creates and drops a ``rx_bench_*`` database).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import baselines, floor, product
from bench.cpu import CpuMeter, describe, ms_per, postmaster_pid
from bench.infra import BenchInfra, child_env
from bench.plot import draw
from bench.seed import EVENTS_PER_GIVEN_SLOT, EVENTS_PER_SLOT, OWNER, Seeder, Slot
from bench.stats import (
    Figure,
    judge,
    missing_required,
    percentiles,
    results_document,
    seconds_of_work,
)
from services.embedded import free_port

HERE = Path(__file__).resolve().parent
console = Console(width=None if sys.stdout.isatty() else 130)


@dataclass(frozen=True)
class Sizes:
    give_seconds: float = 30.0
    give_concurrency: int = 32
    sweep: tuple[int, ...] = (1, 4, 8, 16)
    sweep_seconds: float = 10.0
    give_slots: int = 90_000
    e2e_rate: float = 200.0
    e2e_seconds: float = 20.0
    ingest_facts: int = 200_000
    replay_events: int = 1_000_000
    replay_small_events: int = 100_000
    relay_events: int = 200_000
    baseline_seconds: float = 5.0
    round_trips: int = 2000
    floor_seconds: float = 10.0
    stage_timeout: float = 900.0


FULL = Sizes()
QUICK = Sizes(give_seconds=5.0, sweep_seconds=2.0, give_slots=12_000, e2e_seconds=3.0,
              ingest_facts=3000, replay_events=20_000, replay_small_events=2000,
              relay_events=20_000, baseline_seconds=1.5, round_trips=300, floor_seconds=2.0,
              stage_timeout=300.0)


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sweep: list[tuple[int, float]] = field(default_factory=list)
    latencies_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    rtt_ms: dict[str, float] = field(default_factory=dict)
    give_baseline: float = 0.0
    give_floors: dict[str, float] = field(default_factory=dict)  # mode -> requests/s
    failed_stages: list[str] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str, baseline: float | None = None) -> None:
        self.figures.append(Figure(name, value, unit, baseline))
        console.print(f"  [cyan]{name}[/] = {value:,.3f} {unit}"
                      + (f" (baseline {baseline:,.3f})" if baseline is not None else ""))

    def note(self, text: str) -> None:
        self.notes.append(text)
        console.print(f"  [yellow]note:[/] {text}")


# e2e is also reported over the first and the last this many seconds of its run (no target)
E2E_WINDOW_S = 5.0


def ms(samples: list[float]) -> dict[str, float]:
    return {k: v * 1000 for k, v in percentiles(samples).items()}


class Bench:
    def __init__(self, sizes: Sizes, infra: BenchInfra, profile: Path | None,
                 split_roles: bool = False) -> None:
        self.split_roles = split_roles
        self.sizes = sizes
        self.infra = infra
        self.profile = profile
        self.results = Results()
        self.rates: dict[str, float] = {}
        self.meter: CpuMeter | None = None  # CPU by process, of the service being measured
        self.run_id = uuid.uuid4().hex[:6]
        self.tokens = {secrets.token_urlsafe(18): m for m in ("ivanov", "petrova", "sidorov")}
        self.owner_token = next(t for t, m in self.tokens.items() if m == OWNER)
        self.erp_token = secrets.token_urlsafe(18)

    def env(self, database_url: str, label: str) -> dict[str, str]:
        var = self.infra.scratch / f"var-{label}"
        var.mkdir(parents=True, exist_ok=True)
        return child_env(database_url, self.infra.bootstrap_servers, var, self.tokens,
                         self.erp_token, free_port())

    def start_meter(self, url: str, serve: product.Serve) -> None:
        broker = self.infra.embedded_broker
        # With --split-roles "service" is the API's process and "background" the other one.
        self.meter = CpuMeter({"service": serve.pid, "background": serve.background_pid,
                               "postgres": postmaster_pid(url),
                               "broker": broker.pid if broker is not None else None})

    def cpu_per_give(self, prefix: str, before: dict[str, float] | None, gives: int) -> None:
        """``{prefix}_cpu_{process}_ms``: CPU per give of each process since ``before`` (no
        target: where the two cores go, steadier than a throughput; a server that is not local
        is left out)."""
        if self.meter is None or before is None or gives <= 0:
            return
        per_give = ms_per(before, self.meter.sample(), gives)
        for process, ms_ in per_give.items():
            self.results.add(f"{prefix}_cpu_{process}_ms", ms_, "ms/give")
        console.print(f"  CPU per give (ms): {describe(per_give)}")

    def stage(self, name: str, body: Callable[[], None]) -> None:
        console.rule(f"[bold]{name}")
        started = time.perf_counter()
        try:
            body()
        except Exception as e:
            self.results.failed_stages.append(name)
            console.print_exception(max_frames=8)
            self.results.note(f"stage {name} failed: {type(e).__name__}: {e}")
        console.print(f"  ({name}: {time.perf_counter() - started:.0f} s)")

    # -- the service under HTTP and Kafka load -----------------------------------------------

    def serve_stages(self) -> None:
        s, r = self.sizes, self.results
        url = self.infra.fresh_database("serve")
        r.give_baseline = baselines.pg_single_row_commits(url, s.baseline_seconds)
        batched = baselines.pg_batched_rows(url, s.baseline_seconds)
        rtt = asyncio.run(baselines.kafka_round_trips(self.infra.bootstrap_servers,
                                                      s.round_trips))
        r.rtt_ms = ms(rtt)
        console.print(f"  raw: {r.give_baseline:,.0f} commits/s, {batched:,.0f} rows/s batched, "
                      f"broker round trip p99 {r.rtt_ms['p99']:.2f} ms")
        try:
            self.give_floors(url)
        except Exception as e:  # no target rides on it: the stage's own figures go on
            r.note(f"the floor under a give could not be measured: {type(e).__name__}: {e}")

        # The relay's catch-up is timed over relay_events (the 200,000), whose pending
        # requests also serve the e2e run; the rest the gives need are seeded after both.
        first_slots = max(math.ceil(s.relay_events / EVENTS_PER_SLOT),
                          math.ceil(s.e2e_rate * s.e2e_seconds))
        seeder = Seeder(url)
        try:
            seeded = seeder.seed(self.run_id, 0, first_slots)
            message_bytes = int(seeder.mean_state_bytes() + 190)  # + the envelope's fields
        finally:
            seeder.close()
        console.print(f"  seeded {seeded.events:,} events ({len(seeded.slots):,} pending "
                      f"requests) in {seeded.seconds:.1f} s "
                      f"({seeded.events / seeded.seconds:,.0f} events/s)")
        produce = asyncio.run(baselines.kafka_produce_rate(self.infra.bootstrap_servers,
                                                           message_bytes, seeded.events))
        console.print(f"  raw produce: {produce:,.0f} msgs/s of {message_bytes} B")

        serve = product.Serve(self.env(url, "serve"), self.infra.scratch / "serve.log",
                              split=self.split_roles)
        serve.start()
        self.start_meter(url, serve)
        try:
            caught = self.caught_up(url, serve, s.stage_timeout)
            for name, c in caught.items():
                if not c.complete:
                    r.note(f"{name} had not caught up after {s.stage_timeout:.0f} s; "
                           "its rate is over the part it did")
            self.rates = {name: c.per_second for name, c in caught.items()}
            r.add("relay_throughput", caught["relay"].per_second, "events/s", produce)
            product.wait_caught_up(url, timeout=s.stage_timeout)
            # e2e on the log the relay has just caught up, before the gives' requests are
            # seeded and before the gives at full speed: each leaves thousands of record
            # batches on order.status, and the embedded broker's fetch scans a partition's
            # batches (docs/performance.md, "The broker's share of e2e"). The same run after
            # the gives is reported too, without a target.
            supply: Iterator[Slot] = iter(seeded.slots)
            self.e2e(url, serve, supply)
            if s.give_slots > first_slots:
                seeder = Seeder(url)
                try:
                    more = seeder.seed(self.run_id, first_slots, s.give_slots - first_slots)
                finally:
                    seeder.close()
                supply = itertools.chain(supply, more.slots)
                console.print(f"  seeded {more.events:,} more events ({len(more.slots):,} "
                              f"pending requests) for the gives, the service running")
                product.wait_caught_up(url, timeout=s.stage_timeout)
            self.give_sweep(url, serve, supply)
            self.e2e(url, serve, supply, after_gives=True)
            self.ingest(url, serve, batched)
        finally:
            serve.stop()

    def give_floors(self, url: str) -> None:
        """``give_floor_{none,commit,group}_*`` (no target): what an HTTP endpoint that only
        answers, or only stores a row, reaches with the gives' client at their concurrency,
        next to the commit baseline, and the CPU a request costs its app, PostgreSQL and the
        harness; a give does all of it and more (``bench/floor.py``)."""
        s, r = self.sizes, self.results
        for mode in floor.MODES:
            run = floor.floor(url, mode, s.give_concurrency, s.floor_seconds,
                              warmup=min(2.0, s.floor_seconds))
            if run.failed:
                r.note(f"{run.failed} requests to the {mode} floor failed")
            r.give_floors[mode] = run.per_second
            r.add(f"give_floor_{mode}_throughput", run.per_second, "requests/s",
                  r.give_baseline)
            if run.latencies:
                r.add(f"give_floor_{mode}_p99_ms", ms(run.latencies)["p99"], "ms")
            for process, ms_ in run.cpu_ms.items():
                r.add(f"give_floor_{mode}_cpu_{process}_ms", ms_, "ms/request")

    def caught_up(self, url: str, serve: product.Serve,
                  timeout: float) -> dict[str, product.CatchUp]:
        """The projections' and the relay's catch-up of the seeded log: from the service's
        own log when it holds the whole of it (a fast relay can be done before /health
        answers and the polling starts), else as polled."""
        polled = product.catch_up(url, timeout)
        head = product.positions(url).head
        logged = product.catch_up_from_log(serve.log, head)
        caught = {}
        for name, c in polled.items():
            by_log = logged.get(name)
            caught[name] = by_log if by_log is not None and by_log.events >= c.events else c
            source = "its log" if caught[name] is by_log else "polled"
            console.print(f"  {name} caught up {caught[name].events:,} events in "
                          f"{caught[name].seconds:.1f} s ({caught[name].per_second:,.0f}/s; "
                          f"{source}; polled: {c.events:,} in {c.seconds:.1f} s)")
        return caught

    def relay_stage(self) -> None:
        """The relay alone (``--stages relay``): its catch-up of a seeded log against the raw
        produce rate, then the e2e run; no give sweep, no ingest. For working on the relay."""
        s, r = self.sizes, self.results
        url = self.infra.fresh_database("relay")
        r.rtt_ms = ms(asyncio.run(baselines.kafka_round_trips(self.infra.bootstrap_servers,
                                                              s.round_trips)))
        seeder = Seeder(url)
        try:
            seeded = seeder.seed(self.run_id, 0, max(math.ceil(s.relay_events / EVENTS_PER_SLOT),
                                                     int(s.e2e_rate * s.e2e_seconds) + 100))
            message_bytes = int(seeder.mean_state_bytes() + 190)
        finally:
            seeder.close()
        console.print(f"  seeded {seeded.events:,} events in {seeded.seconds:.1f} s")
        produce = asyncio.run(baselines.kafka_produce_rate(self.infra.bootstrap_servers,
                                                           message_bytes, seeded.events))
        console.print(f"  raw produce: {produce:,.0f} msgs/s of {message_bytes} B")
        serve = product.Serve(self.env(url, "relay"), self.infra.scratch / "relay.log",
                              split=self.split_roles)
        serve.start()
        self.start_meter(url, serve)
        try:
            spy = None
            if self.profile is not None:
                spy = product.attach_py_spy(serve.pid, self.profile / "relay-catch-up.txt")
            caught = self.caught_up(url, serve, s.stage_timeout)
            if spy is not None:
                spy.send_signal(2)
                spy.wait(60)
            self.rates = {name: c.per_second for name, c in caught.items()}
            r.add("relay_throughput", caught["relay"].per_second, "events/s", produce)
            product.wait_caught_up(url, timeout=s.stage_timeout)
            self.e2e(url, serve, iter(seeded.slots))
        finally:
            serve.stop()

    def give_sweep(self, url: str, serve: product.Serve, supply: Iterator[Slot]) -> None:
        s, r = self.sizes, self.results
        for concurrency in s.sweep:
            run = asyncio.run(product.closed_loop_gives(serve.url, self.owner_token, supply,
                                                        concurrency, s.sweep_seconds))
            r.sweep.append((concurrency, run.per_second))
            console.print(f"  concurrency {concurrency:>3}: {run.per_second:,.0f} gives/s, "
                          f"{run.failed} failed {run.failures or ''}")
            product.wait_caught_up(url, timeout=s.stage_timeout)
        spy = None
        if self.profile is not None:
            spy = product.attach_py_spy(serve.pid, self.profile / "serve-give.txt",
                                        s.give_seconds)
        cpu = self.meter.sample() if self.meter is not None else None
        run = asyncio.run(product.closed_loop_gives(serve.url, self.owner_token, supply,
                                                    s.give_concurrency, s.give_seconds))
        end = product.positions(url)
        catch_up = product.wait_caught_up(url, target=end.head, timeout=s.stage_timeout)
        self.cpu_per_give("give", cpu, run.ok)  # the gives and the catch-up of their events
        if spy is not None:
            spy.wait(60)
        r.sweep.append((s.give_concurrency, run.per_second))
        console.print(f"  concurrency {s.give_concurrency:>3}: {run.ok:,} gives in "
                      f"{run.seconds:.1f} s, {run.failed} failed {run.failures or ''}")
        if run.exhausted:
            r.note("the pending requests ran out during the give run; raise --give-slots")
        if run.failed:
            r.note(f"{run.failed} gives failed: {run.failures}")
        r.add("give_throughput", run.per_second, "gives/s", r.give_baseline)
        if run.latencies:
            lat = ms(run.latencies)
            r.latencies_ms[f"give, {s.give_concurrency} clients"] = lat
            r.add("give_p99_ms", lat["p99"], "ms")
            r.add("give_p50_ms", lat["p50"], "ms")
        # The backlog when the load stopped, in seconds of work at the rates the projections
        # and the relay showed catching up the seeded log; and, as a check, the time they
        # actually took to reach the head they saw then.
        lag = max(seconds_of_work(end.views_lag, self.rates.get("views", 0.0)),
                  seconds_of_work(end.relay_lag, self.rates.get("relay", 0.0)))
        r.add("give_end_lag_events", float(max(end.views_lag, end.relay_lag)), "events")
        r.add("give_end_lag_s", lag if math.isfinite(lag) else 1e9, "s")
        r.add("give_end_catch_up_s", catch_up, "s")
        console.print(f"  at the end: views {end.views_lag} behind, relay {end.relay_lag} "
                      f"behind; both caught up in {catch_up:.2f} s")

    def e2e(self, url: str, serve: product.Serve, supply: Iterator[Slot], *,
            after_gives: bool = False) -> None:
        s, r = self.sizes, self.results
        name, label = ("e2e_after_gives", " after the gives") if after_gives else ("e2e", "")
        cpu = self.meter.sample() if self.meter is not None else None
        run = asyncio.run(product.e2e_gives(serve.url, self.owner_token,
                                            self.infra.bootstrap_servers, supply, s.e2e_rate,
                                            s.e2e_seconds))
        self.cpu_per_give(name, cpu, run.gives.ok)
        achieved = run.gives.ok / run.gives.seconds if run.gives.seconds else 0.0
        console.print(f"  {run.gives.ok:,} gives at {achieved:,.0f}/s{label} "
                      f"(asked {s.e2e_rate:g}/s), "
                      f"{run.missing} order.status messages missing, "
                      f"{run.gives.failed} failed")
        if run.gives.failed:
            r.note(f"{run.gives.failed} gives of the e2e run failed: {run.gives.failures}")
        if run.missing:
            r.note(f"{run.missing} order.status messages did not arrive within the wait")
        if run.gives.exhausted:
            r.note("the pending requests ran out during the e2e run; raise --give-slots")
        if achieved < 0.95 * s.e2e_rate:
            r.note(f"the e2e run reached only {achieved:,.0f} gives/s of {s.e2e_rate:g}")
        if run.latencies:
            lat = ms(run.latencies)
            r.latencies_ms[f"e2e at {s.e2e_rate:g}/s{label}"] = lat
            r.add(f"{name}_p99_ms", lat["p99"], "ms", r.rtt_ms.get("p99"))
            r.add(f"{name}_p50_ms", lat["p50"], "ms", r.rtt_ms.get("p50"))
            if run.gives.seconds >= 2 * E2E_WINDOW_S:  # no target: where in the run the tail is
                for part, start in (("first", 0.0), ("last", run.gives.seconds - E2E_WINDOW_S)):
                    within = run.latencies_answered_within(start, start + E2E_WINDOW_S + 1e-9)
                    if within:
                        r.add(f"{name}_{part}_{E2E_WINDOW_S:g}s_p99_ms", ms(within)["p99"], "ms",
                              r.rtt_ms.get("p99"))
        product.wait_caught_up(url, timeout=s.stage_timeout)

    def ingest(self, url: str, serve: product.Serve, batched: float) -> None:
        s, r = self.sizes, self.results
        spy = None
        if self.profile is not None:
            spy = product.attach_py_spy(serve.pid, self.profile / "serve-ingest.txt")
        run = asyncio.run(product.ingest(self.infra.bootstrap_servers, url, self.run_id,
                                         s.ingest_facts, s.stage_timeout))
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        console.print(f"  {run.stored:,} of {run.facts:,} facts stored in {run.seconds:.1f} s")
        if run.stored < run.facts:
            r.note(f"only {run.stored:,} of {run.facts:,} ERP facts were stored within "
                   f"{s.stage_timeout:.0f} s; ingest_throughput is over those")
        r.add("ingest_throughput", run.per_second, "facts/s", batched)

    def ingest_stage(self) -> None:
        """The ingest figure alone (``--stages ingest``): its baseline and a fresh service on a
        fresh database, without the serve stage's seeding, relay, gives and e2e runs."""
        s = self.sizes
        url = self.infra.fresh_database("ingest")
        batched = baselines.pg_batched_rows(url, s.baseline_seconds)
        console.print(f"  raw: {batched:,.0f} rows/s batched")
        serve = product.Serve(self.env(url, "ingest"), self.infra.scratch / "serve-ingest.log")
        serve.start()
        try:
            self.ingest(url, serve, batched)
        finally:
            serve.stop()

    # -- replay ---------------------------------------------------------------------------------

    def replay_stage(self) -> None:
        s, r = self.sizes, self.results
        url = self.infra.fresh_database("replay")
        env = self.env(url, "replay")
        log = self.infra.scratch / "replay.log"
        per_slot = (EVENTS_PER_SLOT + EVENTS_PER_GIVEN_SLOT) / 2 + 0.02
        seeder = Seeder(url)
        try:
            small_slots = math.ceil(s.replay_small_events / per_slot)
            seeded = seeder.seed(self.run_id, 0, small_slots, given_every=2, keep_slots=False)
            small = product.replay(env, log, seeded.events, within=s.stage_timeout)
            console.print(f"  replay of {small.events:,}: {small.events / small.seconds:,.0f} "
                          f"events/s, peak RSS {small.peak_rss_mb:.0f} MB summed over "
                          f"{small.processes} processes (ru_maxrss {small.max_rss_mb:.0f} MB)")
            more = math.ceil(s.replay_events / per_slot) - small_slots
            bigger = seeder.seed(self.run_id, small_slots, more, given_every=2,
                                 keep_slots=False)
            total = seeder.max_position()
        finally:
            seeder.close()
        console.print(f"  seeded {total:,} events ({bigger.events / bigger.seconds:,.0f}/s)")
        decoded = baselines.read_and_decode(url)
        console.print(f"  read + decode: {decoded.per_second:,.0f} events/s")
        profile = self.profile / "replay.txt" if self.profile is not None else None
        full = product.replay(env, log, total, within=s.stage_timeout, profile=profile)
        if small.returncode or (full.returncode and not full.timed_out):
            raise RuntimeError(f"reserves replay failed; see {log}")
        if full.timed_out:
            r.note(f"the replay of {total:,} was stopped after {s.stage_timeout:.0f} s; its "
                   f"rate is from its last progress line ({full.events:,} events)")
        if full.events != total:
            r.note(f"replay reported {full.events} events of {total}")
        console.print(f"  replay of {full.events:,}: {full.seconds:.1f} s "
                      f"({full.wall_seconds:.1f} s with process start-up), "
                      f"peak RSS {full.peak_rss_mb:.0f} MB summed over {full.processes} "
                      f"processes (ru_maxrss {full.max_rss_mb:.0f} MB)")
        r.note(f"replay peak RSS is the peak of the summed RSS of the replay's "
               f"{full.processes} processes, sampled every 50 ms; ru_maxrss (the largest "
               f"single process, and it counts this harness's memory mapped between fork and "
               f"exec): {full.max_rss_mb:.0f} MB at {full.events:,} events, "
               f"{small.max_rss_mb:.0f} MB at {small.events:,}; wall time with process "
               f"start-up {full.wall_seconds:.1f} s")
        r.add("replay_throughput", full.events / full.seconds, "events/s", decoded.per_second)
        r.add("replay_peak_rss_mb", full.peak_rss_mb, "MB", small.peak_rss_mb)


# -- reporting ----------------------------------------------------------------------------------

def fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.3g}"


def report(results: Results) -> bool:
    table = Table(title="reserve exchange: bench")
    for col in ("name", "value", "unit", "baseline", "ratio", "target", "pass"):
        table.add_column(col, justify="right" if col in ("value", "baseline", "ratio") else "left",
                         no_wrap=col == "name")
    ok = True
    for figure in results.figures:
        verdict = judge(figure)
        passed = verdict.passed
        ok = ok and passed is not False
        mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: ""}[passed]
        table.add_row(figure.name, fmt(figure.value), figure.unit, fmt(figure.baseline),
                      fmt(figure.ratio), ", ".join(map(str, verdict.targets)), mark)
    console.print(table)
    for figure in results.figures:
        for target in judge(figure).missed:
            console.print(f"[red]missed:[/] {figure.name}: {target} "
                          f"(value {fmt(figure.value)}, ratio {fmt(figure.ratio)})")
    for name in missing_required(results.figures):
        console.print(f"[red]missing:[/] {name} (its stage did not produce it)")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="scale every size down")
    parser.add_argument("--stages", default="serve,replay",
                        help="comma-separated: serve (relay, gives, e2e, ingest), replay; or "
                             "ingest alone (its baseline and the ingest on a fresh service); "
                             "or relay (the relay's catch-up and e2e only)")
    parser.add_argument("--give-slots", type=int, help="pending requests to seed for gives")
    parser.add_argument("--give-seconds", type=float)
    parser.add_argument("--ingest-facts", type=int)
    parser.add_argument("--replay-events", type=int)
    parser.add_argument("--relay-events", type=int, help="events seeded for the relay figure")
    parser.add_argument("--e2e-rate", type=float,
                        help="gives/s of the e2e run (default 200: the issue's rate)")
    parser.add_argument("--e2e-seconds", type=float)
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the service and the replay with py-spy into DIR "
                             "(figures of such a run are disturbed by the sampling)")
    parser.add_argument("--split-roles", action="store_true",
                        help="serve the API in one process and the consumers, relay, projections "
                             "and expiry in another (`reserves serve --roles ...`) instead of "
                             "everything in one")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch directory and databases for inspection")
    parser.add_argument("--out", type=Path, default=HERE, help="where results.json/png go")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    overrides = {k: v for k, v in {"give_slots": args.give_slots,
                                   "give_seconds": args.give_seconds,
                                   "ingest_facts": args.ingest_facts,
                                   "replay_events": args.replay_events,
                                   "relay_events": args.relay_events,
                                   "e2e_rate": args.e2e_rate,
                                   "e2e_seconds": args.e2e_seconds}.items() if v is not None}
    sizes = replace(sizes, **overrides)
    stages = {x.strip() for x in args.stages.split(",") if x.strip()}
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # runs the clean-up below: child processes, servers, scratch

    signal.signal(signal.SIGTERM, interrupted)
    started = time.perf_counter()
    infra = BenchInfra.start()
    bench = Bench(sizes, infra, args.profile, split_roles=args.split_roles)
    try:
        machine = infra.machine()
        console.print(f"machine: {machine['cpu_count']} × {machine['cpu_model']}, "
                      f"PostgreSQL {machine['postgresql']}, {machine['broker']}, "
                      f"load {machine['load_average_at_start']}")
        if "serve" in stages:
            bench.stage("serve: relay, gives, e2e, ingest", bench.serve_stages)
        if "ingest" in stages and "serve" not in stages:
            bench.stage("ingest", bench.ingest_stage)
        if "replay" in stages:
            bench.stage("replay", bench.replay_stage)
        if "relay" in stages and "serve" not in stages:
            bench.stage("relay: catch-up and e2e", bench.relay_stage)
    finally:
        infra.stop(keep=args.keep)
    results = bench.results
    machine["run"] = {"mode": "quick" if args.quick else "full", "stages": sorted(stages),
                      "sizes": {k: v for k, v in vars(sizes).items()},
                      "seconds": round(time.perf_counter() - started, 1),
                      "load_average_at_end": list(os.getloadavg()),
                      "notes": results.notes}
    document = results_document(machine, results.figures)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(document, indent=2, ensure_ascii=False))
    title = (f"{machine['cpu_count']} CPU {machine['cpu_model']}, PostgreSQL "
             f"{machine['postgresql']}, {machine['run']['mode']} run {machine['date']}")
    draw(args.out / "results.png", sweep=sorted(results.sweep), give_baseline=results.give_baseline,
         give_floors=results.give_floors,
         latencies_ms=results.latencies_ms, e2e_baseline_ms=results.rtt_ms or None, title=title)
    ok = report(results)
    console.print(f"wrote {args.out / 'results.json'} and {args.out / 'results.png'} "
                  f"in {time.perf_counter() - started:.0f} s")
    if results.failed_stages:
        console.print(f"[red]stages failed:[/] {', '.join(results.failed_stages)}")
        return 2
    if missing_required(results.figures) and stages >= {"serve", "replay"}:
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

