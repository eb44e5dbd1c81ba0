"""Wire schemas (pydantic): what the contract's JSON looks like, turned into domain values.

These models live at the edge only; the domain never sees them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
)

from domain import commands as c
from domain import facts as f
from handlers.erp import Envelope
from handlers.outcome import fingerprint


def _no_nul(value: str) -> str:
    """PostgreSQL text cannot hold U+0000: refused here, at the edge, rather than stored in an
    event that no view could ever project."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


Text = AfterValidator(_no_nul)
Id = Annotated[str, StringConstraints(min_length=1, max_length=200), Text]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200), Text]
Quantity = Annotated[int, Field(strict=True, ge=1, le=1_000_000_000)]
Level = Annotated[int, Field(strict=True, ge=0, le=1_000_000_000)]
MAX_BATCH = 1000


def _wall_clock(value: datetime) -> datetime:
    """The contract's order date is a local date-time: keep the time as written, drop any
    offset, so no server's time zone can shift it (in the views or the success message)."""
    return value.replace(tzinfo=None)


LocalDateTime = Annotated[datetime, AfterValidator(_wall_clock)]


class MalformedJsonError(ValueError):
    """Bytes that are not UTF-8 JSON this service can read."""


def decode_json(raw: bytes) -> Any:
    """JSON from UTF-8 bytes. Every way it can fail is a ``MalformedJsonError``: invalid UTF-8
    or JSON, an integer of more digits than Python converts (``ValueError``), nesting deeper
    than the parser's recursion limit (``RecursionError``)."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise MalformedJsonError("it is not UTF-8") from None
    except json.JSONDecodeError as e:
        raise MalformedJsonError(f"it is not valid JSON: {e}") from None
    except ValueError:
        raise MalformedJsonError("it holds a number too long to read") from None
    except RecursionError:
        raise MalformedJsonError("it is nested too deeply") from None


def has_nul(*values: str) -> bool:
    """True if a path parameter holds U+0000, which no stored id can contain."""
    return any("\x00" in v for v in values)


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- ERP facts ----------------------------------------------------------------------------------

class StockLevelSetData(Wire):
    warehouse: Name
    sku: Name
    on_hand: Level

    def fact(self) -> f.Fact:
        return f.StockLevelSet(self.warehouse, self.sku, self.on_hand)


class LineData(Wire):
    sku: Name
    warehouse: Name
    quantity: Quantity


class CustomerOrderPlacedData(Wire):
    order_id: Id
    number: Name
    date: LocalDateTime
    partner: Name
    manager: Name
    lines: Annotated[list[LineData], Field(min_length=1, max_length=1000)]

    def fact(self) -> f.Fact:
        return f.CustomerOrderPlaced(
            self.order_id, self.number, self.date, self.partner, self.manager,
            tuple(f.OrderLineSpec(ln.sku, ln.warehouse, ln.quantity) for ln in self.lines),
        )


class ReserveData(Wire):
    order_id: Id
    sku: Name
    warehouse: Name
    quantity: Quantity


class ReservePlacedData(ReserveData):
    def fact(self) -> f.Fact:
        return f.ReservePlaced(self.order_id, self.sku, self.warehouse, self.quantity)


class ReserveReleasedData(ReserveData):
    def fact(self) -> f.Fact:
        return f.ReserveReleased(self.order_id, self.sku, self.warehouse, self.quantity)


class OrderShippedData(Wire):
    order_id: Id

    def fact(self) -> f.Fact:
        return f.OrderShipped(self.order_id)


class OrderCancelledData(Wire):
    order_id: Id

    def fact(self) -> f.Fact:
        return f.OrderCancelled(self.order_id)


FACT_DATA: dict[str, type[Any]] = {
    "StockLevelSet": StockLevelSetData,
    "CustomerOrderPlaced": CustomerOrderPlacedData,
    "ReservePlaced": ReservePlacedData,
    "ReserveReleased": ReserveReleasedData,
    "OrderShipped": OrderShippedData,
    "OrderCancelled": OrderCancelledData,
}

FactType = Literal["StockLevelSet", "CustomerOrderPlaced", "ReservePlaced", "ReserveReleased",
                   "OrderShipped", "OrderCancelled"]


class ErpEnvelope(Wire):
    event_id: Id
    type: FactType
    occurred_at: datetime
    data: dict[str, Any]

    def envelope(self) -> Envelope:
        data = FACT_DATA[self.type].model_validate(self.data)
        return Envelope(
            event_id=self.event_id,
            fact=data.fact(),
            fingerprint=fingerprint({"type": self.type, "data": data.model_dump(mode="json")}),
        )


class WireError(ValueError):
    """A message that fails the contract's schema; the sentence says where and why."""


