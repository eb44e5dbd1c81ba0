"""``make demo``: the seed's story through the public HTTP API, printed as each manager sees it.

Uses a running ``reserves serve`` (found through ``var/runtime.json``) or starts its own on the
embedded defaults and stops it afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from services.settings import load_settings

console = Console()
SKU = "CTS66443"


class DemoError(Exception):
    pass


def _running_url(var_dir: Path) -> str | None:
    path = var_dir / "runtime.json"
    if not path.exists():
        return None
    url = str(json.loads(path.read_text())["http"])
    try:
        return url if httpx.get(f"{url}/health", timeout=1).status_code == 200 else None
    except httpx.HTTPError:
        return None


def _start_service(var_dir: Path) -> subprocess.Popen[bytes]:
    console.print("[dim]No running service found: starting `reserves serve` for the demo…[/]")
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _running_url(var_dir) is None:
        if proc.poll() is not None:
            raise DemoError("`reserves serve` exited; run `make run` to see why.")
        if time.monotonic() > deadline:
            proc.terminate()
            raise DemoError("`reserves serve` did not become healthy within 120 s.")
        time.sleep(0.2)
    return proc


def _wait(client: httpx.Client, path: str, token: str, check: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        response = client.get(path, headers={"Authorization": f"Bearer {token}"})
        body: dict[str, Any] = response.json()
        if response.status_code == 200 and check(body):
            return body
        if time.monotonic() > deadline:
            raise DemoError(f"{path} did not show the expected state: {body}")
        time.sleep(0.05)


def play(url: str, managers: dict[str, str], erp_token: str) -> None:
    """managers: name → token. The first two play the owner and the requester."""
    owner, requester = sorted(managers)[1], sorted(managers)[0]
    run = uuid.uuid4().hex[:6]
    warehouse = f"Склад-демо-{run}"
    owner_order, requester_order = f"demo-{run}-owner", f"demo-{run}-requester"
    bearer = {m: {"Authorization": f"Bearer {t}"} for m, t in managers.items()}

    def envelope(type_: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"event_id": f"demo-{run}-{uuid.uuid4().hex[:8]}", "type": type_,
                "occurred_at": "2020-04-30T08:42:28+03:00", "data": data}

    with httpx.Client(base_url=url, timeout=10) as client:
        console.rule("1. The ERP reports stock and two customer orders")
        facts = [
            envelope("StockLevelSet", {"warehouse": warehouse, "sku": SKU, "on_hand": 10}),
            envelope("CustomerOrderPlaced", {
                "order_id": owner_order, "number": "F4718837", "date": "2020-04-30T08:42:28",
                "partner": "ООО Ромашка", "manager": owner,
                "lines": [{"sku": SKU, "warehouse": warehouse, "quantity": 8}]}),
            envelope("ReservePlaced", {"order_id": owner_order, "sku": SKU,
                                       "warehouse": warehouse, "quantity": 8}),
            envelope("CustomerOrderPlaced", {
                "order_id": requester_order, "number": "F4718999", "date": "2020-05-04T10:15:00",
                "partner": "ИП Васильев (портал)", "manager": requester,
                "lines": [{"sku": SKU, "warehouse": warehouse, "quantity": 10}]}),
            envelope("ReservePlaced", {"order_id": requester_order, "sku": SKU,
                                       "warehouse": warehouse, "quantity": 2}),
        ]
        answer = client.post("/v1/erp/events", json=facts,
                             headers={"Authorization": f"Bearer {erp_token}"})
        answer.raise_for_status()
        console.print(f"POST /v1/erp/events → {answer.json()}")

        console.rule(f"2. {requester}: order F4718999 is short («Новый» / «На проверке»)")
        order = _wait(client, f"/v1/orders/{requester_order}", managers[requester],
                      lambda b: True)
        console.print(f"status [bold red]{order['status']}[/], lines {order['lines']}")

        console.rule(f"3. {requester}: «Обеспечение заказа клиента» for {SKU}")
        stock = _wait(client, f"/v1/stock/{warehouse}/{SKU}", managers[requester],
                      lambda b: b["reserved"] == 10)
        console.print(f"on hand {stock['on_hand']}, reserved {stock['reserved']}, "
                      f"free {stock['free']}")

        console.rule(f"4. {requester}: the reserves of {SKU}")
        reserves = _wait(client, f"/v1/stock/{warehouse}/{SKU}/reserves", managers[requester],
                         lambda b: len(b["reserves"]) == 2)
        table = Table("order", "number", "date", "manager", "quantity")
        for r in reserves["reserves"]:
            table.add_row(r["order_id"], r["number"], r["date"], r["manager"], str(r["quantity"]))
        console.print(table)

        console.rule(f"5. {requester} asks {owner} for 8 («Запросить»)")
        asked = client.post("/v1/reserve-requests", headers=bearer[requester], json={
            "from_order_id": owner_order, "to_order_id": requester_order, "sku": SKU,
            "warehouse": warehouse, "quantity": 8})
        asked.raise_for_status()
        request_id = asked.json()["request_id"]
        console.print(f"POST /v1/reserve-requests → {asked.status_code} {asked.json()}")

        console.rule(f"6–7. {owner}: «Обсуждения»")
        inbox = _wait(client, "/v1/inbox", managers[owner],
                      lambda b: any(m["request_id"] == request_id for m in b["messages"]))
        message = next(m for m in inbox["messages"] if m["request_id"] == request_id)
        console.print(Panel(message["text"], title=f"inbox of {owner}"))

        console.rule(f"8. {owner} presses «Отдать резерв»")
        given = client.post(f"/v1/reserve-requests/{request_id}/give", headers=bearer[owner])
        given.raise_for_status()
        console.print(f"POST …/give → {given.status_code} {given.json()}")

        console.rule(f"9. {requester}: «Обсуждения»")
        inbox = _wait(client, "/v1/inbox", managers[requester],
                      lambda b: any(m["kind"] == "reserve_given" and m["request_id"] == request_id
                                    for m in b["messages"]))
        success = next(m for m in inbox["messages"] if m["kind"] == "reserve_given"
                       and m["request_id"] == request_id)
        console.print(Panel(success["text"], title=f"inbox of {requester}", style="green"))

        console.rule("10. Order F4718999")
        order = _wait(client, f"/v1/orders/{requester_order}", managers[requester],
                      lambda b: b["status"] == "green")
        console.print(f"status [bold green]{order['status']}[/], lines {order['lines']}")
        print(success["text"])
        print(f"order F4718999 is {order['status']}")


def main() -> int:
    settings = load_settings()
    managers = {m: t for t, m in settings.api_tokens.items()}
    erp_token = sorted(settings.erp_tokens)[0]
    url = os.environ.get("RESERVES_URL") or _running_url(settings.var_dir)
    proc = None
    try:
        if url is None:
            proc = _start_service(settings.var_dir)
            url = _running_url(settings.var_dir)
            assert url is not None
        play(url, managers, erp_token)
    except (DemoError, httpx.HTTPError) as e:
        console.print(f"[red]demo failed:[/] {e}")
        return 1
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
