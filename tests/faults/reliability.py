"""The fault-injection run, Jepsen-style: a workload against real processes, faults injected at
seeded random points, then the checker over the history. ``make reliability`` runs it big and
prints the table; ``make test-faults`` runs it small under pytest.

    python -m tests.faults.reliability --operations 3000 --rounds 2 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from services.settings import ROLES
from tests.faults.checker import CheckReport, check_all
from tests.faults.client import Client, ClientConfig
from tests.faults.cluster import Cluster
from tests.faults.history import OK, REFUSED, UNKNOWN, Fault, History

FAULT_KINDS = (*(f"kill:{role}" for role in ROLES), "broker-restart", "pg-restart")
PG_DOWN_S = 4.0


@dataclass
class RunConfig:
    operations: int = 1200
    rounds: int = 1  # every kind of fault this many times
    seed: int = 0
    workers: int = 4
    request_ttl: float = 20.0
    adversary_examples: int = 0  # the adversary campaign's examples; 0: not run
    keep: bool = False


@dataclass
class RunResult:
    config: RunConfig
    history: History
    check: CheckReport
    process_failures: list[str]
    pg_probes: list[tuple[int | None, float]]
    unknown: int
    server_errors: int
    campaign: Any = None
    campaign_error: str = ""
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def schedule(rng: random.Random, operations: int, rounds: int) -> list[tuple[int, str]]:
    """Each kind of fault ``rounds`` times, at random points of the middle 80% of the run."""
    kinds = list(FAULT_KINDS) * rounds
    rng.shuffle(kinds)
    points = sorted(rng.sample(range(operations // 10, operations * 9 // 10), len(kinds)))
    return list(zip(points, kinds, strict=True))


def probe_while_down(cluster: Cluster) -> tuple[int | None, float]:
    """A view read while PostgreSQL is down must be a prompt 503, not a hang or a 500."""
    token = next(iter(cluster.manager_tokens.values()))
    started = time.monotonic()
    try:
        status: int | None = httpx.get(f"{cluster.http_url}/v1/stock/W1/SKU-0", timeout=30,
                                       headers={"Authorization": f"Bearer {token}"}).status_code
    except httpx.HTTPError:
        status = None
    return status, time.monotonic() - started


async def inject(cluster: Cluster, client: Client, history: History,
                 plan: list[tuple[int, str]], rng: random.Random,
                 probes: list[tuple[int | None, float]]) -> None:
    for at_op, kind in plan:
        while len(history.ops) < at_op:
            history.grew.clear()
            await history.grew.wait()
        fault = Fault(kind, len(history.ops), time.monotonic())
        history.faults.append(fault)
        print(f"  fault {kind} at op {fault.at_op}", flush=True)
        if kind.startswith("kill:"):
            await asyncio.to_thread(cluster.kill_role, kind.split(":", 1)[1], rng.uniform(0, 1))
        elif kind == "broker-restart":
            await asyncio.to_thread(cluster.restart_broker, rng.uniform(0.2, 1.5))
            await client.restart_results_consumer()
        else:
            await asyncio.to_thread(cluster.pg.crash)
            probes.append(await asyncio.to_thread(probe_while_down, cluster))
            await asyncio.sleep(max(0.0, PG_DOWN_S - probes[-1][1]))
            await asyncio.to_thread(cluster.pg.start)
        fault.ended = time.monotonic()
        cluster.check_processes()


async def work(client: Client, history: History, operations: int) -> None:
    while len(history.ops) < operations:
        await client.step()


def quiesce(cluster: Cluster, timeout: float) -> None:
    """Waits until no request is pending and the projector and relay have caught up."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(cluster.database_url, autocommit=True) as conn:
            top = conn.execute("SELECT coalesce(max(notification_id), 0) "
                               "FROM reserves_events").fetchone()
            tracking: dict[str, int] = dict(
                conn.execute("SELECT name, position FROM rm_tracking").fetchall())
            pending = conn.execute(
                "SELECT count(*) FROM rm_requests WHERE status = 'pending'").fetchone()
        assert top is not None and pending is not None
        if pending[0] == 0 and tracking and all(p == top[0] for p in tracking.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the service did not settle in {timeout} s: {pending[0]} "
                                 f"pending requests, store at {top[0]}, tracking {tracking}")
        time.sleep(0.5)


async def _campaign(cluster: Cluster, config: RunConfig) -> tuple[Any, str]:
    """The adversary's bad-input campaign (tests/adversary/campaign.py, another branch)."""
    if config.adversary_examples <= 0:
        return None, "not run (--adversary-examples 0)"
    try:
        from tests.adversary.campaign import run_campaign
    except ImportError as e:
        return None, f"not available on this branch ({e})"
    report = await run_campaign(http_url=cluster.http_url, manager_tokens=cluster.manager_tokens,
                                erp_token=cluster.erp_token,
                                bootstrap_servers=cluster.bootstrap_servers,
                                examples=config.adversary_examples, seed=config.seed)
    return report, ""