def validation_message(e: ValidationError) -> str:
    first = e.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    more = e.error_count() - 1
    return f"{where}: {first.get('msg', 'is invalid')}" + (
        f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def parse_erp_body(raw: Any) -> list[Envelope]:
    """Validates one envelope or an array of 1 to 1,000; a bad one is named by its place."""
    if isinstance(raw, list):
        if not 1 <= len(raw) <= MAX_BATCH:
            raise WireError(f"A batch holds 1 to {MAX_BATCH} envelopes, not {len(raw)}.")
        items = raw
    elif isinstance(raw, dict):
        items = [raw]
    else:
        raise WireError("The body must be an envelope (a JSON object) or an array of them.")
    envelopes = []
    for index, item in enumerate(items, start=1):
        try:
            envelopes.append(ErpEnvelope.model_validate(item).envelope())
        except ValidationError as e:
            event_id = item.get("event_id") if isinstance(item, dict) else None
            named = f" ({event_id!r})" if isinstance(event_id, str) else ""
            raise WireError(f"Envelope #{index}{named}: {validation_message(e)}") from None
    return envelopes


# -- commands -----------------------------------------------------------------------------------

class RequestReserveBody(Wire):
    from_order_id: Id
    to_order_id: Id
    sku: Name
    warehouse: Name
    quantity: Quantity

    def command(self, request_id: str | None = None) -> c.Command:
        return c.RequestReserve(self.from_order_id, self.to_order_id, self.sku, self.warehouse,
                                self.quantity)


class GiveBody(Wire):
    quantity: Quantity | None = None

    def command(self, request_id: str | None = None) -> c.Command:
        assert request_id is not None
        return c.GiveReserve(request_id, self.quantity)


class DeclineBody(Wire):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000), Text]

    def command(self, request_id: str | None = None) -> c.Command:
        assert request_id is not None
        return c.DeclineReserveRequest(request_id, self.reason)


class CancelBody(Wire):
    def command(self, request_id: str | None = None) -> c.Command:
        assert request_id is not None
        return c.CancelReserveRequest(request_id)


class WithRequestId(Wire):
    request_id: Id


COMMAND_BODIES: dict[str, type[Any]] = {
    "RequestReserve": RequestReserveBody,
    "GiveReserve": GiveBody,
    "DeclineReserveRequest": DeclineBody,
    "CancelReserveRequest": CancelBody,
}


