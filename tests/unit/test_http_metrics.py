"""The HTTP metrics middleware (handlers.observe_http.HttpMetrics): what each request records,
under which handler, without a database (a small app with the same middleware)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from handlers.observe_http import install


def _sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _app(static: Path) -> FastAPI:
    app = FastAPI()
    install(app, None)

    @app.post("/t/items/{item_id}/give")
    async def give(item_id: str) -> dict[str, str]:
        return {"item_id": item_id}

    @app.get("/t/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    app.mount("/t/static", StaticFiles(directory=static), name="t-static")
    return app


def test_a_request_is_counted_and_timed_under_its_route_template(tmp_path: Path) -> None:
    handler = "/t/items/{item_id}/give"
    before = _sample("http_requests_total", method="POST", status="200", handler=handler)
    timed = _sample("http_request_duration_seconds_count", method="POST", handler=handler)
    highr = _sample("http_request_duration_highr_seconds_count")
    sizes = _sample("http_request_size_bytes_sum", handler=handler)
    with TestClient(_app(tmp_path)) as client:
        for n in ("a", "b"):
            answer = client.post(f"/t/items/{n}/give", content=b"12345")
            assert answer.status_code == 200
    assert _sample("http_requests_total", method="POST", status="200",
                   handler=handler) == before + 2
    assert _sample("http_request_duration_seconds_count", method="POST",
                   handler=handler) == timed + 2
    assert _sample("http_request_duration_highr_seconds_count") >= highr + 2
    assert _sample("http_request_size_bytes_sum", handler=handler) == sizes + 10
    assert _sample("http_response_size_bytes_count", handler=handler) >= 2


def test_not_found_wrong_method_errors_mounts_and_metrics_itself(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    counts = {
        ("GET", "404", "none"): 0.0,
        ("GET", "405", "/t/items/{item_id}/give"): 0.0,  # the path matched, the method not
        ("GET", "500", "/t/boom"): 0.0,
        ("GET", "200", "/t/static"): 0.0,
        ("other", "405", "/t/items/{item_id}/give"): 0.0,  # a made-up method
    }
    for method, status, handler in counts:
        counts[(method, status, handler)] = _sample(
            "http_requests_total", method=method, status=status, handler=handler)
    scraped = _sample("http_requests_total", method="GET", status="200", handler="/metrics")
    with TestClient(_app(tmp_path), raise_server_exceptions=False) as client:
        assert client.get("/t/nowhere").status_code == 404
        assert client.get("/t/items/a/give").status_code == 405
        assert client.get("/t/boom").status_code == 500
        assert client.get("/t/static/x.txt").text == "hello"
        assert client.request("BREW", "/t/items/a/give").status_code == 405
        assert client.get("/metrics").status_code == 200
    for (method, status, handler), before in counts.items():
        assert _sample("http_requests_total", method=method, status=status,
                       handler=handler) == before + 1, (method, status, handler)
    assert _sample("http_requests_total", method="GET", status="200",
                   handler="/metrics") == scraped == 0.0
