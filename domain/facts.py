"""Facts the ERP reports: what has already happened upstream."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class OrderLineSpec:
    sku: str
    warehouse: str
    quantity: int


@dataclass(frozen=True)
class StockLevelSet:
    warehouse: str
    sku: str
    on_hand: int


@dataclass(frozen=True)
class CustomerOrderPlaced:
    order_id: str
    number: str
    date: datetime
    partner: str
    manager: str
    lines: tuple[OrderLineSpec, ...]


@dataclass(frozen=True)
class ReservePlaced:
    order_id: str
    sku: str
    warehouse: str
    quantity: int


@dataclass(frozen=True)
class ReserveReleased:
    order_id: str
    sku: str
    warehouse: str
    quantity: int


@dataclass(frozen=True)
class OrderShipped:
    order_id: str


@dataclass(frozen=True)
class OrderCancelled:
    order_id: str


Fact = (StockLevelSet | CustomerOrderPlaced | ReservePlaced | ReserveReleased | OrderShipped
        | OrderCancelled)
