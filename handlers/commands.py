"""Command handlers: load, call one domain rule, save; idempotent by key.

The handler table at the bottom is the map of what the exchange can be asked to do.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any
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

Decision = tuple[Outcome, list[Aggregate]]


def utcnow() -> datetime:
    return datetime.now(UTC)


def backoff(attempt: int) -> None:
    """A short, jittered pause before retrying a save that lost a race."""
    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311 - jitter, not crypto


class RetriesExhaustedError(Exception):
    """Concurrent writers kept winning; the caller may try again."""


class CommandHandler:
    def __init__(self, store: ReserveStore, request_ttl: timedelta,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.ttl = request_ttl
        self.clock = clock
        self._table: dict[type, Callable[[Any, str, str | None], Decision]] = {
            c.RequestReserve: self._request,
            c.GiveReserve: self._give,
            c.DeclineReserveRequest: self._decline,
            c.CancelReserveRequest: self._cancel,
            c.ExpireReserveRequest: self._expire,
        }

    def execute(self, command: c.Command, actor: str, key: str | None = None) -> Outcome:
        """Runs ``command`` for ``actor``. With ``key``, a repeat returns the first outcome.

        A version conflict with a concurrent writer is retried from a fresh load, so the
        loser of a race sees the state the winner left and is refused by the rules if the
        reserve no longer suffices.
        """
        digest = fingerprint({"type": type(command).__name__, "actor": actor, **asdict(command)})
        for attempt in range(MAX_ATTEMPTS):
            # The stored answer is looked up only after a first try was refused a write: the
            # receipt is saved with the events, in one transaction that refuses a key stored
            # before (DuplicateReceiptError), and a refusal's receipt likewise (store_refusal
            # is False), so a repeat never writes anything twice; it costs one more pass, and
            # every first request one round trip less.
            if key is not None and attempt > 0:
                stored = self.store.receipt(key)
                if stored is not None:
                    return self._replay(stored, digest)
            try:
                outcome, aggregates = self._table[type(command)](command, actor, key)
            except DomainError as e:
                outcome = refusal(e)
                if key is None or self.store.store_refusal(
                    Receipt(key, digest, outcome.status, outcome.body)
                ):
                    return outcome
                continue  # a concurrent twin stored its answer first: return that
            receipts = [] if key is None else [Receipt(key, digest, outcome.status, outcome.body)]
            try:
                self.store.save_all(aggregates, receipts)
            except DuplicateReceiptError:
                continue  # answered before: the next pass reads that answer
            except RecordConflictError:
                backoff(attempt)
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

    def _request(self, cmd: c.RequestReserve, actor: str, key: str | None) -> Decision:
        to_order, from_order = self.store.get_orders(cmd.to_order_id, cmd.from_order_id)
        request = request_reserve(
            request_key=key or str(uuid4()), from_order=from_order, to_order=to_order,
            sku=cmd.sku, warehouse=cmd.warehouse, quantity=cmd.quantity, actor=actor,
            now=self.clock(), ttl=self.ttl,
        )
        return Outcome(201, {"request_id": request.request_id, "status": request.status}), [request]

    def _give(self, cmd: c.GiveReserve, actor: str, key: str | None) -> Decision:
        request = self.store.get_request(cmd.request_id)
        request.guard_owner(actor)
        from_order, to_order = self.store.get_orders(request.from_order_id, request.to_order_id)
        given = give_reserve(request=request, from_order=from_order, to_order=to_order,
                             quantity=cmd.quantity, actor=actor, now=self.clock())
        body = {"request_id": request.request_id, "status": request.status, "given": given}
        return Outcome(200, body), [request, from_order, to_order]

    def _decline(self, cmd: c.DeclineReserveRequest, actor: str, key: str | None) -> Decision:
        request = self.store.get_request(cmd.request_id)
        request.decline(cmd.reason, actor, self.clock())
        return Outcome(200, {"request_id": request.request_id, "status": request.status}), [request]

    def _cancel(self, cmd: c.CancelReserveRequest, actor: str, key: str | None) -> Decision:
        request = self.store.get_request(cmd.request_id)
        request.cancel(actor, self.clock())
        return Outcome(200, {"request_id": request.request_id, "status": request.status}), [request]

    def _expire(self, cmd: c.ExpireReserveRequest, actor: str, key: str | None) -> Decision:
        request = self.store.get_request(cmd.request_id)
        request.expire(self.clock())
        return Outcome(200, {"request_id": request.request_id, "status": request.status}), [request]
