"""A bad-input campaign against a running service, for ``make reliability`` and the tests.

It sets up a small story of its own (random ids), then sends seeded, hypothesis-generated bad
inputs over HTTP and on every topic the service consumes, and checks that each was refused
cleanly (the contract's 4xx and error body; a ``reserve.dlq`` entry with ``error`` and
``source`` headers; a failed command result) and that nothing changed: the views it can see
are the same before and after, and no event was stored in between (the first event of a good
command sent afterwards directly follows the setup's last one on ``reserve.events``). Last,
the service must still serve a good request, and a good message behind a poison one on each
partition must be processed.

Assumes no other writer uses the service while it runs (the expiry timer aside).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests import support
from tests.adversary.inputs import (
    COMMANDS,
    ERP,
    HTTP,
    BadInput,
    Target,
    command_messages,
    dumps,
    erp_messages,
    http_inputs,
)

T = TypeVar("T")
DEADLINE_S = 60.0
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
DLQ, RESULTS, EVENTS = "reserve.dlq", "reserve.command-results", "reserve.events"
IGNORED_EVENTS = {"ReserveRequestExpired"}  # the expiry timer may write these at any time
Record: TypeAlias = "ConsumerRecord[bytes, bytes]"


@dataclass
class CampaignReport:
    tried: int  # bad inputs sent
    refused_cleanly: int  # answered with the contract's 4xx / reserve.dlq entry, nothing changed
    failures: list[str]  # one sentence per input that was not refused cleanly
    by_kind: dict[str, int] = field(default_factory=dict)  # tried, per channel


def generate(strategy: st.SearchStrategy[T], examples: int, seed_: int) -> list[T]:
    """``examples`` values drawn by hypothesis, the same ones for the same seed."""
    drawn: list[T] = []
    if examples <= 0:
        return drawn

    @seed(seed_)
    @settings(max_examples=examples, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value: T) -> None:
        drawn.append(value)

    collect()
    return drawn[:examples]


async def eventually(condition: Callable[[], Awaitable[T | None]], what: str,
                     within: float = DEADLINE_S) -> T:
    """The tests' helper, raising TimeoutError: the campaign reports what did not happen."""
    return await support.eventually(condition, what, within, error=TimeoutError)


def clean_error(response: support.HttpResponse, allowed: frozenset[int],
                codes: frozenset[str] = frozenset()) -> str | None:
    """Why ``response`` is not a clean refusal, or None."""
    if response.status_code not in allowed:
        return f"got {response.status_code} (wanted one of {sorted(allowed)}): {response.text:.200}"
    try:
        body = response.json()
    except ValueError:
        return f"got {response.status_code} with a body that is not JSON: {response.text:.100}"
    error = body.get("error") if isinstance(body, dict) else None
    if (set(body) != {"error"} or not isinstance(error, dict)
            or set(error) != {"code", "message"} or not isinstance(error["code"], str)
            or not SNAKE_CASE.match(error["code"]) or not isinstance(error["message"], str)
            or not error["message"].strip()):
        return f"got {response.status_code} without the contract's error body: {body!r:.200}"
    if codes and error["code"] not in codes:
        return f"got code {error['code']!r}, wanted one of {sorted(codes)}"
    return None


