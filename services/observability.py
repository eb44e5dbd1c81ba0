"""Metrics (Prometheus) and readiness: what an operator sees of each running process.

Counters and histograms are updated where things happen (HTTP requests by
``prometheus-fastapi-instrumentator``, Kafka messages by FastStream's Prometheus middleware,
commands and refusals by the entry points). Lags come from a background :class:`Monitor` that
reads PostgreSQL and the broker every few seconds with short timeouts, so a scrape of
``/metrics`` only reads numbers already in memory and never hangs on a dead dependency.

Each process reports what it can see: a process without a broker (``bootstrap_servers`` empty)
has no consumer-lag, DLQ or broker-readiness figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge, disable_created_metrics
from psycopg_pool import ConnectionPool

from handlers.outcome import Outcome
from services.settings import SettingsError
from services.topics import DLQ

log = logging.getLogger(__name__)

RELAY_TRACKING = "relay"

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series

COMMANDS = Counter("reserves_commands_total", "Commands handled, by type, outcome and source.",
                   ["type", "outcome", "source"])
REFUSALS = Counter("reserves_refusals_total",
                   "Commands and ERP facts refused, by error code and source.",
                   ["code", "source"])
ERP_FACTS = Counter("reserves_erp_facts_total",
                    "ERP facts received, by outcome (accepted, duplicate, refused) and source.",
                    ["outcome", "source"])
STORE_POSITION = Gauge("reserves_store_position",
                       "The newest position of the event store's notification log.")
RELAY_LAG = Gauge("reserves_relay_lag_events",
                  "Stored events not yet published by the relay (newest position − relay's).")
PROJECTION_LAG = Gauge("reserves_projection_lag_events",
                       "Stored events not yet applied by a projection (newest position − its).",
                       ["projection"])
CONSUMER_LAG = Gauge("reserves_consumer_lag_messages",
                     "Messages of a topic not yet committed by a consumer group.",
                     ["topic", "group"])
DLQ_SIZE = Gauge("reserves_dlq_messages", "Messages held in reserve.dlq.")
UP = Gauge("reserves_dependency_up",
           "1 when the monitor's last look at a dependency (postgres, broker) succeeded.",
           ["dependency"])
CHECKED = Gauge("reserves_monitor_last_success_timestamp_seconds",
                "When the monitor last read a dependency's figures (Unix time).", ["dependency"])


def outcome_label(outcome: Outcome) -> str:
    if outcome.ok:
        return "ok"
    return "refused" if outcome.status < 500 else "failed"


def record_command(command_type: str, outcome: Outcome, source: str) -> None:
    """Counts and logs one handled command (source: ``http``, ``kafka``, ``timer``): the first
    log line of a command's correlation id."""
    label = outcome_label(outcome)
    COMMANDS.labels(command_type, label, source).inc()
    code = outcome.error.get("code", "unknown") if outcome.error is not None else None
    if code is not None:
        REFUSALS.labels(code, source).inc()
    log.info("%s from %s: %s %d%s", command_type, source, label, outcome.status,
             f" {code}" if code else "", extra={"command": command_type, "source": source,
                                                 "status": outcome.status, "code": code})


def record_erp(accepted: int, duplicates: int, source: str) -> None:
    ERP_FACTS.labels("accepted", source).inc(accepted)
    ERP_FACTS.labels("duplicate", source).inc(duplicates)
    log.info("ERP facts from %s: %d accepted, %d duplicates", source, accepted, duplicates,
             extra={"source": source, "accepted": accepted, "duplicates": duplicates})


def record_erp_refusal(code: str, facts: int, source: str) -> None:
    ERP_FACTS.labels("refused", source).inc(facts)
    REFUSALS.labels(code, source).inc()
    log.info("ERP facts from %s: %d refused, %s", source, facts, code,
             extra={"source": source, "refused": facts, "code": code})


@dataclass(frozen=True)
class MonitorSettings:
    """``RESERVES_MONITOR_INTERVAL`` (s, default 5), ``RESERVES_MONITOR_TIMEOUT`` (s, default 3),
    ``RESERVES_READY_MAX_PROJECTION_LAG`` (events, default 1000), ``RESERVES_MONITOR_GROUPS``
    (other consumer groups whose lag to report, ``group=topic,…``: e.g. the ERP connector's
    group on reserve.events, subscribers' groups on order.status)."""

    interval: float = 5.0
    timeout: float = 3.0
    ready_max_projection_lag: int = 1000
    groups: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MonitorSettings:
        env = os.environ if env is None else env
        return cls(
            interval=float(env.get("RESERVES_MONITOR_INTERVAL") or 5.0),
            timeout=float(env.get("RESERVES_MONITOR_TIMEOUT") or 3.0),
            ready_max_projection_lag=int(env.get("RESERVES_READY_MAX_PROJECTION_LAG") or 1000),
            groups=parse_groups(env.get("RESERVES_MONITOR_GROUPS") or ""),
        )


