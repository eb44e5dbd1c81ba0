"""The 'requests' projection: rm_requests and the managers' inboxes (rm_inbox).

Like the 'orders' projection, a batch loads the requests it touches with one query, applies
its events in memory in log order and writes the changed rows back with one statement per
table. Inbox messages take ids derived from their event, so a replay writes the same ids.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any
from uuid import uuid5

from psycopg import Cursor

from domain import messages
from domain.ids import event_uuid
from projections.batch import Item, Target, insert_new, upsert

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


class Cache:
    """The request rows a replay wrote, kept between its batches (see orders.Cache): the least
    recently used are forgotten beyond ``capacity``."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self.rows: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def fill(self, rows: dict[str, dict[str, Any]]) -> None:
        for request_id, row in rows.items():
            self.rows[request_id] = row
            self.rows.move_to_end(request_id)
        while len(self.rows) > self.capacity:
            self.rows.popitem(last=False)


def apply(cur: Cursor[Any], items: list[Item], cache: Cache | None = None,
          out: Target | None = None) -> None:
    """Applies a batch of this projection's events, in log order. With a ``cache`` (a replay,
    which owns its tables) the rows the batch creates are inserted with COPY. The other writes
    go to ``out`` (default: ``cur``, at once)."""
    if not items:
        return
    made = {str(e.originator_id) for _, e, t in items if t == "ReserveRequested"}
    wanted = {str(e.originator_id) for _, e, _ in items} - made  # made ones: not stored yet
    rows: dict[str, dict[str, Any]] = {}
    if cache is not None:
        for request_id in list(wanted):
            row = cache.rows.get(request_id)
            if row is not None:
                rows[request_id] = row
                wanted.discard(request_id)
    if wanted:
        cur.execute(f"SELECT {', '.join(_COLUMNS)} FROM rm_requests "  # noqa: S608 - our names
                    "WHERE request_id = ANY(%b::text[])", (list(wanted),))
        rows.update((row[0], dict(zip(_COLUMNS, row, strict=True))) for row in cur.fetchall())
    write: Target = cur if out is None else out
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
    changed = [tuple(rows[i][c] for c in _COLUMNS) for i in dirty]
    if cache is None:
        upsert(write, "rm_requests", _COLUMNS, _TYPES, changed,
               conflict=("request_id",), update=("status", "given", "reason"))
        upsert(write, "rm_inbox", _INBOX, _INBOX_TYPES, inbox, conflict=("id",))
        return
    insert_new(cur, "rm_requests", _COLUMNS, [r for r in changed if r[0] in made])
    upsert(write, "rm_requests", _COLUMNS, _TYPES, [r for r in changed if r[0] not in made],
           conflict=("request_id",), update=("status", "given", "reason"))
    insert_new(cur, "rm_inbox", _INBOX, inbox)
    cache.fill({i: rows[i] for i in dirty})
