"""The composition root: builds every part from settings. No connection is made at import."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import REGISTRY
from psycopg_pool import ConnectionPool

from handlers.auth import Authenticator
from handlers.commands import CommandHandler
from handlers.erp import ErpIngest
from handlers.expiry import expire_due
from handlers.kafka_consumers import COMMANDS_GROUP, ERP_GROUP, register_consumers
from projections.history import OrderHistory
from projections.projector import PAGE as PROJECTOR_PAGE
from projections.projector import Projector, create_schema
from projections.queries import Views
from projections.relay import Relay, StoreListener
from services.consumer_watchdog import ConsumerWatchdog
from services.embedded import EmbeddedBroker, EmbeddedPostgres
from services.eventstore import ReserveStore, postgres_env
from services.observability import Monitor, MonitorSettings
from services.settings import ROLES, EventLoop, Settings
from services.topics import COMMANDS, ERP_EVENTS, ensure_topics
from services.tracing import CorrelationMiddleware

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.02
# The relay and the projector are woken by the store's NOTIFY; they still poll this often in
# case one is missed (and every IDLE_POLL_S while they cannot LISTEN).
FALLBACK_POLL_S = 1.0
# The projector runs at most this often unless it is behind by a full page: under a steady
# load it takes what 100 ms of commits stored in one transaction, idle it waits for the next
# NOTIFY. At 20 ms it ran back to back a give or two at a time: at 200 gives/s, 0.8 ms more
# of the service's CPU and 0.5 ms more of PostgreSQL's per give (docs/performance.md). The
# contract allows a view a second to show a command.
PROJECTOR_MIN_INTERVAL_S = 0.1
# The relay builds its own batches (closed at once: no linger); bigger ones mean fewer produce
# round trips when catching up. A partition's batch below Kafka's default max.message.bytes.
RELAY_BATCH_BYTES = 256 * 1024
# The relay writes its position (its checkpoint) at most this often: live, a page holds a
# give or two, and a write per page was a round trip and a commit per give. After a crash it
# publishes at most this much again (same ids); the relay-lag figures lag by as much.
RELAY_POSITION_EVERY_S = 0.1
ERROR_BACKOFF_S = 1.0
TOPIC_CHECK_S = 5.0
# Consumers notice a topic that came back (a broker restarted empty, the relay re-created it)
# only at a metadata refresh; aiokafka's default of 5 minutes would leave them idle that long.
METADATA_MAX_AGE_MS = 5_000
BROKER_ROLES = frozenset({"consumers", "relay"})


@dataclass
class Infrastructure:
    """The PostgreSQL and broker in use, embedded ones started when the variables are unset."""

    database_url: str
    bootstrap_servers: str
    embedded_pg: EmbeddedPostgres | None = None
    embedded_broker: EmbeddedBroker | None = None

    @classmethod
    def start(cls, settings: Settings, *, with_broker: bool = True) -> Infrastructure:
        """Starts whatever is embedded; ``with_broker=False`` is for tools that need only
        PostgreSQL (``bootstrap_servers`` is then empty unless the variable names one)."""
        pg = broker = None
        url = settings.database_url
        if url is None:
            pg = EmbeddedPostgres(settings.var_dir)
            url = pg.start()
        bootstrap = settings.kafka_bootstrap_servers or ""
        if not bootstrap and with_broker:
            broker = EmbeddedBroker(settings.var_dir)
            bootstrap = broker.start()
        return cls(url, bootstrap, pg, broker)

    def stop(self) -> None:
        if self.embedded_broker is not None:
            self.embedded_broker.stop()
        if self.embedded_pg is not None:
            self.embedded_pg.stop()


@dataclass
class Core:
    """The store, the views and the handlers: everything that needs only PostgreSQL."""

    settings: Settings
    database_url: str
    store: ReserveStore = field(init=False)
    pool: ConnectionPool[Any] = field(init=False)
    views: Views = field(init=False)
    commands: CommandHandler = field(init=False)
    erp: ErpIngest = field(init=False)
    auth: Authenticator = field(init=False)
    projector: Projector = field(init=False)
    history: OrderHistory = field(init=False)

    def __post_init__(self) -> None:
        self.store = ReserveStore(env=postgres_env(self.database_url))
        self.pool = ConnectionPool(self.database_url, min_size=1, max_size=16, open=True,
                                   timeout=3.0, kwargs={"autocommit": True, "connect_timeout": 3},
                                   check=ConnectionPool.check_connection)
        # One schema creator at a time (a session lock), each script committed on its own: a
        # transaction that held the DDL's table locks while it waited on a tracking row that a
        # running projector held deadlocked with that projector (a role restarting beside it).
        with self.pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(7412001)")
            try:
                create_schema(conn)
            finally:
                conn.execute("SELECT pg_advisory_unlock(7412001)")
        self.views = Views(self.pool)
        self.commands = CommandHandler(self.store, timedelta(seconds=self.settings.request_ttl))
        self.erp = ErpIngest(self.store)
        self.auth = Authenticator(self.settings.api_tokens, self.settings.erp_tokens)
        self.projector = Projector(self.store, self.pool)
        self.history = OrderHistory(self.store, self.pool)

    def close(self) -> None:
        self.pool.close()
        self.store.close()


async def loop_forever(name: str, step: Callable[[], Awaitable[int]], idle: float,
                       wait: Callable[[float], Awaitable[None]] | None = None,
                       min_interval: float = 0.0) -> None:
    """Runs ``step`` until cancelled: again at once while it has work, after ``idle`` when
    caught up (or when ``wait(idle)`` returns: woken early, but never sooner than
    ``min_interval`` after the start of the step that found nothing), after a back-off when it
    fails (a database restart, a broker restart)."""
    failing = False
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            done = await step()
            if failing:
                log.info("%s recovered", name)
                failing = False
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not failing:
                log.warning("%s failing, will retry: %s: %s", name, type(e).__name__, e)
            failing = True
            await asyncio.sleep(ERROR_BACKOFF_S)
            continue
        if not done:
            await (asyncio.sleep(idle) if wait is None else wait(idle))
            if (rest := started + min_interval - loop.time()) > 0:
                await asyncio.sleep(rest)


def _store_listener(core: Core) -> StoreListener:
    """A listener of the NOTIFY the event store's recorder sends in every transaction that
    stores events."""
    recorder: Any = core.store.recorder
    return StoreListener(core.pool, recorder.channel_name)


def _woken_by(listener: StoreListener) -> Callable[[float], Awaitable[None]]:
    """A ``loop_forever`` wait that ends when the store NOTIFYs, polling every IDLE_POLL_S
    while the listener cannot LISTEN."""
    async def wait(idle: float) -> None:
        await listener.wait(idle if listener.listening else IDLE_POLL_S)

    return wait


T = TypeVar("T")


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancels the tasks and waits until each has ended."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def event_loop_factory(name: EventLoop) -> Callable[[], asyncio.AbstractEventLoop]:
    """A new event loop of the kind ``Settings.event_loop`` names."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


