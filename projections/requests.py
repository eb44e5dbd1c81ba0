"""The 'requests' projection: rm_requests and the managers' inboxes (rm_inbox).

Like the 'orders' projection, a batch loads the requests it touches with one query, applies
its events in memory in log order and writes the changed rows back with one statement per
table. Inbox messages take ids derived from their event, so a replay writes the same ids.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid5

from psycopg import Cursor

from domain import messages
from domain.ids import event_uuid
from projections.batch import Item, upsert

NAME = "requests"
TABLES = ("rm_requests", "rm_inbox")
EVENTS = frozenset({"ReserveRequested", "ReserveGiven", "ReserveRequestDeclined",
                    "ReserveRequestCancelled", "ReserveRequestExpired"})
_COLUMNS = ("request_id", "status", "from_order_id", "to_order_id", "sku", "warehouse",
            "requested", "given", "requester", "owner", "reason", "from_order_number",
            "from_order_date", "to_order_number", "requested_at", "expires_at")
_TYPES = ("text", "text", "text", "text", "text", "text", "bigint", "bigint", "text", "text",
          "text", "text", "timestamp", "text", "timestamptz", "timestamptz")
_INBOX = ("id", "manager", "kind", "text", "request_id", "created_at", "position")
_INBOX_TYPES = ("text", "text", "text", "text", "text", "timestamptz", "bigint")


def _message(inbox: list[tuple[Any, ...]], e: Any, position: int, manager: str, kind: str,
             text: str, suffix: str = "") -> None:
    """One message to one manager; its id is derived from the event (and ``suffix`` when one
    event tells two people)."""
    event_id = event_uuid(e.originator_id, e.originator_version)
    message_id = str(uuid5(event_id, suffix)) if suffix else str(event_id)
    inbox.append((message_id, manager, kind, text, str(e.originator_id), e.timestamp, position))


def _apply(r: dict[str, Any], inbox: list[tuple[Any, ...]], position: int, type_name: str,
           e: Any) -> None:
    if type_name == "ReserveGiven":
        r.update(status="given", given=e.quantity)
        _message(inbox, e, position, r["requester"], "reserve_given", messages.success_text(
            e.quantity, r["sku"], r["from_order_number"], r["from_order_date"]))
        _message(inbox, e, position, r["owner"], "reserve_given_out", messages.given_out_text(
            e.quantity, r["sku"], r["from_order_number"], r["to_order_number"], r["requester"]),
            suffix="owner")
    elif type_name == "ReserveRequestDeclined":
        r.update(status="declined", reason=e.reason)
        _message(inbox, e, position, r["requester"], "reserve_declined", messages.declined_text(
            r["owner"], r["requested"], r["sku"], r["from_order_number"], e.reason))
    elif type_name == "ReserveRequestCancelled":
        r["status"] = "cancelled"
        _message(inbox, e, position, r["owner"], "request_cancelled", messages.cancelled_text(
            r["requester"], r["requested"], r["sku"], r["from_order_number"]))
    elif type_name == "ReserveRequestExpired":
        r["status"] = "expired"
        _message(inbox, e, position, r["requester"], "request_expired", messages.expired_text(
            r["requested"], r["sku"], r["from_order_number"]))


def apply(cur: Cursor[Any], items: list[Item], cache: Any = None) -> None:
    """Applies a batch of this projection's events, in log order."""
    if not items:
        return
    made = {str(e.originator_id) for _, e, t in items if t == "ReserveRequested"}
    ids = list({str(e.originator_id) for _, e, _ in items} - made)  # made ones: not stored yet
    cur.execute(f"SELECT {', '.join(_COLUMNS)} FROM rm_requests "  # noqa: S608 - our names
                "WHERE request_id = ANY(%s)", (ids,))
    rows = {row[0]: dict(zip(_COLUMNS, row, strict=True)) for row in cur.fetchall()}
    dirty: set[str] = set()
    inbox: list[tuple[Any, ...]] = []
    for position, e, type_name in items:
        request_id = str(e.originator_id)
        if type_name == "ReserveRequested":
            rows[request_id] = {
                "request_id": request_id, "status": "pending", "from_order_id": e.from_order_id,
                "to_order_id": e.to_order_id, "sku": e.sku, "warehouse": e.warehouse,
                "requested": e.requested, "given": 0, "requester": e.requester,
                "owner": e.owner, "reason": None, "from_order_number": e.from_order_number,
                "from_order_date": e.from_order_date, "to_order_number": e.to_order_number,
                "requested_at": e.requested_at, "expires_at": e.expires_at}
            _message(inbox, e, position, e.owner, "reserve_requested", messages.request_text(
                e.requester, e.requested, e.sku, e.warehouse, e.from_order_number,
                e.to_order_number))
        else:
            row = rows.get(request_id)
            assert row is not None, f"request {request_id} projected before it was made"
            _apply(row, inbox, position, type_name, e)
        dirty.add(request_id)
    upsert(cur, "rm_requests", _COLUMNS, _TYPES,
           [tuple(rows[i][c] for c in _COLUMNS) for i in dirty],
           conflict=("request_id",), update=("status", "given", "reason"))
    upsert(cur, "rm_inbox", _INBOX, _INBOX_TYPES, inbox, conflict=("id",))
