"""A stock item: one SKU at one warehouse, and the units physically on hand there.

The ERP is the authority on what is on hand; reserves are held by orders, so free
(on hand − reserves) is a view, not a field of this aggregate.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import errors
from domain.ids import stock_item_uuid


class StockItem(Aggregate):
    @staticmethod
    def create_id(warehouse: str, sku: str) -> UUID:
        return stock_item_uuid(warehouse, sku)

    @event("StockItemRegistered")
    def __init__(self, warehouse: str, sku: str) -> None:
        self.warehouse = warehouse
        self.sku = sku
        self.on_hand = 0

    def set_level(self, on_hand: int) -> None:
        if on_hand < 0:
            raise errors.InvalidQuantityError("On hand cannot be below 0.")
        self._level_set(warehouse=self.warehouse, sku=self.sku, on_hand=on_hand)

    def consume(self, quantity: int, order_id: str) -> None:
        """Shipping an order takes its reserved units out of the warehouse."""
        if quantity < 0:
            raise errors.InvalidQuantityError("A consumed quantity cannot be negative.")
        self._consumed(warehouse=self.warehouse, sku=self.sku, quantity=quantity,
                       order_id=order_id, on_hand=max(self.on_hand - quantity, 0))

    @event("StockLevelSet")
    def _level_set(self, warehouse: str, sku: str, on_hand: int) -> None:
        self.on_hand = on_hand

    @event("StockConsumed")
    def _consumed(self, warehouse: str, sku: str, quantity: int, order_id: str,
                  on_hand: int) -> None:
        self.on_hand = on_hand