def parse_groups(raw: str) -> tuple[tuple[str, str], ...]:
    """``group=topic,group=topic`` → ((group, topic), …)."""
    pairs = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        group, sep, topic = item.partition("=")
        if not sep or not group.strip() or not topic.strip():
            raise SettingsError(f"RESERVES_MONITOR_GROUPS: {item!r} is not group=topic")
        pairs.append((group.strip(), topic.strip()))
    return tuple(pairs)


@dataclass
class StoreFigures:
    position: int
    tracking: dict[str, int]

    @property
    def projection_lags(self) -> dict[str, int]:
        return {name: max(0, self.position - pos) for name, pos in self.tracking.items()
                if name != RELAY_TRACKING}

    @property
    def relay_lag(self) -> int | None:
        pos = self.tracking.get(RELAY_TRACKING)
        return None if pos is None else max(0, self.position - pos)


@dataclass
class BrokerFigures:
    consumer_lag: dict[tuple[str, str], int] = field(default_factory=dict)
    dlq: int = 0


def read_store_figures(pool: ConnectionPool[Any], timeout: float) -> StoreFigures:
    """The tracking rows first, then the newest position: a lag is never negative."""
    with pool.connection(timeout=timeout) as conn:
        tracking = {str(name): int(pos) for name, pos in conn.execute(
            "SELECT name, position FROM rm_tracking").fetchall()}
        row = conn.execute("SELECT coalesce(max(notification_id), 0) FROM reserves_events"
                           ).fetchone()
    return StoreFigures(int(row[0]) if row else 0, tracking)


async def true_end_offsets(consumer: AIOKafkaConsumer, tps: list[TopicPartition],
                           wait_s: float) -> dict[TopicPartition, int]:
    """The offset after each partition's last record.

    ``end_offsets`` alone is not enough on Tansu, which answers the first offset of the last
    record batch + 1 (BROKER-NOTES). So each non-empty partition is read from that offset − 1
    and the last record seen there sets the end. On Apache Kafka both agree.
    """
    ends: dict[TopicPartition, int] = dict(await consumer.end_offsets(tps))
    probe = [tp for tp in tps if ends[tp] > 0]
    if not probe:
        return ends
    consumer.assign(probe)
    try:
        for tp in probe:
            consumer.seek(tp, ends[tp] - 1)
        waiting = set(probe)
        deadline = time.monotonic() + wait_s
        while waiting and time.monotonic() < deadline:  # a partition left waiting keeps its
            batches = await consumer.getmany(*waiting, timeout_ms=100)  # figure
            for tp, records in batches.items():
                if records:
                    ends[tp] = max(ends[tp], records[-1].offset + 1)
                    waiting.discard(tp)
    finally:
        consumer.unsubscribe()  # no fetching in the background between rounds
    return ends


