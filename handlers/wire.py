"""Wire schemas (pydantic): what the contract's JSON looks like, turned into domain values.

These models live at the edge only; the domain never sees them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from domain import commands as c
from domain import facts as f
from handlers.erp import Envelope
from handlers.outcome import fingerprint

Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Quantity = Annotated[int, Field(strict=True, ge=1, le=1_000_000_000)]
Level = Annotated[int, Field(strict=True, ge=0, le=1_000_000_000)]
MAX_BATCH = 1000


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
    date: datetime
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


ErpBody = ErpEnvelope | Annotated[list[ErpEnvelope], Field(min_length=1, max_length=MAX_BATCH)]
erp_body_adapter: TypeAdapter[ErpBody] = TypeAdapter(ErpBody)


def parse_erp_body(raw: Any) -> list[Envelope]:
    """Validates one envelope or an array of up to 1,000 (raises pydantic.ValidationError)."""
    body = erp_body_adapter.validate_python(raw)
    envelopes = body if isinstance(body, list) else [body]
    return [e.envelope() for e in envelopes]


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
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]

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
