"""Shared test data: tokens, the seed's facts, and waiting for conditions (never bare sleeps)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import httpx
import httpx2

from services.settings import Settings

# Starlette's TestClient answers with httpx2's responses; httpx.AsyncClient with httpx's
HttpResponse: TypeAlias = httpx.Response | httpx2.Response

TOKENS = {"tok-ivanov": "ivanov", "tok-petrova": "petrova", "tok-sidorov": "sidorov"}
ERP_TOKEN = "tok-erp"
SKU = "CTS66443"
WAREHOUSE = "Основной склад"

T = TypeVar("T")


def make_settings(tmp_path: Path, database_url: str | None = None,
                  kafka: str | None = None, ttl: float = 86400.0) -> Settings:
    return Settings(database_url=database_url, kafka_bootstrap_servers=kafka,
                    api_tokens=dict(TOKENS), erp_tokens=frozenset({ERP_TOKEN}),
                    request_ttl=ttl, var_dir=tmp_path, kafka_session_timeout_ms=6000)


def auth(manager: str) -> dict[str, str]:
    token = {m: t for t, m in TOKENS.items()}[manager]
    return {"Authorization": f"Bearer {token}"}


ERP_AUTH = {"Authorization": f"Bearer {ERP_TOKEN}"}


def uid(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def envelope(type_: str, data: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {"event_id": event_id or uid("ev-"), "type": type_,
            "occurred_at": "2020-04-30T08:00:00+03:00", "data": data}


def seed_facts(owner_order: str, requester_order: str, *, sku: str = SKU,
               warehouse: str = WAREHOUSE) -> list[dict[str, Any]]:
    """The seed's story: petrova's order F4718837 holds 8; ivanov's order is short of 8."""
    return [
        envelope("StockLevelSet", {"warehouse": warehouse, "sku": sku, "on_hand": 10}),
        envelope("CustomerOrderPlaced", {
            "order_id": owner_order, "number": "F4718837", "date": "2020-04-30T08:42:28",
            "partner": "ООО Ромашка", "manager": "petrova",
            "lines": [{"sku": sku, "warehouse": warehouse, "quantity": 8}]}),
        envelope("ReservePlaced", {"order_id": owner_order, "sku": sku, "warehouse": warehouse,
                                   "quantity": 8}),
        envelope("CustomerOrderPlaced", {
            "order_id": requester_order, "number": "F4718999", "date": "2020-05-04T10:15:00",
            "partner": "ИП Васильев", "manager": "ivanov",
            "lines": [{"sku": sku, "warehouse": warehouse, "quantity": 10}]}),
        envelope("ReservePlaced", {"order_id": requester_order, "sku": sku,
                                   "warehouse": warehouse, "quantity": 2}),
    ]


SEED_SUCCESS = "УСПЕХ!!! Отдан резерв 8 шт. CTS66443. Заказ клиента F4718837 от 30.04.2020 8:42:28"


def wait_for(condition: Callable[[], T | None], timeout: float = 10.0,
             interval: float = 0.02, what: str = "condition") -> T:
    """Polls ``condition`` until it returns something truthy; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


async def eventually(condition: Callable[[], Awaitable[T | None]], what: str,
                     within: float = 30.0, interval: float = 0.05,
                     error: type[Exception] = AssertionError) -> T:
    """:func:`wait_for` for an awaitable ``condition``, on the caller's event loop (30 s by
    default: a consumer group's join alone takes about 3 s on Tansu); raises ``error``."""
    deadline = time.monotonic() + within
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)