async def run(config: RunConfig) -> RunResult:
    started = time.monotonic()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the broker restarts on purpose
    rng = random.Random(config.seed)
    plan = schedule(rng, config.operations, config.rounds)
    print(f"fault run: seed {config.seed}, {config.operations} operations, "
          f"{len(plan)} faults (replay with --seed {config.seed})", flush=True)
    cluster = Cluster.create(config.request_ttl)
    history = History()
    probes: list[tuple[int | None, float]] = []
    try:
        await asyncio.to_thread(cluster.start)
        client = Client(ClientConfig(cluster.http_url, cluster.manager_tokens, cluster.erp_token,
                                     cluster.bootstrap_servers), history,
                        random.Random(rng.random()))
        await client.start()
        try:
            # A task group: a failed injection (a role that does not come back) cancels the
            # workers and fails the run, instead of leaving them retrying against it forever.
            async with asyncio.TaskGroup() as group:
                group.create_task(inject(cluster, client, history, plan, rng, probes))
                for _ in range(config.workers):
                    group.create_task(work(client, history, config.operations))
            campaign, campaign_error = await _campaign(cluster, config)
        finally:
            await client.close()
        await asyncio.to_thread(quiesce, cluster, config.request_ttl + 120)
        process_failures = cluster.check_processes()
        check = await asyncio.to_thread(
            check_all, history, cluster.database_url, cluster.pg.url("postgres"),
            cluster.pg.url("scratch_replay"), cluster.bootstrap_servers)
    except BaseException:
        for role, process in cluster.roles.items():
            print(f"--- {role} log tail:\n{process.tail(1500)}", file=sys.stderr)
        raise
    finally:
        codes = await asyncio.to_thread(cluster.stop, keep=config.keep)
    result = RunResult(config, history, check, process_failures, probes,
                       unknown=sum(op.outcome == UNKNOWN for op in history.ops),
                       server_errors=sum(s >= 500 and s != 503 for op in history.ops
                                         for s in op.statuses_seen),
                       campaign=campaign, campaign_error=campaign_error,
                       seconds=time.monotonic() - started)
    result.failures = judge(result, codes)
    return result


def judge(result: RunResult, exit_codes: dict[str, int | None]) -> list[str]:
    failures = list(result.check.violations) + list(result.process_failures)
    if result.unknown:
        failures.append(f"{result.unknown} operations never got an answer")
    if result.server_errors:
        failures.append(f"{result.server_errors} answers were 5xx other than 503")
    for status, seconds in result.pg_probes:
        if status != 503 or seconds > 10:
            failures.append(f"with PostgreSQL down a read got {status} after {seconds:.1f} s, "
                            "not a prompt 503")
    failures += [f"role {role} did not stop cleanly on Ctrl-C (status {code})"
                 for role, code in exit_codes.items() if code != 0]
    if result.campaign is not None:
        failures += result.campaign.failures
    return failures


def table(result: RunResult) -> str:
    ops, check = result.history.ops, result.check
    outcomes = Counter(op.outcome for op in ops)
    kinds = Counter(f"{op.kind}/{op.channel}" for op in ops)
    faults = Counter(f.kind for f in result.history.faults)
    rows: list[tuple[str, str]] = [
        ("seed", str(result.config.seed)),
        ("operations", f"{len(ops)} ({outcomes[OK]} ok, {outcomes[REFUSED]} refused by the "
                       f"rules, {outcomes[UNKNOWN]} unanswered)"),
        ("  by kind", ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))),
        ("  retried (answer lost or 503)", str(sum(op.attempts > 1 for op in ops))),
        ("  503 answers seen", str(sum(s == 503 for op in ops for s in op.statuses_seen))),
        ("faults injected", str(len(result.history.faults))),
        *[(f"  {kind}", str(n)) for kind, n in sorted(faults.items())],
        ("stored events", str(check.events)),
        ("reserve.events messages", f"{check.topic_messages} ({check.topic_duplicates} "
                                    "repeats, same event_id and content)"),
        ("order.status messages", str(check.status_messages)),
        ("commands lost", str(check.commands_lost)),
        ("effects doubled", str(check.effects_doubled)),
        ("invariant violations", str(check.invariant_violations)),
        ("5xx other than 503", str(result.server_errors)),
        ("processes that died for good", str(len(result.process_failures))),
    ]
    campaign = result.campaign
    if campaign is not None:
        rows += [("bad inputs tried", f"{campaign.tried} ("
                  + ", ".join(f"{k} {n}" for k, n in sorted(campaign.by_kind.items())) + ")"),
                 ("bad inputs refused cleanly", str(campaign.refused_cleanly))]
    else:
        rows += [("bad inputs tried", result.campaign_error),
                 ("bad inputs refused cleanly", result.campaign_error)]
    rows += [("duration", f"{result.seconds:.0f} s"),
             ("verdict", "PASS" if result.ok else f"FAIL ({len(result.failures)} failures)")]
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'guarantee / figure':<{width}} | value", f"|{'-' * (width + 2)}|------"]
    lines += [f"| {name:<{width}} | {value}" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.reliability",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--operations", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2, help="each kind of fault this often")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--request-ttl", type=float, default=20.0)
    parser.add_argument("--adversary-examples", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the run's data and logs")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    config = RunConfig(operations=args.operations, rounds=args.rounds, seed=seed,
                       workers=args.workers, request_ttl=args.request_ttl,
                       adversary_examples=args.adversary_examples, keep=args.keep)
    with contextlib.suppress(KeyboardInterrupt):
        result = asyncio.run(run(config))
        print(table(result))
        for failure in result.failures[:50]:
            print(f"FAIL: {failure}")
        return 0 if result.ok else 1
    return 130


if __name__ == "__main__":
    sys.exit(main())