class CommandMessage(BaseModel):
    """A message on ``reserve.commands``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: Id
    type: Literal["RequestReserve", "GiveReserve", "DeclineReserveRequest",
                  "CancelReserveRequest"]
    actor: Name
    data: dict[str, Any]

    def command(self) -> c.Command:
        data = dict(self.data)
        request_id = None
        if self.type != "RequestReserve":
            request_id = WithRequestId.model_validate({"request_id": data.pop("request_id", None)}
                                                      ).request_id
        body = COMMAND_BODIES[self.type].model_validate(data)
        command: c.Command = body.command(request_id)
        return command


# -- documentation of what the service sends --------------------------------------------------
# The models below describe outgoing JSON (HTTP answers and the topics the relay and consumers
# publish). They feed the OpenAPI and AsyncAPI documents and docs/schemas/; the code that
# builds those messages is tested against them (tests/unit/test_contract_docs.py).

class Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorDetail(Out):
    code: str = Field(description="snake_case; the README lists every code by status")
    message: str = Field(description="a human sentence")


class ErrorBody(Out):
    """Every error answer (HTTP), and ``error`` in ``reserve.command-results``."""

    error: ErrorDetail


class ErpAccepted(Out):
    accepted: int = Field(description="envelopes applied by this call")
    duplicates: int = Field(description="envelopes whose event_id was seen before (no effect)")


class RequestAnswer(Out):
    """The answer to a command on a reserve request."""

    request_id: str
    status: Literal["pending", "given", "declined", "cancelled", "expired"]
    given: int | None = Field(default=None, description="only in the answer to a give")


class StockView(Out):
    warehouse: str
    sku: str
    on_hand: int
    reserved: int
    free: int = Field(description="on_hand − reserved; negative when the ERP over-reserved")


class ReserveHolder(Out):
    order_id: str
    number: str
    date: str = Field(description="ISO-8601 local date-time of the order")
    manager: str
    quantity: int


class ReservesView(Out):
    reserves: list[ReserveHolder] = Field(description="oldest order first")


class OrderLineView(Out):
    sku: str
    warehouse: str
    ordered: int
    reserved: int
    shortage: int = Field(description="ordered − reserved, 0 once the order is closed")


OrderStatus = Literal["new", "green", "shipped", "cancelled"]


class OrderView(Out):
    order_id: str
    number: str
    date: str
    partner: str
    manager: str
    status: OrderStatus
    lines: list[OrderLineView]


class RequestView(Out):
    request_id: str
    status: Literal["pending", "given", "declined", "cancelled", "expired"]
    from_order_id: str
    to_order_id: str
    sku: str
    warehouse: str
    requested: int
    given: int | None
    requester: str
    owner: str
    reason: str | None


class InboxMessage(Out):
    id: str
    kind: Literal["reserve_requested", "reserve_given", "reserve_given_out",
                  "reserve_declined", "request_cancelled", "request_expired"]
    text: str
    request_id: str
    created_at: str


class InboxView(Out):
    messages: list[InboxMessage] = Field(description="newest first")


class HistoryEntry(Out):
    at: str = Field(description="ISO-8601 time the event was recorded")
    type: str = Field(description="the stored event's type")
    by: str = Field(description="the manager, the ERP connector or the system")
    by_kind: Literal["erp", "manager", "system"]
    what: str = Field(description="a sentence for people")
    quantity: int | None
    request_id: str | None
    event_id: str = Field(description="the event_id it has on reserve.events")


class OpenRequest(Out):
    request_id: str
    from_order_id: str
    to_order_id: str
    sku: str
    warehouse: str
    requested: int
    requester: str
    owner: str
    requested_at: str
    expires_at: str


class OpenRequests(Out):
    incoming: list[OpenRequest] = Field(description="other orders asking this order's reserve")
    outgoing: list[OpenRequest] = Field(description="this order asking other orders")


class OrderHistoryView(OrderView):
    """``GET /v1/orders/{order_id}/history``: why the order is (not) green."""

    timeline: list[HistoryEntry] = Field(description="oldest first")
    open_requests: OpenRequests


class CommandResultMessage(Out):
    """A message on ``reserve.command-results`` (key: ``command_id``), one per command."""

    command_id: str
    ok: bool
    error: ErrorDetail | None
    result: dict[str, Any] | None = Field(description="the HTTP answer's body when ok")


class ReserveEventMessage(Out):
    """A message on ``reserve.events`` (key: the aggregate's id): every stored domain event.

    An ERP connector applies ``type == "ReserveGiven"``, whose ``data`` is
    ``{from_order_id, to_order_id, sku, warehouse, quantity}``."""

    event_id: str = Field(description="stable across redeliveries and republishing")
    type: str = Field(description="the domain event's name, e.g. ReserveGiven")
    aggregate_id: str
    position: int = Field(description="the event's position in the store's log")
    occurred_at: str = Field(description="ISO-8601, UTC")
    data: dict[str, Any]


class ReserveGivenData(Out):
    """``data`` of a ``ReserveGiven`` event on ``reserve.events``."""

    from_order_id: str
    to_order_id: str
    sku: str
    warehouse: str
    quantity: int


class OrderStatusMessage(Out):
    """A message on ``order.status`` (key: ``order_id``), once per change of status."""

    event_id: str
    order_id: str
    number: str
    status: OrderStatus
    previous_status: OrderStatus | None
    lines: list[OrderLineView]
    occurred_at: str


# -- the Kafka inputs as one schema each, a variant per type (for the documents) ---------------
# Built from FACT_DATA and COMMAND_BODIES, so a new type appears in the documents by itself.
# (Types built at run time: mypy cannot follow them, hence the Any.)
_Literal: Any = Literal
_Union: Any = Union
_Annotated: Any = Annotated


def _erp_envelopes() -> Any:
    variants = [
        create_model(f"{name}Envelope", __base__=Wire, __doc__=f"An ERP fact: {name}.",
                     event_id=(Id, Field(description="unique per fact; a repeat is a "
                                              "duplicate and changes nothing")),
                     type=(_Literal[name], ...), occurred_at=(datetime, ...), data=(model, ...))
        for name, model in FACT_DATA.items()
    ]
    envelope = _Annotated[_Union[tuple(variants)], Field(discriminator="type")]
    return _Union[envelope, _Annotated[list[envelope],  # type: ignore[valid-type]
                                       Field(min_length=1, max_length=MAX_BATCH)]]


def _commands() -> Any:
    with_id = {"GiveReserve", "DeclineReserveRequest", "CancelReserveRequest"}
    variants = []
    for name, body in COMMAND_BODIES.items():
        data = (create_model(f"{name}Data", __base__=body, request_id=(Id, ...))
                if name in with_id else body)
        variants.append(create_model(
            f"{name}Command", __base__=Wire, __doc__=f"A {name} command.",
            command_id=(Id, Field(description="the idempotency key; answered under it")),
            type=(_Literal[name], ...), actor=(Name, Field(description="a manager's name")),
            data=(data, ...)))
    return _Annotated[_Union[tuple(variants)], Field(discriminator="type")]


ERP_MESSAGE: Any = _erp_envelopes()  # one envelope or a batch
COMMAND_MESSAGE: Any = _commands()
