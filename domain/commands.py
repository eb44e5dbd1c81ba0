"""Commands: what a manager (or the expiry timer) asks the exchange to do."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestReserve:
    from_order_id: str
    to_order_id: str
    sku: str
    warehouse: str
    quantity: int


@dataclass(frozen=True)
class GiveReserve:
    request_id: str
    quantity: int | None = None


@dataclass(frozen=True)
class DeclineReserveRequest:
    request_id: str
    reason: str


@dataclass(frozen=True)
class CancelReserveRequest:
    request_id: str


@dataclass(frozen=True)
class ExpireReserveRequest:
    request_id: str


Command = (RequestReserve | GiveReserve | DeclineReserveRequest | CancelReserveRequest
           | ExpireReserveRequest)
