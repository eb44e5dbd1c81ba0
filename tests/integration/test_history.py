"""An order's history: every fact and command that touched it, who did it, its open requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from domain import commands as c
from handlers.http_api import create_http_app
from handlers.wire import parse_erp_body
from services.runtime import Core
from tests.support import ERP_AUTH, ERP_TOKEN, SKU, TOKENS, WAREHOUSE, auth, seed_facts, uid


def _story(core: Core) -> tuple[str, str, str]:
    """The seed, then: a declined request, a partial give of 5, and one request left open."""
    owner, requester = uid("o-"), uid("r-")
    core.erp.ingest(parse_erp_body(seed_facts(owner, requester)))

    def ask(quantity: int) -> str:
        out = core.commands.execute(c.RequestReserve(owner, requester, SKU, WAREHOUSE, quantity),
                                    "ivanov")
        assert out.status == 201, out.body
        return str(out.body["request_id"])

    declined = ask(3)
    assert core.commands.execute(c.DeclineReserveRequest(declined, "нужен самим"),
                                 "petrova").status == 200
    given = ask(8)
    assert core.commands.execute(c.GiveReserve(given, 5), "petrova").status == 200
    pending = ask(3)
    while core.projector.run_once():
        pass
    return owner, requester, pending


def _by_type(history: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in history["timeline"]:
        found.setdefault(entry["type"], []).append(entry)
    return found


def test_history_tells_why_the_order_is_not_green(core: Core) -> None:
    owner, requester, pending = _story(core)

    history = core.history.order(requester)

    assert history is not None
    assert history["status"] == "new"
    assert history["lines"][0]["shortage"] == 3
    events = _by_type(history)
    assert [e["by"] for e in events["OrderPlaced"]] == ["ERP connector"]
    assert [e["by"] for e in events["ReservePlaced"]] == ["ERP connector"]
    assert [(e["by"], e["quantity"]) for e in events["ReserveMovedIn"]] == [("petrova", 5)]
    assert [e["by"] for e in events["ReserveRequested"]] == ["ivanov"] * 3
    assert [e["by"] for e in events["ReserveRequestDeclined"]] == ["petrova"]
    assert "нужен самим" in events["ReserveRequestDeclined"][0]["what"]
    assert [(e["by"], e["quantity"]) for e in events["ReserveGiven"]] == [("petrova", 5)]
    times = [e["at"] for e in history["timeline"]]
    assert times == sorted(times)
    assert len({e["event_id"] for e in history["timeline"]}) == len(history["timeline"])
    assert [r["request_id"] for r in history["open_requests"]["outgoing"]] == [pending]
    assert history["open_requests"]["incoming"] == []

    owner_history = core.history.order(owner)
    assert owner_history is not None
    assert [r["request_id"] for r in owner_history["open_requests"]["incoming"]] == [pending]
    assert [(e["by"], e["quantity"]) for e in _by_type(owner_history)["ReserveMovedOut"]] == [
        ("petrova", 5)]
    assert core.history.order("no-such-order") is None


@pytest.fixture
def client(core: Core) -> Iterator[TestClient]:
    with TestClient(create_http_app(core)) as client:
        yield client


def test_history_over_http_is_readable_by_any_manager(core: Core, client: TestClient) -> None:
    _, requester, pending = _story(core)

    by_sidorov = client.get(f"/v1/orders/{requester}/history", headers=auth("sidorov"))

    assert by_sidorov.status_code == 200, by_sidorov.text
    body = by_sidorov.json()
    assert body == json.loads(json.dumps(core.history.order(requester), default=str))
    assert body["open_requests"]["outgoing"][0]["request_id"] == pending
    assert client.get(f"/v1/orders/{requester}/history").status_code == 401
    erp = client.get(f"/v1/orders/{requester}/history", headers=ERP_AUTH)
    assert erp.status_code == 403 and erp.json()["error"]["code"] == "forbidden"
    unknown = client.get("/v1/orders/nope/history", headers=auth("ivanov"))
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "order_not_found"


def test_history_command_prints_the_timeline(core: Core, database_url: str,
                                             tmp_path: Path) -> None:
    _, requester, pending = _story(core)
    env = {**os.environ, "DATABASE_URL": database_url, "RESERVES_VAR_DIR": str(tmp_path),
           "RESERVES_API_TOKENS": ",".join(f"{m}={t}" for t, m in TOKENS.items()),
           "RESERVES_ERP_TOKENS": ERP_TOKEN, "COLUMNS": "220"}

    done = subprocess.run([sys.executable, "-m", "services.cli", "history", requester], env=env,
                          capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr
    assert "F4718999" in done.stderr and "status new" in done.stderr
    assert "ReserveRequestDeclined" in done.stderr and "нужен самим" in done.stderr
    assert pending in done.stderr
    as_json = subprocess.run([sys.executable, "-m", "services.cli", "history", requester,
                              "--json"], env=env, capture_output=True, text=True, timeout=120,
                             check=False)
    assert json.loads(as_json.stdout)["open_requests"]["outgoing"][0]["request_id"] == pending
    missing = subprocess.run([sys.executable, "-m", "services.cli", "history", "nope"], env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert missing.returncode == 1 and "unknown" in missing.stderr
