"""Deterministic ids for natural keys, so a repeated message finds the same aggregate."""

from __future__ import annotations

import json
from functools import lru_cache
from uuid import UUID, uuid5

_NAMESPACE = UUID("6f1c2b0e-4d1a-5a7e-9c3b-0e2f1d7a9b42")


# Cached: a batch of ERP facts names each order and stock item several times (receipts,
# loading, the aggregate's own id), and uuid5 (with json.dumps for stock) is not free.
@lru_cache(maxsize=16384)
def order_uuid(order_id: str) -> UUID:
    return uuid5(_NAMESPACE, f"order:{order_id}")


@lru_cache(maxsize=16384)
def stock_item_uuid(warehouse: str, sku: str) -> UUID:
    return uuid5(_NAMESPACE, "stock:" + json.dumps([warehouse, sku], ensure_ascii=False))


def request_uuid(key: str) -> UUID:
    """The id of a reserve request made under a client's idempotency key or command id."""
    return uuid5(_NAMESPACE, f"request:{key}")


def event_uuid(aggregate_id: UUID, version: int) -> UUID:
    """A stored event's stable id: the same on every republish."""
    return uuid5(aggregate_id, str(version))
