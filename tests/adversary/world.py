"""A small story on a real Core for bad inputs to aim at, and what must not change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient

from domain import commands as c
from services.runtime import Core
from tests.adversary.inputs import Target
from tests.support import ERP_AUTH, ERP_TOKEN, SKU, TOKENS, WAREHOUSE, auth, seed_facts, uid


def catch_up(core: Core) -> None:
    while core.projector.run_once():
        pass


@dataclass
class World:
    core: Core
    client: TestClient
    target: Target

    def state(self) -> dict[str, Any]:
        """The event store's end, and every view of the story as each manager sees it."""
        catch_up(self.core)
        t = self.target
        shot: dict[str, Any] = {"position": self.core.store.recorder.max_notification_id()}
        for url in (f"/v1/stock/{t.warehouse}/{t.sku}", f"/v1/stock/{t.warehouse}/{t.sku}/reserves",
                    f"/v1/orders/{t.owner_order}", f"/v1/orders/{t.requester_order}",
                    f"/v1/reserve-requests/{t.request_id}"):
            shot[url] = self.client.get(url, headers=auth("ivanov")).json()
        for manager in ("ivanov", "petrova", "sidorov"):
            shot[manager] = self.client.get("/v1/inbox", headers=auth(manager)).json()
        return shot


def build_world(core: Core, client: TestClient) -> World:
    owner, requester = uid("own-"), uid("req-")
    facts = seed_facts(owner, requester)
    assert client.post("/v1/erp/events", json=facts, headers=ERP_AUTH).status_code == 200
    key, command_id = uid("key-"), uid("cmd-")
    response = client.post("/v1/reserve-requests", headers={**auth("ivanov"),
                                                            "Idempotency-Key": key}, json={
        "from_order_id": owner, "to_order_id": requester, "sku": SKU, "warehouse": WAREHOUSE,
        "quantity": 8})
    assert response.status_code == 201, response.text
    request_id = response.json()["request_id"]
    # a command_id already answered (a refusal: the requester may not give)
    refused = core.commands.execute(c.GiveReserve(request_id, None), "ivanov",
                                    f"kafka:{command_id}")
    assert refused.status == 403
    target = Target(owner, requester, request_id, SKU, WAREHOUSE,
                    {m: t for t, m in TOKENS.items()}, ERP_TOKEN, facts[0]["event_id"], key,
                    command_id)
    return World(core, client, target)
