"""The seed's story, played against a running ``reserves serve`` through its public interfaces."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.topics import ORDER_STATUS, ensure_topics
from tests.e2e import serve
from tests.support import (
    ERP_AUTH,
    SEED_SUCCESS,
    SKU,
    WAREHOUSE,
    auth,
    seed_facts,
    uid,
    wait_for,
)

pytestmark = pytest.mark.e2e
TTL_SECONDS = 8


service = serve.service_fixture("serve", {"RESERVE_REQUEST_TTL": str(TTL_SECONDS)})


def _eventually(client: httpx.Client, path: str, manager: str, check: Any,
                timeout: float = 5.0) -> dict[str, Any]:
    """Views are eventually consistent: poll until ``check(body)`` holds."""
    def ready() -> dict[str, Any] | None:
        response = client.get(path, headers=auth(manager))
        body: dict[str, Any] = response.json()
        return body if response.status_code == 200 and check(body) else None
    return wait_for(ready, timeout=timeout, what=f"{path} for {manager}")


async def _status_messages(kafka: str, start: dict[TopicPartition, int], order_id: str,
                           want: str, within_s: float = 10.0) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    assert record.value is not None
                    message = json.loads(record.value)
                    if message["order_id"] == order_id:
                        found.append(message)
            if any(m["status"] == want for m in found):
                return found
        raise AssertionError(f"no order.status {want!r} for {order_id}: saw {found}")
    finally:
        await consumer.stop()


async def _end_offsets(kafka: str, topic: str) -> dict[TopicPartition, int]:
    await ensure_topics(kafka, 3, 1)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        offsets: dict[TopicPartition, int] = await consumer.end_offsets(
            [TopicPartition(topic, p) for p in partitions])
        return offsets
    finally:
        await consumer.stop()


def test_seed_story_turns_the_requesting_order_green(service: serve.Running) -> None:
    owner_order, requester_order = uid("F-"), uid("R-")
    status_start = asyncio.run(_end_offsets(service.kafka, ORDER_STATUS))
    with httpx.Client(base_url=service.url, timeout=10) as client:
        posted = client.post("/v1/erp/events", json=seed_facts(owner_order, requester_order),
                             headers=ERP_AUTH)
        assert posted.json() == {"accepted": 5, "duplicates": 0}

        # The requester sees the provisioning window: on hand, reserved, free, and who holds.
        stock = _eventually(client, f"/v1/stock/{WAREHOUSE}/{SKU}", "ivanov",
                            lambda b: b["reserved"] >= 10)
        assert stock["free"] == stock["on_hand"] - stock["reserved"]
        reserves = _eventually(client, f"/v1/stock/{WAREHOUSE}/{SKU}/reserves", "ivanov",
                               lambda b: any(r["order_id"] == owner_order for r in b["reserves"]))
        holder = next(r for r in reserves["reserves"] if r["order_id"] == owner_order)
        assert (holder["number"], holder["manager"], holder["quantity"]) == ("F4718837",
                                                                              "petrova", 8)

        asked = client.post("/v1/reserve-requests", headers=auth("ivanov"), json={
            "from_order_id": owner_order, "to_order_id": requester_order, "sku": SKU,
            "warehouse": WAREHOUSE, "quantity": 8})
        assert asked.status_code == 201, asked.text
        request_id = asked.json()["request_id"]

        inbox = _eventually(client, "/v1/inbox", "petrova",
                            lambda b: any(m["request_id"] == request_id for m in b["messages"]))
        note = next(m for m in inbox["messages"] if m["request_id"] == request_id)
        assert "ivanov" in note["text"] and "8 шт." in note["text"] and SKU in note["text"]

        given = client.post(f"/v1/reserve-requests/{request_id}/give", headers=auth("petrova"))
        assert given.status_code == 200, given.text

        inbox = _eventually(client, "/v1/inbox", "ivanov",
                            lambda b: any(m["kind"] == "reserve_given"
                                          and m["request_id"] == request_id
                                          for m in b["messages"]))
        assert SEED_SUCCESS in [m["text"] for m in inbox["messages"]]
        order = _eventually(client, f"/v1/orders/{requester_order}", "ivanov",
                            lambda b: b["status"] == "green")
        assert order["lines"][0]["reserved"] == 10 and order["lines"][0]["shortage"] == 0
        after = _eventually(client, f"/v1/stock/{WAREHOUSE}/{SKU}", "ivanov", lambda b: True)
        assert after["free"] == stock["free"] and after["on_hand"] == stock["on_hand"]

    messages = asyncio.run(_status_messages(service.kafka, status_start, requester_order,
                                            "green"))
    green = next(m for m in messages if m["status"] == "green")
    assert green["previous_status"] == "new" and green["number"] == "F4718999"
    assert {"event_id", "order_id", "number", "status", "previous_status", "lines",
            "occurred_at"} <= set(green)
    assert sum(1 for m in messages if m["status"] == "green") == 1


def test_unanswered_request_expires_and_the_requester_is_told(service: serve.Running) -> None:
    owner_order, requester_order = uid("F-"), uid("R-")
    with httpx.Client(base_url=service.url, timeout=10) as client:
        client.post("/v1/erp/events", json=seed_facts(owner_order, requester_order),
                    headers=ERP_AUTH).raise_for_status()
        asked = client.post("/v1/reserve-requests", headers=auth("ivanov"), json={
            "from_order_id": owner_order, "to_order_id": requester_order, "sku": SKU,
            "warehouse": WAREHOUSE, "quantity": 3})
        assert asked.status_code == 201, asked.text
        request_id = asked.json()["request_id"]
        view = _eventually(client, f"/v1/reserve-requests/{request_id}", "ivanov",
                           lambda b: b["status"] == "expired", timeout=TTL_SECONDS + 10)
        assert view["given"] == 0
        inbox = _eventually(client, "/v1/inbox", "ivanov",
                            lambda b: any(m["kind"] == "request_expired"
                                          and m["request_id"] == request_id
                                          for m in b["messages"]))
        assert inbox["messages"]
        late = client.post(f"/v1/reserve-requests/{request_id}/give", headers=auth("petrova"))
        assert late.status_code == 409 and late.json()["error"]["code"] == "request_not_pending"
