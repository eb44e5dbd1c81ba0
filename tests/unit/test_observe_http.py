"""The operators' HTTP routes and the correlation header, on an app with fake services."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from handlers.auth import Authenticator
from handlers.http_api import create_http_app
from handlers.observe_http import create_ops_app
from tests.support import TOKENS, auth


class DownViews:
    def stock(self, warehouse: str, sku: str) -> dict[str, Any]:
        raise psycopg.OperationalError("connection refused")


class NotReady:
    async def readiness(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        return False, {"postgres": {"ok": True},
                       "projections": {"ok": False, "error": "views 5000 behind"}}


def app(readiness: Any = None) -> TestClient:
    services = SimpleNamespace(auth=Authenticator(dict(TOKENS), frozenset({"tok-erp"})),
                               views=DownViews(), commands=None, erp=None)
    return TestClient(create_http_app(services, readiness=readiness, console=False),
                      raise_server_exceptions=False)


def test_a_503_keeps_the_callers_correlation_id() -> None:
    with app() as client:
        response = client.get("/v1/stock/W1/S1",
                              headers={**auth("ivanov"), "X-Correlation-Id": "cid-503"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert response.headers["x-correlation-id"] == "cid-503"


def test_errors_of_the_contract_carry_the_header_too() -> None:
    with app() as client:
        response = client.get("/v1/stock/W1/S1", headers={"X-Correlation-Id": "cid-401"})
    assert response.status_code == 401
    assert response.headers["x-correlation-id"] == "cid-401"


def test_ready_answers_503_with_the_failing_checks() -> None:
    with app(NotReady()) as client:
        response = client.get("/ready")
        health = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["error"]["code"] == "not_ready"
    assert "projections: views 5000 behind" in body["error"]["message"]
    assert body["checks"]["projections"]["ok"] is False
    assert health.status_code == 200


def test_ready_without_checks_is_not_ready() -> None:
    with app() as client:
        response = client.get("/ready")
    assert response.status_code == 503 and response.json()["checks"] == {}


def test_asyncapi_is_served_as_json_and_html() -> None:
    with app() as client:
        document = client.get("/asyncapi.json")
        page = client.get("/asyncapi")
    assert document.json()["asyncapi"].startswith("3.")
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_a_process_without_the_api_still_serves_health_ready_and_metrics() -> None:
    with TestClient(create_ops_app(NotReady())) as client:
        health, ready, metrics = (client.get(p) for p in ("/health", "/ready", "/metrics"))
        api = client.get("/v1/inbox", headers=auth("ivanov"))
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
    assert metrics.status_code == 200 and "reserves_commands_total" in metrics.text
    assert api.status_code == 404
