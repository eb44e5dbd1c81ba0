"""The history a workload records: every operation, what was sent, what came back, and when."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

OK, REFUSED, UNKNOWN = "ok", "refused", "unknown"


@dataclass
class Op:
    """One client operation: an ERP batch or a command, over HTTP or Kafka.

    ``outcome`` is ``ok`` (a success answer), ``refused`` (a 4xx / ``ok: false`` answer) or
    ``unknown`` (no answer before the client gave up: it may or may not have taken effect).
    """

    index: int
    kind: str  # place, reserve, release, ship, cancel_order, level, request, give, decline, cancel
    channel: str  # http, kafka
    key: str  # Idempotency-Key, command_id, or the batch's first event_id
    payload: Any
    actor: str = ""
    started: float = field(default_factory=time.monotonic)
    ended: float = 0.0
    attempts: int = 0
    status: int | None = None
    answer: Any = None
    outcome: str = UNKNOWN
    statuses_seen: list[int] = field(default_factory=list)

    def finish(self, status: int | None, answer: Any, outcome: str) -> None:
        self.status, self.answer, self.outcome = status, answer, outcome
        self.ended = time.monotonic()


@dataclass
class Fault:
    kind: str  # kill:<role>, broker-restart, pg-restart
    at_op: int
    started: float
    ended: float = 0.0
    note: str = ""


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    grew: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, op: Op) -> Op:
        self.ops.append(op)
        self.grew.set()
        return op

    def done(self) -> int:
        return sum(1 for op in self.ops if op.ended)
