"""The operators' and integrators' HTTP routes: /metrics, /ready, /asyncapi, and the
correlation id of every request.

``/health`` (in http_api) only says the process is alive; ``/ready`` says whether it can do its
work now. Neither needs a token; neither reveals anything but figures and reasons (put
``/metrics`` behind your network's scrape path, not the public ingress).
"""

from __future__ import annotations

import uuid
from functools import cache
from typing import Any, Protocol

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_fastapi_instrumentator import Instrumentator, metrics
from pydantic import TypeAdapter

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


@cache
def _http_metrics() -> Any:
    """The instrumentator's default HTTP metrics, made once per process: it registers them in
    the process's registry, and a second app (tests build many) would otherwise record nothing."""
    return metrics.default()


def install(app: FastAPI, readiness: Readiness | None) -> None:
    """Adds the routes and middleware; call once, before the app serves."""
    Instrumentator(should_group_status_codes=False, excluded_handlers=["/metrics"],
                   ).add(_http_metrics()).instrument(app).expose(app, include_in_schema=False)
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
