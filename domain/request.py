"""A reserve request: manager A asks manager B to move N units of B's reserve to A's order.

Its lifecycle is pending → given | declined | cancelled | expired, and every end is final.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import errors
from domain.ids import request_uuid

PENDING = "pending"
GIVEN = "given"
DECLINED = "declined"
CANCELLED = "cancelled"
EXPIRED = "expired"


class ReserveRequest(Aggregate):
    @staticmethod
    def create_id(request_key: str) -> UUID:
        return request_uuid(request_key)

    @event("ReserveRequested")
    def __init__(
        self,
        request_key: str,
        from_order_id: str,
        to_order_id: str,
        sku: str,
        warehouse: str,
        requested: int,
        requester: str,
        owner: str,
        from_order_number: str,
        from_order_date: datetime,
        to_order_number: str,
        requested_at: datetime,
        expires_at: datetime,
    ) -> None:
        self.from_order_id = from_order_id
        self.to_order_id = to_order_id
        self.sku = sku
        self.warehouse = warehouse
        self.requested = requested
        self.requester = requester
        self.owner = owner
        self.from_order_number = from_order_number
        self.from_order_date = from_order_date
        self.to_order_number = to_order_number
        self.requested_at = requested_at
        self.expires_at = expires_at
        self.status = PENDING
        self.given = 0
        self.reason: str | None = None

    @property
    def request_id(self) -> str:
        return str(self.id)

    @property
    def is_final(self) -> bool:
        return self.status != PENDING

    def guard_pending(self, now: datetime) -> None:
        if self.status != PENDING:
            raise errors.RequestNotPendingError(
                f"The request is already {self.status}; it cannot be answered again."
            )
        if now >= self.expires_at:
            raise errors.RequestExpiredError("The request has expired unanswered.")

    def guard_owner(self, actor: str) -> None:
        if actor != self.owner:
            raise errors.NotOwnerError("Only the owner of the reserve may answer this request.")

    def guard_can_give(self, quantity: int, actor: str, now: datetime) -> None:
        self.guard_owner(actor)
        self.guard_pending(now)
        if quantity < 1:
            raise errors.InvalidQuantityError("The quantity to give must be at least 1.")
        if quantity > self.requested:
            raise errors.ExceedsRequestedError(
                f"Only {self.requested} were requested; {quantity} cannot be given."
            )

    def give(self, quantity: int, actor: str, now: datetime) -> None:
        self.guard_can_give(quantity, actor, now)
        self._given(
            quantity=quantity,
            from_order_id=self.from_order_id,
            to_order_id=self.to_order_id,
            sku=self.sku,
            warehouse=self.warehouse,
        )

    def decline(self, reason: str, actor: str, now: datetime) -> None:
        self.guard_owner(actor)
        self.guard_pending(now)
        self._declined(reason=reason)

    def cancel(self, actor: str, now: datetime) -> None:
        if actor != self.requester:
            raise errors.NotRequesterError("Only the requester may cancel this request.")
        self.guard_pending(now)
        self._cancelled()

    def expire(self, now: datetime) -> None:
        if self.status != PENDING:
            raise errors.RequestNotPendingError(f"The request is already {self.status}.")
        if now < self.expires_at:
            raise errors.NotExpiredYetError("The request has not reached its expiry time.")
        self._expired()

    @event("ReserveGiven")
    def _given(self, quantity: int, from_order_id: str, to_order_id: str, sku: str,
               warehouse: str) -> None:
        self.status = GIVEN
        self.given = quantity

    @event("ReserveRequestDeclined")
    def _declined(self, reason: str) -> None:
        self.status = DECLINED
        self.reason = reason

    @event("ReserveRequestCancelled")
    def _cancelled(self) -> None:
        self.status = CANCELLED

    @event("ReserveRequestExpired")
    def _expired(self) -> None:
        self.status = EXPIRED