class Broker:
    """The campaign's own producer and group-less reader."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                                         max_request_size=16 * 1024 * 1024)
        self.reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                       fetch_max_wait_ms=20)

    async def __aenter__(self) -> Broker:
        await self.producer.start()
        await self.reader.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.reader.stop()
        await self.producer.stop()

    async def partitions(self, topic: str) -> list[TopicPartition]:
        found = await self.producer.partitions_for(topic)  # waits for the topic's metadata
        return [TopicPartition(topic, p) for p in sorted(found)]

    async def marks(self, *topics: str) -> dict[TopicPartition, int]:
        """Where to start reading so nothing written from now on is missed (Tansu may answer
        a little early: the readers filter by key or source)."""
        tps = [tp for t in topics for tp in await self.partitions(t)]
        ends: dict[TopicPartition, int] = await self.reader.end_offsets(tps)
        return {tp: max(0, offset - 1) for tp, offset in ends.items()}

    async def send(self, topic: str, value: bytes, key: bytes | None,
                   partition: int | None = None) -> str:
        """Produces one message; its ``topic/partition/offset``."""
        meta = await self.producer.send_and_wait(topic, value, key=key, partition=partition)
        return f"{topic}/{meta.partition}/{meta.offset}"

    async def read_until(self, marks: dict[TopicPartition, int],
                         done: Callable[[list[Record]], bool], what: str) -> list[Record]:
        self.reader.assign(list(marks))
        for tp, offset in marks.items():
            self.reader.seek(tp, offset)
        seen: list[Record] = []

        async def step() -> bool:
            batch = await self.reader.getmany(timeout_ms=100)
            for records in batch.values():
                seen.extend(records)
            return done(seen)

        await eventually(step, what)
        return seen


def _headers(record: Record) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in record.headers}


class Campaign:
    def __init__(self, http: httpx.AsyncClient, broker: Broker, tokens: dict[str, str],
                 erp_token: str) -> None:
        self.http, self.broker = http, broker
        self.tokens, self.erp = tokens, {"Authorization": f"Bearer {erp_token}"}
        self.erp_token = erp_token
        self.run = f"adv-{uuid.uuid4().hex[:8]}"
        self.ids = (f"{self.run}-c{n}" for n in itertools.count())
        self.failures: list[str] = []

    def auth(self, manager: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[manager]}"}

    async def post(self, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
        return await self.http.post(path, content=dumps(body), headers=headers)

    async def setup(self) -> tuple[Target, int]:
        """The seed's story on fresh ids; the target, and the setup's last stored position."""
        managers = ("ivanov", "petrova", "sidorov")
        missing = [m for m in managers if m not in self.tokens]
        if missing:
            raise ValueError(f"manager_tokens must name {', '.join(missing)}")
        r, sku, wh = self.run, f"{self.run}-SKU", f"{self.run}-склад"
        owner, requester, stock_event = f"{r}-own", f"{r}-req", f"{r}-ev-stock"

        def env(id_: str, type_: str, data: dict[str, Any]) -> dict[str, Any]:
            return {"event_id": id_, "type": type_, "occurred_at": "2020-04-30T08:00:00+03:00",
                    "data": data}

        def placed(order: str, manager: str, qty: int) -> dict[str, Any]:
            return {"order_id": order, "number": f"N-{order}", "date": "2020-04-30T08:42:28",
                    "partner": "ООО Ромашка", "manager": manager,
                    "lines": [{"sku": sku, "warehouse": wh, "quantity": qty}]}

        facts = [
            env(stock_event, "StockLevelSet", {"warehouse": wh, "sku": sku, "on_hand": 10}),
            env(f"{r}-ev-1", "CustomerOrderPlaced", placed(owner, "petrova", 8)),
            env(f"{r}-ev-2", "ReservePlaced", {"order_id": owner, "sku": sku, "warehouse": wh,
                                               "quantity": 8}),
            env(f"{r}-ev-3", "CustomerOrderPlaced", placed(requester, "ivanov", 10)),
            env(f"{r}-ev-4", "ReservePlaced", {"order_id": requester, "sku": sku,
                                               "warehouse": wh, "quantity": 2}),
        ]
        response = await self.post("/v1/erp/events", facts, self.erp)
        if response.status_code != 200:
            raise RuntimeError(f"setup: the seed's facts were refused: {response.text}")
        # a command_id answered once (a refusal: requester may not give), to reuse later
        used_command = f"{r}-used-command"
        marks = await self.broker.marks(RESULTS, EVENTS)
        key = f"{r}-key"
        response = await self.post("/v1/reserve-requests", {
            "from_order_id": owner, "to_order_id": requester, "sku": sku, "warehouse": wh,
            "quantity": 8}, {**self.auth("ivanov"), "Idempotency-Key": key})
        if response.status_code != 201:
            raise RuntimeError(f"setup: the reserve request was refused: {response.text}")
        request_id = response.json()["request_id"]
        await self.broker.send(COMMANDS, dumps({
            "command_id": used_command, "type": "GiveReserve", "actor": "ivanov",
            "data": {"request_id": request_id}}), used_command.encode())
        await self.broker.read_until(
            {tp: o for tp, o in marks.items() if tp.topic == RESULTS},
            lambda rs: any(x.key == used_command.encode() for x in rs), "the setup's result")
        events = await self.broker.read_until(
            {tp: o for tp, o in marks.items() if tp.topic == EVENTS},
            lambda rs: any(x.key == request_id.encode() for x in rs), "the setup's request event")
        last = max(json.loads(x.value)["position"] for x in events
                   if x.key == request_id.encode())
        target = Target(owner, requester, request_id, sku, wh, dict(self.tokens),
                        self.erp_token, stock_event, key, used_command)
        await eventually(lambda: self._request_visible(request_id), "the setup in the views")
        return target, last

    async def _request_visible(self, request_id: str) -> bool:
        response = await self.http.get(f"/v1/reserve-requests/{request_id}",
                                       headers=self.auth("ivanov"))
        return response.status_code == 200

    async def snapshot(self, t: Target) -> dict[str, Any]:
        """Everything of the setup the views show, as every manager sees it."""
        urls = [f"/v1/stock/{t.warehouse}/{t.sku}", f"/v1/stock/{t.warehouse}/{t.sku}/reserves",
                f"/v1/orders/{t.owner_order}", f"/v1/orders/{t.requester_order}",
                f"/v1/reserve-requests/{t.request_id}"]
        shot: dict[str, Any] = {}
        for url in urls:
            response = await self.http.get(url, headers=self.auth("ivanov"))
            shot[url] = (response.status_code, response.json())
        request = shot[urls[-1]][1]
        if isinstance(request, dict) and request.get("status") == "expired":
            request["status"] = "pending"  # the expiry timer is not a bad input
        for manager in self.tokens:
            response = await self.http.get("/v1/inbox", headers=self.auth(manager))
            messages = response.json().get("messages", [])
            shot[f"inbox:{manager}"] = (response.status_code, [
                m for m in messages if m.get("kind") != "request_expired"])
        return shot

    async def send_http(self, bad: BadInput) -> bool:
        try:
            response = await self.http.request(bad.method, bad.path, content=bad.body,
                                               headers=dict(bad.headers))
        except httpx.HTTPError as e:
            self.failures.append(f"{bad.what}: the request failed ({type(e).__name__}: {e}).")
            return False
        problem = clean_error(response, bad.statuses, bad.codes)
        if problem:
            self.failures.append(f"{bad.what}: {problem}.")
            return False
        return True

    async def send_kafka(self, bads: list[BadInput]) -> int:
        """Sends every message, then awaits each one's dead letter or result; how many were
        refused cleanly."""
        marks = await self.broker.marks(DLQ, RESULTS)
        sources: dict[str, BadInput] = {}
        for bad in bads:
            assert bad.body is not None
            sources[await self.broker.send(bad.channel, bad.body, bad.key)] = bad
        wanted_results = {b.command_id: b for b in bads if b.command_id is not None}
        wanted_dlq = {s for s, b in sources.items() if b.command_id is None}
        dead: dict[str, Record] = {}
        results: dict[str, list[Any]] = {}

        def complete(records: list[Record]) -> bool:
            for x in records:
                if x.topic == DLQ:
                    dead[_headers(x).get("source", "")] = x
                elif x.key is not None:
                    cid = x.key.decode("utf-8", "surrogatepass")
                    if cid in wanted_results:
                        results.setdefault(cid, []).append(json.loads(x.value))
            records.clear()
            return wanted_dlq <= set(dead) and set(wanted_results) <= set(results)

        with contextlib.suppress(TimeoutError):  # the missing ones are failures, named below
            await self.broker.read_until(marks, complete, "every dead letter and result")
        clean = 0
        for source, bad in sources.items():
            if bad.command_id is None:
                record = dead.get(source)
                if record is None:
                    self.failures.append(f"{bad.what} ({source}): no reserve.dlq entry.")
                elif record.value != bad.body or not _headers(record).get("error", "").strip():
                    self.failures.append(f"{bad.what} ({source}): the reserve.dlq entry is "
                                         "changed or has no error header.")
                else:
                    clean += 1
                continue
            answers = results.get(bad.command_id, [])
            # a reused command_id may also find its first answer: the last one is this one's
            result = answers[-1] if answers else None
            if result is None:
                self.failures.append(f"{bad.what} ({source}): no command result.")
            elif result.get("ok") is not False or not isinstance(result.get("error"), dict):
                self.failures.append(f"{bad.what} ({source}): the result is not a refusal: "
                                     f"{result!r:.200}.")
            elif bad.codes and result["error"].get("code") not in bad.codes:
                self.failures.append(f"{bad.what} ({source}): code {result['error'].get('code')!r},"
                                     f" wanted one of {sorted(bad.codes)}.")
            else:
                clean += 1
        return clean

    async def check_nothing_stored(self, t: Target, last: int) -> bool:
        """A good command now: its event must directly follow the setup's last one."""
        marks = await self.broker.marks(EVENTS)
        response = await self.post("/v1/reserve-requests", {
            "from_order_id": t.owner_order, "to_order_id": t.requester_order, "sku": t.sku,
            "warehouse": t.warehouse, "quantity": 1}, self.auth("ivanov"))
        if response.status_code != 201:
            self.failures.append(f"A good request after the campaign got {response.status_code}: "
                                 f"{response.text:.200}.")
            return False
        good = response.json()["request_id"].encode()
        records = await self.broker.read_until(
            marks, lambda rs: any(x.key == good for x in rs), "the good request's event")
        events = [json.loads(x.value) for x in records]
        first = min(e["position"] for e in events if e["aggregate_id"] == good.decode())
        stray = [e for e in events if last < e["position"] < first
                 and e["type"] not in IGNORED_EVENTS]
        if stray:
            self.failures.append(f"{len(stray)} events were stored during the campaign: "
                                 + ", ".join(f"{e['type']} of {e['aggregate_id']}"
                                             for e in stray[:10]) + ".")
            return False
        return True

    async def check_poison_does_not_block(self, t: Target) -> None:
        """On every partition: a poison message, then a good one, which must be processed."""
        for tp in await self.broker.partitions(ERP):
            sku = f"{t.sku}-after-poison-{tp.partition}"
            await self.broker.send(ERP, b"\xff poison", None, tp.partition)
            await self.broker.send(ERP, dumps({
                "event_id": f"{self.run}-after-poison-{tp.partition}", "type": "StockLevelSet",
                "occurred_at": "2020-04-30T08:00:00Z",
                "data": {"warehouse": t.warehouse, "sku": sku, "on_hand": 7}}), None,
                tp.partition)

            async def applied(url: str = f"/v1/stock/{t.warehouse}/{sku}") -> bool:
                r = await self.http.get(url, headers=self.auth("ivanov"))
                return r.status_code == 200 and r.json().get("on_hand") == 7

            try:
                await eventually(applied, f"the fact behind a poison one on {tp}")
            except TimeoutError:
                self.failures.append(f"A good erp.events fact behind a poison message on "
                                     f"partition {tp.partition} was not applied.")
        marks = await self.broker.marks(RESULTS)
        waiting: set[bytes] = set()
        for tp in await self.broker.partitions(COMMANDS):
            cid = f"{self.run}-after-poison-{tp.partition}"
            waiting.add(cid.encode())
            await self.broker.send(COMMANDS, b"{poison", None, tp.partition)
            await self.broker.send(COMMANDS, dumps({
                "command_id": cid, "type": "RequestReserve", "actor": "ivanov",
                "data": {"from_order_id": t.owner_order, "to_order_id": t.requester_order,
                         "sku": t.sku, "warehouse": t.warehouse, "quantity": 1}}),
                cid.encode(), tp.partition)
        ok: set[bytes] = set()

        def answered(records: list[Record]) -> bool:
            ok.update(x.key for x in records
                      if x.key in waiting and json.loads(x.value).get("ok") is True)
            return ok == waiting

        try:
            await self.broker.read_until(marks, answered, "the commands behind poison ones")
        except TimeoutError:
            self.failures.append("A good reserve.commands message behind a poison one was not "
                                 f"carried out on {len(waiting - ok)} partition(s).")