class LoopThread:
    """An asyncio event loop running in a thread of its own (still this process)."""

    def __init__(self, name: str,
                 new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
                 ) -> None:
        self.loop = new_loop()
        self.thread = threading.Thread(target=self._run, name=f"{name}-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


class Service:
    """``reserves serve``: HTTP API, consumers, relay, projections and the expiry timer, or the
    ``roles`` named (the HTTP API itself is served by the CLI when "api" is among them)."""

    def __init__(self, settings: Settings, infra: Infrastructure,
                 roles: frozenset[str] = frozenset(ROLES)) -> None:
        self.settings = settings
        self.infra = infra
        self.roles = roles
        self.core = Core(settings, infra.database_url)
        self.producer: AIOKafkaProducer | None = None
        self.broker: KafkaBroker | None = None
        self.relay: Relay | None = None
        self.listener: StoreListener | None = None
        self.monitor = Monitor(self.core.pool, infra.bootstrap_servers,
                               {ERP_GROUP: ERP_EVENTS, COMMANDS_GROUP: COMMANDS},
                               MonitorSettings.from_env())
        self._tasks: list[asyncio.Task[None]] = []
        self.relay_loop: LoopThread | None = None
        self._relay_tasks: list[asyncio.Task[None]] = []

    async def start_background(self) -> None:
        s, core, roles = self.settings, self.core, self.roles
        if roles & BROKER_ROLES:
            await ensure_topics(self.infra.bootstrap_servers, s.kafka_partitions,
                                s.kafka_replication_factor)
        if "relay" in roles:
            # The relay runs on an event loop of its own, in its own thread: on the API's loop
            # it waited behind every HTTP request's async work and fell thousands of events
            # behind under load (and order.status with it). Its own thread gets the GIL in
            # turn like any other.
            self.relay_loop = LoopThread("relay", event_loop_factory(s.event_loop))
            await asyncio.wrap_future(self.relay_loop.submit(self._start_relay()))
        if "consumers" in roles:
            self.broker = KafkaBroker(self.infra.bootstrap_servers, logger=None,
                                      enable_idempotence=s.kafka_enable_idempotence,
                                      metadata_max_age_ms=METADATA_MAX_AGE_MS,
                                      middlewares=[CorrelationMiddleware,
                                                   KafkaPrometheusMiddleware(registry=REGISTRY)])
            register_consumers(self.broker, erp=core.erp, commands=core.commands,
                               managers=frozenset(s.api_tokens.values()),
                               session_timeout_ms=s.kafka_session_timeout_ms)
            await self.broker.start()
            self._tasks.append(asyncio.create_task(ConsumerWatchdog(self.broker).run()))
        if "projections" in roles:
            # Woken by the store's NOTIFY on a connection of its own (the relay's listener
            # lives on the relay's loop, and the roles may run apart): idle, it no longer polls
            # (a transaction, a commit and WAL for the tracking rows' locks, 50 times a second).
            listener = _store_listener(core)
            self._tasks.append(asyncio.create_task(listener.run()))

            async def project() -> int:
                listener.event.clear()  # before reading: what is stored from now on sets it
                read = await asyncio.to_thread(core.projector.run_once)
                # A page that was not full has caught up: the next run waits for a NOTIFY and
                # for the min interval, instead of running again at once for what one or two
                # commits stored meanwhile.
                return read if read >= PROJECTOR_PAGE else 0

            self._tasks.append(asyncio.create_task(loop_forever(
                "projections", project, FALLBACK_POLL_S, _woken_by(listener),
                min_interval=PROJECTOR_MIN_INTERVAL_S)))
        if "expiry" in roles:
            interval = max(0.2, min(5.0, s.request_ttl / 10))
            self._tasks.append(asyncio.create_task(loop_forever(
                "expiry", lambda: asyncio.to_thread(expire_due, core.commands,
                                                    core.views.due_requests), interval)))
        self._tasks.append(asyncio.create_task(self.monitor.run()))

    async def _start_relay(self) -> None:
        """On the relay's own loop: its producer, the listener of the store's NOTIFY, the relay
        and the topic check, as tasks of that loop."""
        s, core = self.settings, self.core
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.infra.bootstrap_servers, acks="all",
            enable_idempotence=s.kafka_enable_idempotence, linger_ms=1,
            max_batch_size=RELAY_BATCH_BYTES,
        )
        await self.producer.start()
        relay = self.relay = Relay(core.store, core.pool, self.producer,
                                   bootstrap_servers=self.infra.bootstrap_servers,
                                   position_every=RELAY_POSITION_EVERY_S)
        await relay.rewind_if_topic_lost()
        listener = self.listener = _store_listener(core)
        self._relay_tasks.append(asyncio.create_task(listener.run()))
        self._relay_tasks.append(asyncio.create_task(
            loop_forever("relay", self._relay_step(relay, listener),
                         FALLBACK_POLL_S, _woken_by(listener))))
        self._relay_tasks.append(asyncio.create_task(loop_forever(
            "relay topic check", lambda: self._check_topics(relay), TOPIC_CHECK_S)))

    async def _stop_relay(self) -> None:
        await cancel_all(self._relay_tasks)
        if self.relay is not None:
            await self.relay.stop()
        if self.producer is not None:
            await self.producer.stop()

    def _relay_step(self, relay: Relay, listener: StoreListener
                    ) -> Callable[[], Awaitable[int]]:
        """The relay's step. After a failure (the broker went away) it first re-creates lost
        topics and republishes what a broker that restarted empty has lost (the same check
        also runs every ``TOPIC_CHECK_S`` in a task of its own, off the path of a wake-up)."""
        state = {"healthy": True}

        async def step() -> int:
            if not state["healthy"]:
                await self._check_topics(relay)
                state["healthy"] = True
            try:
                return await relay.catch_up(listener.event)
            except Exception:
                state["healthy"] = False
                raise

        return step

    async def _check_topics(self, relay: Relay) -> int:
        """A broker may restart (empty) between two pages: topics back, lost events again."""
        s = self.settings
        await ensure_topics(self.infra.bootstrap_servers, s.kafka_partitions,
                            s.kafka_replication_factor)
        await relay.rewind_if_topic_lost()
        return 0

    async def stop_background(self) -> None:
        await cancel_all(self._tasks)
        if self.broker is not None:
            await self.broker.stop()
        if self.relay_loop is not None:
            await asyncio.wrap_future(self.relay_loop.submit(self._stop_relay()))
            self.relay_loop.stop()
            self.relay_loop = None

    def write_runtime_file(self) -> None:
        """Where a local tool (``make demo``) finds this running service."""
        s = self.settings
        info = {"http": f"http://{s.http_host}:{s.http_port}",
                "kafka_bootstrap_servers": self.infra.bootstrap_servers}
        path = s.var_dir / "runtime.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(info, indent=2))

    def close(self) -> None:
        self.core.close()
