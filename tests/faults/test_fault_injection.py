"""Kill -9 of every role, a broker restart and a PostgreSQL restart under a mixed workload;
then the checker must prove every guarantee. ``FAULTS_SEED`` replays a run."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from tests.faults.reliability import FAULT_KINDS, RunConfig, run, table

pytestmark = pytest.mark.faults


def test_every_guarantee_holds_while_processes_and_servers_are_killed() -> None:
    seed = int(os.environ.get("FAULTS_SEED") or random.SystemRandom().randrange(10**6))
    print(f"fault-injection seed {seed} (FAULTS_SEED={seed} replays it)")
    config = RunConfig(operations=int(os.environ.get("FAULTS_OPERATIONS", "1500")), rounds=1,
                       seed=seed, adversary_examples=0)
    result = asyncio.run(run(config))
    print(table(result))
    assert sorted(f.kind for f in result.history.faults) == sorted(FAULT_KINDS)
    assert len(result.history.ops) >= config.operations
    assert sum(op.outcome == "ok" for op in result.history.ops) > config.operations // 2
    assert result.check.events > config.operations // 2
    assert result.pg_probes and all(status == 503 for status, _ in result.pg_probes)
    assert result.ok, f"seed {seed}:\n" + "\n".join(result.failures[:40])