class Monitor:
    """Reads the figures behind the lag metrics every ``interval`` and answers ``/ready``."""

    def __init__(self, pool: ConnectionPool[Any], bootstrap_servers: str | None,
                 groups: Mapping[str, str] | None = None,
                 settings: MonitorSettings | None = None) -> None:
        self.pool = pool
        self.bootstrap_servers = bootstrap_servers or None
        self.settings = settings or MonitorSettings()
        # consumer group → the topic it consumes: ours, and those named in the settings
        self.groups = {**dict(groups or {}), **dict(self.settings.groups)}
        self._reader: AIOKafkaConsumer | None = None
        self._group_readers: dict[str, AIOKafkaConsumer] = {}
        self._down_since: dict[str, float] = {}
        self._starting = asyncio.Lock()  # /ready and the loop may both need a reader at once

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                await self.refresh()
                await asyncio.sleep(self.settings.interval)
        finally:
            await self.close()

    async def refresh(self) -> None:
        """Updates the gauges; a dependency that fails or is slow is marked down, its figures
        dropped (no stale lag), and tried again next round."""
        timeout = self.settings.timeout
        try:
            store = await asyncio.wait_for(
                asyncio.to_thread(read_store_figures, self.pool, timeout), timeout * 2)
        except Exception as e:
            self._down("postgres", e)
            for gauge in (STORE_POSITION, RELAY_LAG):
                gauge.set(float("nan"))
            PROJECTION_LAG.clear()
        else:
            self._up("postgres")
            STORE_POSITION.set(store.position)
            relay = store.relay_lag
            RELAY_LAG.set(float("nan") if relay is None else relay)
            for name, lag in store.projection_lags.items():
                PROJECTION_LAG.labels(name).set(lag)
        if self.bootstrap_servers is None:
            return
        try:
            broker = await asyncio.wait_for(self.read_broker_figures(), timeout * 2)
        except Exception as e:
            self._down("broker", e)
            await self._drop_readers()
            CONSUMER_LAG.clear()
            DLQ_SIZE.set(float("nan"))
        else:
            self._up("broker")
            for (topic, group), lag in broker.consumer_lag.items():
                CONSUMER_LAG.labels(topic, group).set(lag)
            DLQ_SIZE.set(broker.dlq)

    def _up(self, dependency: str) -> None:
        if self._down_since.pop(dependency, None) is not None:
            log.info("monitor: %s figures readable again", dependency)
        UP.labels(dependency).set(1)
        CHECKED.labels(dependency).set(time.time())

    def _down(self, dependency: str, e: BaseException) -> None:
        if dependency not in self._down_since:
            self._down_since[dependency] = time.time()
            log.warning("monitor: cannot read %s figures: %s", dependency, _reason(e))
        UP.labels(dependency).set(0)

    # -- the broker -------------------------------------------------------------------------

    async def _started(self, group: str | None = None) -> AIOKafkaConsumer:
        """Long-lived consumers: one that reads offsets, and one per group that only asks for
        its committed offsets (it never subscribes, so it never joins the group)."""
        async with self._starting:
            return await self._start(group)

    async def _start(self, group: str | None) -> AIOKafkaConsumer:
        existing = self._reader if group is None else self._group_readers.get(group)
        if existing is not None:
            return existing
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers, group_id=group,
                                    enable_auto_commit=False, fetch_max_wait_ms=50,
                                    request_timeout_ms=int(self.settings.timeout * 1000))
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        if group is None:
            self._reader = consumer
        else:
            self._group_readers[group] = consumer
        return consumer

    async def read_broker_figures(self) -> BrokerFigures:
        reader = await self._started()
        await reader.topics()  # fresh metadata: partitions of topics created meanwhile
        topics = {DLQ, *self.groups.values()}
        tps = [TopicPartition(t, p) for t in sorted(topics)
               for p in sorted(reader.partitions_for_topic(t) or ())]
        begins = await reader.beginning_offsets(tps)
        ends = await true_end_offsets(reader, tps, self.settings.timeout)
        figures = BrokerFigures(dlq=sum(ends[tp] - begins[tp] for tp in tps if tp.topic == DLQ))
        for group, topic in sorted(self.groups.items()):
            committer = await self._started(group)
            lag = 0
            for tp in (tp for tp in tps if tp.topic == topic):
                committed = await committer.committed(tp)
                lag += max(0, ends[tp] - (begins[tp] if committed is None else committed))
            figures.consumer_lag[(topic, group)] = lag
        return figures

    async def _drop_readers(self) -> None:
        readers = [r for r in (self._reader, *self._group_readers.values()) if r is not None]
        self._reader, self._group_readers = None, {}
        for reader in readers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.stop(), self.settings.timeout)

    async def close(self) -> None:
        await self._drop_readers()

    # -- readiness --------------------------------------------------------------------------

    async def readiness(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """Live checks, each bounded by the timeout: PostgreSQL answers and every projection
        is within ``ready_max_projection_lag`` events of the store; the broker answers."""
        timeout = self.settings.timeout
        checks: dict[str, dict[str, Any]] = {}
        try:
            store = await asyncio.wait_for(
                asyncio.to_thread(read_store_figures, self.pool, timeout), timeout + 0.5)
        except Exception as e:
            checks["postgres"] = {"ok": False, "error": _reason(e)}
        else:
            checks["postgres"] = {"ok": True}
            bound = self.settings.ready_max_projection_lag
            lags = store.projection_lags
            behind = {name: lag for name, lag in lags.items() if lag > bound}
            checks["projections"] = {"ok": not behind, "lag": lags, "max_lag": bound}
            if behind:
                checks["projections"]["error"] = (
                    "behind the event store by more than the bound: "
                    + ", ".join(f"{n} {lag}" for n, lag in sorted(behind.items())))
        if self.bootstrap_servers is not None:
            try:
                reader = await asyncio.wait_for(self._started(), timeout)
                await asyncio.wait_for(reader.topics(), timeout)
            except Exception as e:
                await self._drop_readers()
                checks["broker"] = {"ok": False, "error": _reason(e)}
            else:
                checks["broker"] = {"ok": True}
        return all(c["ok"] for c in checks.values()), checks


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "no answer within the timeout"
    return f"{type(e).__name__}: {e}"[:300]