async def run_campaign(*, http_url: str, manager_tokens: dict[str, str], erp_token: str,
                       bootstrap_servers: str, examples: int = 200, seed: int = 0
                       ) -> CampaignReport:
    """Sends ``examples`` seeded bad inputs (about half over HTTP, the rest split between
    ``erp.events`` and ``reserve.commands``) to a running service; see the module's doc.
    ``manager_tokens`` maps each of ivanov, petrova, sidorov to their token."""
    async with httpx.AsyncClient(base_url=http_url, timeout=30) as http, \
            Broker(bootstrap_servers) as broker:
        campaign = Campaign(http, broker, manager_tokens, erp_token)
        target, last = await campaign.setup()
        before = await campaign.snapshot(target)
        n_http = examples - 2 * (examples // 4)
        # generated on the loop's thread: hypothesis must see no other code touch `random`
        # (aiokafka's tasks do) while it draws, or the same seed would not give the same inputs
        http_bad = generate(http_inputs(target), n_http, seed)
        # beyond the body limit, once: refused with 413 before the body is read whole
        http_bad.append(BadInput(HTTP, "POST /v1/erp/events with a body over 8 MiB",
                                 b"[" + b" " * (8 * 1024 * 1024) + b"]", "POST",
                                 "/v1/erp/events", tuple(campaign.erp.items()),
                                 frozenset({413}), codes=frozenset({"body_too_large"})))
        erp_bad = generate(erp_messages(target), examples // 4, seed)
        command_bad = generate(command_messages(target, lambda: next(campaign.ids)),
                               examples // 4, seed)
        clean = 0
        for bad in http_bad:
            clean += await campaign.send_http(bad)
        clean += await campaign.send_kafka(erp_bad + command_bad)
        after = await campaign.snapshot(target)
        unchanged = True
        if after != before:
            changed = sorted(k for k in before if before[k] != after.get(k))
            campaign.failures.append(f"The views changed during the campaign: {changed}.")
            unchanged = False
        unchanged = await campaign.check_nothing_stored(target, last) and unchanged
        tried = len(http_bad) + len(erp_bad) + len(command_bad)
        if not unchanged:
            clean = 0  # something changed, and no single input can be cleared of it
        await campaign.check_poison_does_not_block(target)
        return CampaignReport(
            tried=tried, refused_cleanly=clean, failures=campaign.failures,
            by_kind={HTTP: len(http_bad), ERP: len(erp_bad), COMMANDS: len(command_bad)})
