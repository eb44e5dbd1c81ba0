"""Rules that span aggregates: asking for a reserve and giving it.

Giving changes the request and both orders; the caller saves all three in one atomic save.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from domain import errors
from domain.order import CustomerOrder
from domain.request import ReserveRequest


def request_reserve(
    *,
    request_key: str,
    from_order: CustomerOrder,
    to_order: CustomerOrder,
    sku: str,
    warehouse: str,
    quantity: int,
    actor: str,
    now: datetime,
    ttl: timedelta,
) -> ReserveRequest:
    """The manager of ``to_order`` asks the owner of ``from_order`` for ``quantity`` units.

    ``request_key`` names the request for good (a client's idempotency key or a fresh uuid),
    so a repeated command lands on the same request.
    """
    if from_order.id == to_order.id:
        raise errors.SameOrderError("A reserve cannot be requested from the same order.")
    if quantity < 1:
        raise errors.InvalidQuantityError("The quantity requested must be at least 1.")
    if actor != to_order.manager:
        raise errors.NotYourOrderError(
            f"Customer order {to_order.number} is not yours; only its manager may request for it."
        )
    if from_order.manager == actor:
        raise errors.OwnReserveError(
            f"Customer order {from_order.number} is yours already; move the reserve in the ERP."
        )
    from_order.guard_active()
    to_order.guard_active()
    from_order.guard_line(warehouse, sku)
    held = from_order.held(warehouse, sku)
    if quantity > held:
        raise errors.InsufficientReserveError(
            f"Customer order {from_order.number} holds only {held} of {sku} "
            f"at warehouse {warehouse}."
        )
    to_order.guard_can_receive(warehouse, sku, quantity)
    return ReserveRequest(
        request_key=request_key,
        from_order_id=from_order.order_id,
        to_order_id=to_order.order_id,
        sku=sku,
        warehouse=warehouse,
        requested=quantity,
        requester=actor,
        owner=from_order.manager,
        from_order_number=from_order.number,
        from_order_date=from_order.date,
        to_order_number=to_order.number,
        requested_at=now,
        expires_at=now + ttl,
    )


def give_reserve(
    *,
    request: ReserveRequest,
    from_order: CustomerOrder,
    to_order: CustomerOrder,
    quantity: int | None,
    actor: str,
    now: datetime,
) -> int:
    """Moves ``quantity`` (default: all requested) from the owner's order to the requester's.

    Returns the quantity given. On hand, total reserved and free are unchanged by the move.
    Every rule is checked before anything is recorded, so a refusal changes nothing.
    """
    n = request.requested if quantity is None else quantity
    request.guard_can_give(n, actor, now)
    from_order.guard_can_release(request.warehouse, request.sku, n)
    to_order.guard_can_receive(request.warehouse, request.sku, n)
    request.give(n, actor, now)
    from_order.move_out(request.warehouse, request.sku, n, request.request_id, to_order.order_id)
    to_order.move_in(request.warehouse, request.sku, n, request.request_id, from_order.order_id)
    return n
