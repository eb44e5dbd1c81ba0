"""What operators and integrators see of a running ``reserves serve``: /metrics scraped during
a workload, /ready, the served documents, and one correlation id across the JSON log lines."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from services.topics import ALL, ERP_EVENTS, ensure_topics
from tests.e2e import serve
from tests.support import ERP_AUTH, SKU, WAREHOUSE, auth, seed_facts, uid
from tests.support import wait_for as wait_until

pytestmark = pytest.mark.e2e
DOCS = Path(__file__).resolve().parents[2] / "docs"
ROUNDS = 15


service = serve.service_fixture("observe", {"RESERVES_MONITOR_INTERVAL": "0.5"})


def metrics(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float | None:
    return scrape.get((name, frozenset(labels.items())))


def play(url: str, traced: list[str], errors: list[str]) -> None:
    """Rounds of the seed's story over HTTP: facts, a request, a give, a refused request."""
    with httpx.Client(base_url=url, timeout=20) as client:
        for _ in range(ROUNDS):
            owner, requester = uid("own-"), uid("req-")
            cid = f"e2e-{uuid.uuid4()}"
            r = client.post("/v1/erp/events", json=seed_facts(owner, requester),
                            headers=ERP_AUTH)
            body = {"from_order_id": owner, "to_order_id": requester, "sku": SKU,
                    "warehouse": WAREHOUSE, "quantity": 8}
            asked = client.post("/v1/reserve-requests", json=body,
                                headers={**auth("ivanov"), "X-Correlation-Id": cid})
            if r.status_code != 200 or asked.status_code != 201:
                errors.append(f"{r.status_code} {asked.status_code} {asked.text}")
                return
            request_id = asked.json()["request_id"]
            given = client.post(f"/v1/reserve-requests/{request_id}/give", json={},
                                headers={**auth("petrova"), "X-Correlation-Id": f"{cid}-give"})
            again = client.post("/v1/reserve-requests", json=body, headers=auth("ivanov"))
            if given.status_code != 200 or again.status_code != 409:
                errors.append(f"give {given.status_code}, again {again.status_code}")
                return
            traced.append(cid)


async def _poison(bootstrap: str, count: int) -> None:
    await ensure_topics(bootstrap, 3, 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(ERP_EVENTS, b"not json", key=uid().encode())
                               for _ in range(count)])
    finally:
        await producer.stop()


def test_metrics_during_a_workload_and_the_traces_it_leaves(service: serve.Running) -> None:
    client = httpx.Client(base_url=service.url, timeout=20)
    wait_until(lambda: client.get("/ready").status_code == 200, timeout=60,
               interval=0.2, what="/ready to answer 200")
    asyncio.run(_poison(service.kafka, 2))
    traced: list[str] = []
    errors: list[str] = []
    worker = threading.Thread(target=play, args=(service.url, traced, errors))
    worker.start()
    wait_until(lambda: len(traced) >= 3 or errors or not worker.is_alive(), timeout=60,
               what="the workload to get going")
    during = client.get("/metrics").text  # scraped while the workload runs
    worker.join(120)
    assert not errors, errors
    assert len(traced) == ROUNDS
    (service.log.parent / "metrics-during-workload.txt").write_text(during)
    assert "reserves_commands_total" in during and "http_request_duration_seconds" in during

    finished = time.time()

    def settled() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        scrape = metrics(client)
        # figures the monitor read after the workload ended (it may finish within one of the
        # monitor's intervals: the figures of before it also show every lag at 0)
        fresh = all((value(scrape, "reserves_monitor_last_success_timestamp_seconds",
                           dependency=d) or 0) > finished for d in ("postgres", "broker"))
        caught_up = fresh and (value(scrape, "reserves_relay_lag_events") == 0
                     and value(scrape, "reserves_projection_lag_events", projection="orders") == 0
                     and value(scrape, "reserves_projection_lag_events",
                               projection="requests") == 0
                     and value(scrape, "reserves_consumer_lag_messages", topic=ERP_EVENTS,
                               group="reserves-erp") == 0)
        return scrape if caught_up else None

    scrape = wait_until(settled, timeout=60, interval=0.3, what="every lag to reach 0")
    assert value(scrape, "reserves_commands_total", type="RequestReserve", outcome="ok",
                 source="http") == ROUNDS
    assert value(scrape, "reserves_commands_total", type="GiveReserve", outcome="ok",
                 source="http") == ROUNDS
    assert value(scrape, "reserves_refusals_total", code="insufficient_reserve",
                 source="http") == ROUNDS
    assert value(scrape, "reserves_erp_facts_total", outcome="accepted",
                 source="http") == 5 * ROUNDS
    assert (value(scrape, "reserves_dlq_messages") or 0) >= 2
    assert (value(scrape, "reserves_store_position") or 0) > 5 * ROUNDS
    assert (value(scrape, "http_request_duration_seconds_count", method="POST",
                  handler="/v1/reserve-requests/{request_id}/give") or 0) == ROUNDS
    assert value(scrape, "reserves_dependency_up", dependency="broker") == 1
    assert any(name.startswith("faststream_received_messages_total") for name, _ in scrape)

    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"

    cid = traced[0]
    lines = [json.loads(line) for line in service.log.read_text().splitlines()
             if line.startswith("{")]
    ours = [line for line in lines if line.get("correlation_id") == cid]
    assert any(line["logger"] == "services.observability" and line.get("status") == 201
               and line.get("command") == "RequestReserve" for line in ours), ours
    assert any(line["logger"] == "projections.relay" and line["message"].startswith("published")
               for line in ours), ours
    assert any(line["logger"] == "projections.projector"
               and line["message"].startswith("projected") for line in ours), ours
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)


def test_the_served_documents_are_the_exported_ones(service: serve.Running) -> None:
    with httpx.Client(base_url=service.url, timeout=20) as client:
        asyncapi = client.get("/asyncapi.json")
        html = client.get("/asyncapi")
        openapi = client.get("/openapi.json")
        swagger = client.get("/docs")
    assert asyncapi.json() == json.loads((DOCS / "asyncapi.json").read_text())
    assert {c["address"] for c in asyncapi.json()["channels"].values()} == set(ALL)
    assert html.status_code == 200 and "asyncapi" in html.text.lower()
    assert openapi.json() == json.loads((DOCS / "openapi.json").read_text())
    assert swagger.status_code == 200 and "swagger" in swagger.text.lower()
