"""The operators' and integrators' HTTP routes: /metrics, /ready, /asyncapi, and the
correlation id of every request.

``/health`` (in http_api) only says the process is alive; ``/ready`` says whether it can do its
work now. Neither needs a token; neither reveals anything but figures and reasons (put
``/metrics`` behind your network's scrape path, not the public ingress).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from timeit import default_timer
from typing import Any, Protocol

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import Counter, Histogram, Summary
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import TypeAdapter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from handlers.outcome import error_body
from services.tracing import valid_correlation_id

CORRELATION_HEADER = "X-Correlation-Id"
REF = "#/components/schemas/{model}"


class Readiness(Protocol):
    async def readiness(self) -> tuple[bool, dict[str, dict[str, Any]]]: ...


@cache
def _asyncapi() -> dict[str, Any]:
    from services.contracts import asyncapi_document  # the spec needs the whole wire layer

    return asyncapi_document()


@dataclass(frozen=True)
class _HttpMetrics:
    total: Counter
    request_size: Summary
    response_size: Summary
    latency_highr: Histogram
    latency: Histogram


# prometheus-fastapi-instrumentator's default set (metrics.default()): the same names, labels
# and buckets, so dashboards and alerts read them as before.
_HIGHR_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4,
                  4.5, 5, 7.5, 10, 30, 60)


@cache
def _http_metrics() -> _HttpMetrics:
    """Made once per process: they live in the process's registry, and a second app (tests
    build many) must record into the same ones."""
    return _HttpMetrics(
        total=Counter("http_requests_total",
                      "Total number of requests by method, status and handler.",
                      ("method", "status", "handler")),
        request_size=Summary("http_request_size_bytes",
                             "Content length of incoming requests by handler. Only value of "
                             "header is respected. Otherwise ignored.", ("handler",)),
        response_size=Summary("http_response_size_bytes",
                              "Content length of outgoing responses by handler. Only value of "
                              "header is respected. Otherwise ignored.", ("handler",)),
        latency_highr=Histogram("http_request_duration_highr_seconds",
                                "Latency with many buckets but no API specific labels.",
                                buckets=_HIGHR_BUCKETS),
        latency=Histogram("http_request_duration_seconds",
                          "Latency with only few buckets by handler.", ("method", "handler"),
                          buckets=(0.1, 0.5, 1)),
    )


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


class HttpMetrics:
    """Counts and times every HTTP request by its route's template (``handler``), as
    ``prometheus-fastapi-instrumentator`` did, for a fifth of its cost: the template is the
    route the app's router matched (FastAPI leaves it in the scope), not found again by
    matching every route a second time, and no request and response objects are built for the
    figures. The instrumentator took about 60 µs of CPU per request, some 3 % of a give
    (docs/performance.md). ``/metrics`` itself is not counted; an unmatched path is ``none``.
    """

    def __init__(self, app: ASGIApp, excluded: Iterable[str] = ("/metrics",)) -> None:
        self.app = app
        self.excluded = frozenset(excluded)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = default_timer()
        root_path = scope.get("root_path", "")
        status = 500
        response_headers: Iterable[tuple[bytes, bytes]] = ()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = message.get("headers", ())
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            handler = _handler(scope, root_path)
            if handler not in self.excluded:
                duration = max(default_timer() - started, 0.0)
                method = scope["method"]
                total, request_size, response_size, latency_highr, latency = _series(
                    method if method in _METHODS else "other", int(status), handler)
                total.inc()
                request_size.observe(_content_length(scope["headers"]))
                response_size.observe(_content_length(response_headers))
                latency_highr.observe(duration)
                latency.observe(duration)


# A method outside these is counted as "other": a client cannot grow the series at will.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@functools.lru_cache(maxsize=1024)
def _series(method: str, status: int, handler: str) -> tuple[Any, Any, Any, Any, Any]:
    """The series one request records into (``labels`` looked up once per combination: the
    handlers are templates, so there are few)."""
    m = _http_metrics()
    return (m.total.labels(method, str(status), handler), m.request_size.labels(handler),
            m.response_size.labels(handler), m.latency_highr, m.latency.labels(method, handler))


def _handler(scope: Scope, root_path: str) -> str:
    """The template of the route the router matched (also when only its path did: a 405),
    a mount's path for what a mounted app served, else ``none``."""
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "none"))
    mounted = scope.get("root_path", "")
    if scope.get("endpoint") is not None and mounted != root_path:
        return str(mounted[len(root_path):])
    return "none"


def install(app: FastAPI, readiness: Readiness | None) -> None:
    """Adds the routes and middleware; call once, before the app serves."""
    _http_metrics()
    app.add_middleware(HttpMetrics)
    Instrumentator().expose(app, include_in_schema=False)  # GET /metrics
    # Added last, so outermost: every log line of a request (errors included) carries its id.
    app.add_middleware(CorrelationIdMiddleware, header_name=CORRELATION_HEADER,
                       generator=lambda: str(uuid.uuid4()), validator=valid_correlation_id)

    @app.get("/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        if readiness is None:
            return JSONResponse({**error_body("not_ready", "This process has no readiness "
                                              "checks configured."), "checks": {}}, 503)
        ok, checks = await readiness.readiness()
        if ok:
            return JSONResponse({"status": "ready", "checks": checks})
        failing = ", ".join(f"{name}: {c.get('error', 'failing')}"
                            for name, c in checks.items() if not c["ok"])
        return JSONResponse({**error_body("not_ready", f"Not ready: {failing}."),
                             "checks": checks}, status_code=503)

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi_json() -> JSONResponse:
        return JSONResponse(_asyncapi())

    @app.get("/asyncapi", include_in_schema=False)
    async def asyncapi_html() -> HTMLResponse:
        from faststream.specification import get_asyncapi_html
        from faststream.specification.asyncapi.v3_0_0.schema import ApplicationSchema

        spec = ApplicationSchema.model_validate(_asyncapi())
        return HTMLResponse(get_asyncapi_html(spec, try_it_out_path=None))


def create_ops_app(readiness: Readiness | None) -> FastAPI:
    """``/health``, ``/ready`` and ``/metrics`` alone, for a process that serves no API (a
    consumers-only or relay-only role): run it with uvicorn on a port of its own so every
    process can be scraped and probed."""
    app = FastAPI(title="Reserve exchange (operations)", docs_url=None, redoc_url=None,
                  openapi_url=None)
    install(app, readiness)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def body_of(schema: str, *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` for a route that parses its JSON body itself (to answer errors in the
    contract's shape): documents the body without changing how it is read."""
    return {"requestBody": {"required": required, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{schema}"}}}}}


def add_schemas(app: FastAPI, schemas: dict[str, Any]) -> None:
    """Adds the schemas named by :func:`body_of` to the app's OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = generate()
            components = doc.setdefault("components", {}).setdefault("schemas", {})
            for name, annotation in schemas.items():
                schema = TypeAdapter(annotation).json_schema(ref_template=REF)
                components.update(schema.pop("$defs", {}))
                components[name] = schema
            doc["components"]["securitySchemes"] = {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "A manager's token (RESERVES_API_TOKENS) or an ERP connector's "
                               "(RESERVES_ERP_TOKENS)."}}
            doc["security"] = [{"bearer": []}]
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
