"""An order's timeline, read from the event store: "why isn't my order green?".

The timeline holds every event of the order's own aggregate (ERP facts, reserve moves, status
changes) and of every reserve request that names the order, as asker or as owner, each with
who caused it. The requests are found through the 'requests' view and the reserve moves'
``request_id``s; their events and the order's come from the store itself, so the timeline is
exact even while the views catch up.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg_pool import ConnectionPool

from domain import errors
from domain.ids import event_uuid
from domain.order import CustomerOrder
from domain.request import PENDING, ReserveRequest
from services.eventstore import ReserveStore

ERP = "ERP connector"
SYSTEM = "system"


def _line(e: Any) -> str:
    return f"{e.quantity} × {e.sku} @ {e.warehouse}"


def _describe(e: Any, order: CustomerOrder, requests: dict[UUID, ReserveRequest]
              ) -> tuple[str, str, str]:
    """(who, kind of actor, what happened) for one event."""
    name = type(e).__name__
    if e.originator_id == order.id:
        if name == "OrderPlaced":
            lines = ", ".join(f"{ln['quantity']} × {ln['sku']} @ {ln['warehouse']}"
                              for ln in e.lines)
            return ERP, "erp", (f"order {e.number} of {e.date:%Y-%m-%d %H:%M:%S} placed for "
                                f"{e.partner}, manager {e.manager}: {lines}")
        if name in ("ReserveMovedOut", "ReserveMovedIn"):
            request = requests.get(UUID(e.request_id))
            who = request.owner if request is not None else "?"
            if name == "ReserveMovedOut":
                return who, "manager", f"gave {_line(e)} to order {e.to_order_id}"
            return who, "manager", f"received {_line(e)} from order {e.from_order_id}"
        if name == "OrderStatusChanged":
            return SYSTEM, "system", f"status {e.previous_status or '-'} → {e.status}"
        if name in ("ReservePlaced", "ReserveReleased"):
            verb = "reserved" if name == "ReservePlaced" else "released"
            return ERP, "erp", f"{verb} {_line(e)}"
        text = {"OrderShipped": "shipped: its reserves left with the goods",
                "OrderCancelled": "cancelled: its reserves were released"}.get(name, name)
        return ERP, "erp", text
    request = requests[e.originator_id]
    direction = ("from this order" if request.from_order_id == order.order_id
                 else "for this order")
    what = f"{request.requested} × {request.sku} @ {request.warehouse}"
    if name == "ReserveRequested":
        return e.requester, "manager", (
            f"asked {e.owner} for {what} {direction} (order {e.from_order_id} → "
            f"{e.to_order_id}), expires {e.expires_at:%Y-%m-%d %H:%M:%S %Z}")
    if name == "ReserveGiven":
        return request.owner, "manager", f"gave {e.quantity} of the {what} asked {direction}"
    if name == "ReserveRequestDeclined":
        return request.owner, "manager", f"declined {what} {direction}: {e.reason}"
    if name == "ReserveRequestCancelled":
        return request.requester, "manager", f"cancelled the request of {what} {direction}"
    if name == "ReserveRequestExpired":
        return SYSTEM, "system", f"the request of {what} {direction} expired unanswered"
    return SYSTEM, "system", name


def _open(request: ReserveRequest) -> dict[str, Any]:
    return {"request_id": request.request_id, "from_order_id": request.from_order_id,
            "to_order_id": request.to_order_id, "sku": request.sku,
            "warehouse": request.warehouse, "requested": request.requested,
            "requester": request.requester, "owner": request.owner,
            "requested_at": request.requested_at.isoformat(),
            "expires_at": request.expires_at.isoformat()}


class OrderHistory:
    def __init__(self, store: ReserveStore, pool: ConnectionPool[Any]) -> None:
        self.store = store
        self.pool = pool

    def _request_ids(self, order_id: str, events: list[Any]) -> set[UUID]:
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT request_id FROM rm_requests WHERE from_order_id = %s "
                                "UNION SELECT request_id FROM rm_requests WHERE "
                                "to_order_id = %s", (order_id, order_id)).fetchall()
        ids = {UUID(str(r[0])) for r in rows}
        ids.update(UUID(e.request_id) for e in events if hasattr(e, "request_id"))
        return ids

    def _events(self, aggregate_id: UUID) -> list[Any]:
        return [self.store.mapper.to_domain_event(s)
                for s in self.store.recorder.select_events(aggregate_id)]

    def order(self, order_id: str) -> dict[str, Any] | None:
        """The order's state, timeline (oldest first) and open requests; None if unknown."""
        order = self.store.find_order(order_id)
        if order is None:
            return None
        events = self._events(order.id)
        requests: dict[UUID, ReserveRequest] = {}
        for request_id in self._request_ids(order_id, events):
            try:
                requests[request_id] = self.store.get_request(str(request_id))
            except errors.RequestNotFoundError:
                continue
            events.extend(self._events(request_id))
        events.sort(key=lambda e: (e.timestamp, str(e.originator_id), e.originator_version))
        timeline = []
        for e in events:
            who, kind, what = _describe(e, order, requests)
            timeline.append({
                "at": e.timestamp.isoformat(), "type": type(e).__name__, "by": who,
                "by_kind": kind, "what": what,
                "quantity": getattr(e, "quantity", None),
                "request_id": (str(e.originator_id) if e.originator_id in requests
                               else getattr(e, "request_id", None)),
                "event_id": str(event_uuid(e.originator_id, e.originator_version)),
            })
        pending = [r for r in requests.values() if r.status == PENDING]
        pending.sort(key=lambda r: r.requested_at)
        return {
            "order_id": order.order_id, "number": order.number,
            "date": order.date.isoformat(), "partner": order.partner,
            "manager": order.manager, "status": order.status, "lines": order.lines_view(),
            "timeline": timeline,
            "open_requests": {
                "incoming": [_open(r) for r in pending if r.from_order_id == order_id],
                "outgoing": [_open(r) for r in pending if r.to_order_id == order_id],
            },
        }
