"""Command handlers: load, call one domain rule, save; idempotent by key.

The handler table at the bottom is the map of what the exchange can be asked to do.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar, cast
from uuid import uuid4

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import RecordConflictError

from domain import commands as c
from domain.errors import DomainError
from domain.exchange import give_reserve, request_reserve
from handlers.outcome import Outcome, error_body, fingerprint, refusal
from services.eventstore import DuplicateReceiptError, Receipt, ReserveStore

MAX_ATTEMPTS = 30
SYSTEM_ACTOR = "system"
T = TypeVar("T")

Decision = tuple[Outcome, list[Aggregate]]


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- what a command asks of the store -------------------------------------------------------
# A command's flow (load, decide, save, retry) is written once, as a generator that yields
# these and is sent their results (or thrown their errors); :meth:`CommandHandler.execute`
# performs them on the calling thread's connections, :meth:`CommandHandler.execute_async` on
# an event loop's (services/async_store.py). Neither can change what a command does.
# Each store operation's ``on`` calls the method of that name, which both stores have: on
# ReserveStore it returns the result, on AsyncStore a coroutine of it.

@dataclass(frozen=True, slots=True)
class LoadRequest:
    request_id: str

    def on(self, store: Any) -> Any:
        return store.get_request(self.request_id)


@dataclass(frozen=True, slots=True)
class LoadOrders:
    order_ids: tuple[str, ...]

    def on(self, store: Any) -> Any:
        return store.get_orders(*self.order_ids)


@dataclass(frozen=True, slots=True)
class ReadReceipt:
    key: str

    def on(self, store: Any) -> Any:
        return store.receipt(self.key)


@dataclass(frozen=True, slots=True)
class StoreRefusal:
    receipt: Receipt

    def on(self, store: Any) -> Any:
        return store.store_refusal(self.receipt)


@dataclass(frozen=True, slots=True)
class SaveAll:
    aggregates: list[Aggregate]
    receipts: list[Receipt]

    def on(self, store: Any) -> Any:
        return store.save_all(self.aggregates, self.receipts)


@dataclass(frozen=True, slots=True)
class Backoff:
    seconds: float


Op = LoadRequest | LoadOrders | ReadReceipt | StoreRefusal | SaveAll | Backoff
Flow = Generator[Op, Any, T]
Step = tuple[Any, Exception | None]  # an operation's result, or the error it raised


class AsyncStoreProtocol(Protocol):
    async def get_request(self, request_id: str) -> Any: ...
    async def get_orders(self, *order_ids: str) -> list[Any]: ...
    async def receipt(self, key: str) -> Receipt | None: ...
    async def store_refusal(self, receipt: Receipt) -> bool: ...
    async def save_all(self, aggregates: list[Aggregate], receipts: Sequence[Receipt]) -> None:
        ...


def backoff_seconds(attempt: int) -> float:
    """A short, jittered pause before retrying a save that lost a race."""
    return random.uniform(0, 0.002 * (attempt + 1))  # noqa: S311 - jitter, not crypto


def backoff(attempt: int) -> None:
    time.sleep(backoff_seconds(attempt))


class RetriesExhaustedError(Exception):
    """Concurrent writers kept winning; the caller may try again."""


class CommandHandler:
    def __init__(self, store: ReserveStore, request_ttl: timedelta,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.ttl = request_ttl
        self.clock = clock
        self._table: dict[type, Callable[[Any, str, str | None], Flow[Decision]]] = {
            c.RequestReserve: self._request,
            c.GiveReserve: self._give,
            c.DeclineReserveRequest: self._decline,
            c.CancelReserveRequest: self._cancel,
            c.ExpireReserveRequest: self._expire,
        }

    def execute(self, command: c.Command, actor: str, key: str | None = None) -> Outcome:
        """Runs ``command`` for ``actor`` on this thread. With ``key``, a repeat returns the
        first outcome."""
        flow = self._flow(command, actor, key)
        step: Step = (None, None)
        while not isinstance(op := _advance(flow, step), Outcome):
            try:
                step = (self._perform(op), None)
            except Exception as e:
                step = (None, e)
        return op

    async def execute_async(self, command: c.Command, actor: str, key: str | None,
                            store: AsyncStoreProtocol) -> Outcome:
        """:meth:`execute` with its reads and writes awaited on ``store``'s event loop."""
        flow = self._flow(command, actor, key)
        step: Step = (None, None)
        while not isinstance(op := _advance(flow, step), Outcome):
            try:
                step = (await _perform_async(op, store), None)
            except Exception as e:
                step = (None, e)
        return op

    def _perform(self, op: Op) -> Any:
        if isinstance(op, Backoff):
            return time.sleep(op.seconds)
        return op.on(self.store)

    def _flow(self, command: c.Command, actor: str, key: str | None) -> Flow[Outcome]:
        """Loads, decides and saves, again from a fresh load when a concurrent writer won the
        race, so the loser sees the state the winner left and is refused by the rules if the
        reserve no longer suffices."""
        digest = fingerprint({"type": type(command).__name__, "actor": actor, **asdict(command)})
        for attempt in range(MAX_ATTEMPTS):
            # The stored answer is looked up only after a first try was refused a write: the
            # receipt is saved with the events, in one transaction that refuses a key stored
            # before (DuplicateReceiptError), and a refusal's receipt likewise (store_refusal
            # is False), so a repeat never writes anything twice; it costs one more pass, and
            # every first request one round trip less.
            if key is not None and attempt > 0:
                stored = yield ReadReceipt(key)
                if stored is not None:
                    return self._replay(stored, digest)
            try:
                outcome, aggregates = yield from self._table[type(command)](command, actor, key)
            except DomainError as e:
                outcome = refusal(e)
                if key is None or (yield StoreRefusal(
                    Receipt(key, digest, outcome.status, outcome.body)
                )):
                    return outcome
                continue  # a concurrent twin stored its answer first: return that
            receipts = [] if key is None else [Receipt(key, digest, outcome.status, outcome.body)]
            try:
                yield SaveAll(aggregates, receipts)
            except DuplicateReceiptError:
                continue  # answered before: the next pass reads that answer
            except RecordConflictError:
                yield Backoff(backoff_seconds(attempt))
                continue
            return outcome
        raise RetriesExhaustedError(f"{type(command).__name__} lost {MAX_ATTEMPTS} races in a row")

    @staticmethod
    def _replay(stored: Receipt, digest: str) -> Outcome:
        if stored.fingerprint != digest:
            return Outcome(422, error_body(
                "idempotency_key_reused",
                "This idempotency key was used before for a different command.",
            ))
        return Outcome(stored.status, stored.body)

    # -- the handler table's entries ---------------------------------------------------------

    def _request(self, cmd: c.RequestReserve, actor: str, key: str | None) -> Flow[Decision]:
        to_order, from_order = yield LoadOrders((cmd.to_order_id, cmd.from_order_id))
        request = request_reserve(
            request_key=key or str(uuid4()), from_order=from_order, to_order=to_order,
            sku=cmd.sku, warehouse=cmd.warehouse, quantity=cmd.quantity, actor=actor,
            now=self.clock(), ttl=self.ttl,
        )
        return Outcome(201, {"request_id": request.request_id, "status": request.status}), [request]

    def _give(self, cmd: c.GiveReserve, actor: str, key: str | None) -> Flow[Decision]:
        request = yield LoadRequest(cmd.request_id)
        request.guard_owner(actor)
        from_order, to_order = yield LoadOrders((request.from_order_id, request.to_order_id))
        given = give_reserve(request=request, from_order=from_order, to_order=to_order,
                             quantity=cmd.quantity, actor=actor, now=self.clock())
        body = {"request_id": request.request_id, "status": request.status, "given": given}
        return Outcome(200, body), [request, from_order, to_order]

    def _decline(self, cmd: c.DeclineReserveRequest, actor: str, key: str | None) -> Flow[Decision]:
        request = yield LoadRequest(cmd.request_id)
        request.decline(cmd.reason, actor, self.clock())
        return Outcome(200, {"request_id": request.request_id, "status": request.status}), [request]

    def _cancel(self, cmd: c.CancelReserveRequest, actor: str, key: str | None) -> Flow[Decision]:
        request = yield LoadRequest(cmd.request_id)
        request.cancel(actor, self.clock())
        return Outcome(200, {"request_id": request.request_id, "status": request.status}), [request]

    def _expire(self, cmd: c.ExpireReserveRequest, actor: str, key: str | None) -> Flow[Decision]:
        request = yield LoadRequest(cmd.request_id)
        request.expire(self.clock())
        return Outcome(200, {"request_id": request.request_id, "status": request.status}), [request]


def _advance(flow: Flow[Outcome], step: Step) -> Op | Outcome:
    """Sends ``flow`` the result of its last operation, or throws it that operation's error;
    returns its next operation, or its outcome once it has ended."""
    result, error = step
    try:
        return flow.send(result) if error is None else flow.throw(error)
    except StopIteration as done:
        return cast(Outcome, done.value)


async def _perform_async(op: Op, store: AsyncStoreProtocol) -> Any:
    if isinstance(op, Backoff):
        return await asyncio.sleep(op.seconds)
    return await op.on(store)
