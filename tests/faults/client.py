"""The workload's client: a seeded mix of ERP facts and commands over HTTP and Kafka, retried
with the same key when an answer is lost, as a real client would, and recorded in a History."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from services.topics import COMMAND_RESULTS, COMMANDS, ERP_EVENTS
from tests.faults.history import OK, REFUSED, UNKNOWN, History, Op

FINAL_CODES = {"request_not_pending", "request_expired", "request_not_found"}


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def envelope(type_: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": f"ev-{uuid.uuid4()}", "type": type_,
            "occurred_at": "2026-01-01T08:00:00+03:00", "data": data}


@dataclass
class OrderState:
    manager: str
    lines: dict[tuple[str, str], int]
    closed: bool = False


@dataclass
class RequestState:
    requester: str
    owner: str
    requested: int
    final: bool = False


@dataclass
class ClientConfig:
    http_url: str
    manager_tokens: dict[str, str]
    erp_token: str
    bootstrap_servers: str
    skus: int = 4
    kafka_share: float = 0.25  # of commands, and of order placements, sent over Kafka
    resend_after_s: float = 25.0  # a Kafka message unanswered this long is sent again
    give_up_after_s: float = 150.0  # then the operation's outcome is unknown


@dataclass
class Client:
    config: ClientConfig
    history: History
    rng: random.Random
    orders: dict[str, OrderState] = field(default_factory=dict)
    requests: dict[str, RequestState] = field(default_factory=dict)
    _results: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.items = [("W1", f"SKU-{i}") for i in range(self.config.skus)]
        self.http = httpx.AsyncClient(base_url=self.config.http_url, timeout=15)
        self.producer: AIOKafkaProducer | None = None
        self._consumer_task: asyncio.Task[None] | None = None
        self._placed = 0

    # -- plumbing ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.config.bootstrap_servers,
                                         acks="all", request_timeout_ms=10_000)
        await self.producer.start()
        await self.restart_results_consumer()

    async def restart_results_consumer(self) -> None:
        """After a broker restart the results topic is a new one: read it from its start."""
        if self._consumer_task is not None:
            self._consumer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer_task
        self._consumer_task = asyncio.create_task(self._read_results())

    async def _read_results(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.config.bootstrap_servers,
                                        enable_auto_commit=False, auto_offset_reset="earliest")
            try:
                await consumer.start()
                partitions: set[int] = set()
                while not partitions:
                    partitions = consumer.partitions_for_topic(COMMAND_RESULTS) or set()
                    if not partitions:
                        await asyncio.sleep(0.5)
                        await consumer._client.force_metadata_update()
                consumer.assign([TopicPartition(COMMAND_RESULTS, p) for p in partitions])
                while True:
                    batches = await consumer.getmany(timeout_ms=500)
                    for messages in batches.values():
                        for message in messages:
                            result = json.loads(message.value or b"{}")
                            waiting = self._results.get(str(result.get("command_id")))
                            if waiting is not None and not waiting.done():
                                waiting.set_result(result)
            except asyncio.CancelledError:
                raise
            except Exception:  # the broker went away: read again from a fresh consumer
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def close(self) -> None:
        if self._consumer_task is not None:
            self._consumer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer_task
        if self.producer is not None:
            await self.producer.stop()
        await self.http.aclose()

    def _headers(self, actor: str, key: str | None = None) -> dict[str, str]:
        token = self.config.erp_token if actor == "erp" else self.config.manager_tokens[actor]
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    async def _post(self, op: Op, path: str, body: Any, headers: dict[str, str]) -> None:
        """POSTs until an answer below 500 arrives; 5xx and lost answers are retried with the
        same key (event ids / Idempotency-Key), so a retry can never double the effect."""
        deadline = time.monotonic() + self.config.give_up_after_s
        delay = 0.1
        while True:
            op.attempts += 1
            try:
                response = await self.http.post(path, json=body, headers=headers)
            except httpx.HTTPError:
                pass
            else:
                op.statuses_seen.append(response.status_code)
                if response.status_code < 500:
                    op.finish(response.status_code, response.json(),
                              OK if response.status_code < 300 else REFUSED)
                    return
            if time.monotonic() > deadline:
                op.finish(None, None, UNKNOWN)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _send(self, topic: str, key: str, value: Any) -> None:
        assert self.producer is not None
        with contextlib.suppress(KafkaError):
            await self.producer.send_and_wait(topic, _encode(value), key=key.encode())

    async def _kafka_command(self, op: Op, command: dict[str, Any]) -> None:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._results[op.key] = future
        deadline = time.monotonic() + self.config.give_up_after_s
        try:
            while True:
                op.attempts += 1
                await self._send(COMMANDS, op.key, command)
                try:
                    result = await asyncio.wait_for(asyncio.shield(future),
                                                    self.config.resend_after_s)
                except TimeoutError:
                    if time.monotonic() > deadline:
                        op.finish(None, None, UNKNOWN)
                        return
                    continue
                status = 200 if result["ok"] else 400
                op.statuses_seen.append(status)
                op.finish(status, result, OK if result["ok"] else REFUSED)
                return
        finally:
            del self._results[op.key]

    async def _kafka_place(self, op: Op, order_id: str, facts: list[dict[str, Any]]) -> None:
        """An order placed over ``erp.events``: done when the order's view shows it."""
        deadline = time.monotonic() + self.config.give_up_after_s
        headers = self._headers(self.rng.choice(list(self.config.manager_tokens)))
        while True:
            op.attempts += 1
            await self._send(ERP_EVENTS, order_id, facts)
            resend = time.monotonic() + self.config.resend_after_s
            while time.monotonic() < resend:
                try:
                    response = await self.http.get(f"/v1/orders/{order_id}", headers=headers)
                    if response.status_code == 200:
                        op.finish(200, response.json(), OK)
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.3)
            if time.monotonic() > deadline:
                op.finish(None, None, UNKNOWN)
                return

    # -- the workload -----------------------------------------------------------------------

    async def step(self) -> None:
        roll = self.rng.random()
        active = [o for o, s in self.orders.items() if not s.closed]
        open_requests = [r for r, s in self.requests.items() if not s.final]
        if len(active) < 6 or roll < 0.10:
            await self.place()
        elif roll < 0.14:
            await self.level()
        elif roll < 0.30:
            await self.reserve(self.rng.choice(active))
        elif roll < 0.34:
            await self.release(self.rng.choice(active))
        elif roll < 0.36:
            await self.close_order(self.rng.choice(active))
        elif roll < 0.64 or not open_requests:
            await self.request()
        else:
            request_id = self.rng.choice(open_requests[-20:])
            choice = self.rng.random()
            if choice < 0.6:
                await self.give(request_id)
            elif choice < 0.8:
                await self.decline(request_id)
            else:
                await self.cancel(request_id)

    async def _facts(self, kind: str, facts: list[dict[str, Any]]) -> Op:
        op = self.history.add(Op(len(self.history.ops), kind, "http", facts[0]["event_id"],
                                 facts, actor="erp"))
        await self._post(op, "/v1/erp/events", facts, self._headers("erp"))
        return op

    async def level(self) -> None:
        warehouse, sku = self.rng.choice(self.items)
        await self._facts("level", [envelope("StockLevelSet", {
            "warehouse": warehouse, "sku": sku, "on_hand": self.rng.randint(20, 80)})])

    async def place(self) -> None:
        rng = self.rng
        order_id = f"o-{uuid.uuid4().hex[:12]}"
        manager = rng.choice(list(self.config.manager_tokens))
        lines = {item: rng.randint(2, 10) for item in rng.sample(self.items, rng.randint(1, 3))}
        self._placed += 1
        facts = [envelope("CustomerOrderPlaced", {
            "order_id": order_id, "number": f"N{self._placed}",
            "date": (datetime(2026, 1, 1) + timedelta(minutes=self._placed)).isoformat(),
            "partner": "ООО Ромашка", "manager": manager,
            "lines": [{"sku": s, "warehouse": w, "quantity": q} for (w, s), q in lines.items()],
        })]
        if rng.random() < self.config.kafka_share:
            op = self.history.add(Op(len(self.history.ops), "place", "kafka",
                                     facts[0]["event_id"], facts, actor="erp"))
            await self._kafka_place(op, order_id, facts)
        else:
            op = await self._facts("place", facts)
        if op.outcome != REFUSED:
            self.orders[order_id] = OrderState(manager, lines)

    async def reserve(self, order_id: str) -> None:
        (warehouse, sku), ordered = self.rng.choice(list(self.orders[order_id].lines.items()))
        await self._facts("reserve", [envelope("ReservePlaced", {
            "order_id": order_id, "sku": sku, "warehouse": warehouse,
            "quantity": self.rng.randint(1, max(1, ordered // 2))})])

    async def release(self, order_id: str) -> None:
        warehouse, sku = self.rng.choice(list(self.orders[order_id].lines))
        await self._facts("release", [envelope("ReserveReleased", {
            "order_id": order_id, "sku": sku, "warehouse": warehouse,
            "quantity": self.rng.randint(1, 2)})])

    async def close_order(self, order_id: str) -> None:
        kind = self.rng.choice(("OrderShipped", "OrderCancelled"))
        op = await self._facts("ship" if kind == "OrderShipped" else "cancel_order",
                               [envelope(kind, {"order_id": order_id})])
        if op.outcome == OK:
            self.orders[order_id].closed = True

    async def _command(self, kind: str, command_type: str, actor: str, path: str,
                       body: dict[str, Any], request_id: str | None = None) -> Op:
        key = f"k-{uuid.uuid4()}"
        data = {**body, **({"request_id": request_id} if request_id else {})}
        if self.rng.random() < self.config.kafka_share:
            op = self.history.add(Op(len(self.history.ops), kind, "kafka", key, data, actor))
            await self._kafka_command(op, {"command_id": key, "type": command_type,
                                           "actor": actor, "data": data})
        else:
            op = self.history.add(Op(len(self.history.ops), kind, "http", key, data, actor))
            await self._post(op, path, body, self._headers(actor, key))
        return op

    async def request(self) -> None:
        warehouse, sku = self.rng.choice(self.items)
        manager = self.rng.choice(list(self.config.manager_tokens))
        try:
            response = await self.http.get(f"/v1/stock/{warehouse}/{sku}/reserves",
                                           headers=self._headers(manager))
            holders = response.json()["reserves"] if response.status_code == 200 else []
        except httpx.HTTPError:
            holders = []
        if not holders:
            return await self.reserve(self.rng.choice(list(self.orders)))
        holder = self.rng.choice(holders)
        wanting = [o for o, s in self.orders.items()
                   if not s.closed and s.manager != holder["manager"]
                   and (warehouse, sku) in s.lines]
        if not wanting:
            return None
        to_order = self.rng.choice(wanting)
        requester = self.orders[to_order].manager
        body = {"from_order_id": holder["order_id"], "to_order_id": to_order, "sku": sku,
                "warehouse": warehouse,
                "quantity": self.rng.randint(1, max(1, min(holder["quantity"], 3)))}
        op = await self._command("request", "RequestReserve", requester, "/v1/reserve-requests",
                                 body)
        if op.outcome == OK:
            request_id = op.answer["result"]["request_id"] if op.channel == "kafka" \
                else op.answer["request_id"]
            self.requests[request_id] = RequestState(requester, holder["manager"],
                                                     body["quantity"])
        return None

    def _settle(self, request_id: str, op: Op) -> None:
        if op.outcome == OK:
            self.requests[request_id].final = True
        elif op.outcome == REFUSED and op.answer:
            error = op.answer.get("error") or {}
            if error.get("code") in FINAL_CODES:
                self.requests[request_id].final = True

    async def give(self, request_id: str) -> None:
        state = self.requests[request_id]
        quantity = self.rng.choice((None, self.rng.randint(1, state.requested)))
        body = {} if quantity is None else {"quantity": quantity}
        op = await self._command("give", "GiveReserve", state.owner,
                                 f"/v1/reserve-requests/{request_id}/give", body, request_id)
        self._settle(request_id, op)

    async def decline(self, request_id: str) -> None:
        state = self.requests[request_id]
        op = await self._command("decline", "DeclineReserveRequest", state.owner,
                                 f"/v1/reserve-requests/{request_id}/decline",
                                 {"reason": "нужен самим"}, request_id)
        self._settle(request_id, op)

    async def cancel(self, request_id: str) -> None:
        state = self.requests[request_id]
        op = await self._command("cancel", "CancelReserveRequest", state.requester,
                                 f"/v1/reserve-requests/{request_id}/cancel", {}, request_id)
        self._settle(request_id, op)
