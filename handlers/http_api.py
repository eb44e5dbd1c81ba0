"""The HTTP API of the contract. Routes only translate: wire in, one handler call, wire out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import psycopg
import psycopg_pool
from eventsourcing.persistence import InterfaceError, OperationalError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from console import mount_console
from domain import commands as c
from handlers import wire
from handlers.auth import Authenticator, Caller
from handlers.commands import CommandHandler, RetriesExhaustedError
from handlers.erp import ErpIngest, FactRefusedError
from handlers.observe_http import Readiness, add_schemas, body_of, install
from handlers.outcome import STATUS_BY_KIND, Outcome, error_body
from projections.history import OrderHistory
from projections.queries import Views
from services.async_store import AsyncStore
from services.observability import record_command, record_erp, record_erp_refusal

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
UNAVAILABLE = (OperationalError, InterfaceError, psycopg.OperationalError,
               psycopg.InterfaceError, psycopg_pool.PoolTimeout, RetriesExhaustedError)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Services(Protocol):
    database_url: str
    commands: CommandHandler
    erp: ErpIngest
    views: Views
    auth: Authenticator
    history: OrderHistory


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status)


async def _json_body(request: Request) -> Any:
    raw = bytearray()
    async for chunk in request.stream():  # stop reading at the limit, not after the whole body
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, "body_too_large", f"The body exceeds {MAX_BODY_BYTES} bytes.")
    if not raw.strip():
        return {}
    try:
        return wire.decode_json(bytes(raw))
    except wire.MalformedJsonError as e:
        raise ApiError(400, "malformed_json", f"The body cannot be read: {e}.") from None


def _no_nul_in_path(*values: str) -> None:
    if wire.has_nul(*values):
        raise ApiError(422, "validation_failed", "A path parameter contains U+0000.")


def _validate(model: type[BaseModel], payload: Any) -> Any:
    if not isinstance(payload, dict):
        raise ApiError(400, "malformed_body", "The body must be a JSON object.")
    return model.model_validate(payload)


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": wire.ErrorBody, "description": what} for status, what in (
        (400, "malformed"), (401, "no or bad token"), (403, "not yours"),
        (404, "unknown id"), (409, "a rule of the domain says no"), (422, "fails validation"),
        (503, "PostgreSQL unreachable; nothing changed"))}


def _answers(model: type[BaseModel], status: int = 200) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": model}, **ERRORS}


class CommandStores:
    """The commands' store on each event loop that serves the app (uvicorn's; each TestClient's
    portal has its own), started by the app's lifespan or by whoever runs the server. Commands
    on a loop without one run in a thread, as every command once did."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._by_loop: dict[asyncio.AbstractEventLoop, AsyncStore] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # a stand-in without a database (a unit test's) keeps the thread path
        commands = getattr(self._services, "commands", None)
        url = getattr(self._services, "database_url", None)
        if loop not in self._by_loop and commands is not None and url is not None:
            # kept before it opens, so that close() closes it even if opening was interrupted:
            # an async pool left open while its loop ends can hang that loop's shutdown
            store = self._by_loop[loop] = AsyncStore(commands.store, url)
            await store.open()

    def current(self) -> AsyncStore | None:
        return self._by_loop.get(asyncio.get_running_loop())

    async def close(self) -> None:
        store = self._by_loop.pop(asyncio.get_running_loop(), None)
        if store is not None:
            await store.close()


def create_http_app(services: Services, *, title: str = "Reserve exchange",
                    readiness: Readiness | None = None, console: bool = True) -> FastAPI:
    """The API; with ``console`` also the managers' web pages (which need the database, and
    are left out of the OpenAPI document anyway).

    ``app.state.command_stores`` (:class:`CommandStores`) holds what the commands await on
    the serving loop: the lifespan starts and closes it; a server run with the lifespan off
    calls its ``start`` and ``close`` itself."""
    stores = CommandStores(services)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await stores.start()
        try:
            yield
        finally:
            await stores.close()

    app = FastAPI(title=title, version="1", docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.state.command_stores = stores
    install(app, readiness)  # /metrics, /ready, /asyncapi, X-Correlation-Id
    add_schemas(app, {"ErpEvents": wire.ERP_MESSAGE, "RequestReserveBody": wire.RequestReserveBody,
                      "GiveBody": wire.GiveBody, "DeclineBody": wire.DeclineBody})

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(ValidationError)
    async def _invalid(request: Request, exc: ValidationError) -> JSONResponse:
        return _error(422, "validation_failed", wire.validation_message(exc))

    @app.exception_handler(wire.WireError)
    async def _wire(request: Request, exc: wire.WireError) -> JSONResponse:
        return _error(422, "validation_failed", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, UNAVAILABLE):
            log.warning("store unavailable: %s", type(exc).__name__)
            return _error(503, "unavailable",
                          "The service cannot reach its database right now; try again shortly.")
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", "Something went wrong on our side.")

    # The store's errors by class, so they are answered inside the middleware (the answer keeps
    # its X-Correlation-Id); anything else falls through to the catch-all.
    for unavailable in UNAVAILABLE:
        app.add_exception_handler(unavailable, _unexpected)
    app.add_exception_handler(Exception, _unexpected)

    def caller(request: Request, kind: str) -> Caller:
        who = services.auth.identify(request.headers.get("authorization"))
        if who is None:
            raise ApiError(401, "unauthorized", "A valid bearer token is required.")
        if who.kind != kind:
            raise ApiError(403, "forbidden", "ERP connectors may only post facts; managers may not."
                           if kind == "erp" else "ERP connector tokens may only post facts.")
        return who

    async def command(request: Request, build: Callable[[Any], c.Command]) -> JSONResponse:
        who = caller(request, "manager")
        key = request.headers.get("idempotency-key")
        if key is not None and not 0 < len(key) <= 200:
            raise ApiError(422, "invalid_idempotency_key",
                           "Idempotency-Key must be 1 to 200 characters.")
        cmd = build(await _json_body(request))
        scoped = f"http:{who.name}:{key}" if key is not None else None
        store = stores.current()
        outcome: Outcome = (
            await run_in_threadpool(services.commands.execute, cmd, who.name, scoped)
            if store is None else
            await services.commands.execute_async(cmd, who.name, scoped, store))
        record_command(type(cmd).__name__, outcome, "http")
        return JSONResponse(outcome.body, status_code=outcome.status)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/erp/events", responses=_answers(wire.ErpAccepted),
              openapi_extra=body_of("ErpEvents"))
    async def post_erp_events(request: Request) -> JSONResponse:
        caller(request, "erp")
        payload = await _json_body(request)
        if not isinstance(payload, dict | list):
            raise ApiError(400, "malformed_body", "The body must be an envelope or an array.")
        envelopes = wire.parse_erp_body(payload)  # WireError → 422
        try:
            result = await run_in_threadpool(services.erp.ingest, envelopes)
        except FactRefusedError as e:
            record_erp_refusal(e.error.code, len(envelopes), "http")
            return _error(STATUS_BY_KIND.get(e.error.kind, 409), e.error.code, str(e))
        record_erp(result.accepted, result.duplicates, "http")
        return JSONResponse({"accepted": result.accepted, "duplicates": result.duplicates})

    @app.get("/v1/stock/{warehouse}/{sku}", responses=_answers(wire.StockView))
    async def get_stock(request: Request, warehouse: str, sku: str) -> dict[str, Any]:
        caller(request, "manager")
        _no_nul_in_path(warehouse, sku)
        return await run_in_threadpool(services.views.stock, warehouse, sku)

    @app.get("/v1/stock/{warehouse}/{sku}/reserves", responses=_answers(wire.ReservesView))
    async def get_reserves(request: Request, warehouse: str, sku: str) -> dict[str, Any]:
        caller(request, "manager")
        _no_nul_in_path(warehouse, sku)
        return await run_in_threadpool(services.views.reserves, warehouse, sku)

    @app.get("/v1/orders/{order_id}", responses=_answers(wire.OrderView))
    async def get_order(request: Request, order_id: str) -> dict[str, Any]:
        caller(request, "manager")
        _no_nul_in_path(order_id)
        found = await run_in_threadpool(services.views.order, order_id)
        if found is None:
            raise ApiError(404, "order_not_found", f"Customer order {order_id!r} is unknown.")
        return found

    @app.get("/v1/orders/{order_id}/history", responses=_answers(wire.OrderHistoryView))
    async def get_order_history(request: Request, order_id: str) -> dict[str, Any]:
        caller(request, "manager")  # like every view: any manager may read any order
        _no_nul_in_path(order_id)
        found = await run_in_threadpool(services.history.order, order_id)
        if found is None:
            raise ApiError(404, "order_not_found", f"Customer order {order_id!r} is unknown.")
        return found

    @app.get("/v1/reserve-requests/{request_id}", responses=_answers(wire.RequestView))
    async def get_request(request: Request, request_id: str) -> dict[str, Any]:
        caller(request, "manager")
        _no_nul_in_path(request_id)
        found = await run_in_threadpool(services.views.request, request_id)
        if found is None:
            raise ApiError(404, "request_not_found", f"Reserve request {request_id!r} is unknown.")
        return found

    @app.get("/v1/inbox", responses=_answers(wire.InboxView))
    async def get_inbox(request: Request) -> dict[str, Any]:
        who = caller(request, "manager")
        return await run_in_threadpool(services.views.inbox, who.name)

    @app.post("/v1/reserve-requests", status_code=201,
              responses=_answers(wire.RequestAnswer, 201),
              openapi_extra=body_of("RequestReserveBody"))
    async def post_request(request: Request) -> JSONResponse:
        return await command(request,
                             lambda b: _validate(wire.RequestReserveBody, b).command())

    @app.post("/v1/reserve-requests/{request_id}/give", responses=_answers(wire.RequestAnswer),
              openapi_extra=body_of("GiveBody", required=False))
    async def post_give(request: Request, request_id: str) -> JSONResponse:
        return await command(request, lambda b: _validate(wire.GiveBody, b).command(request_id))

    @app.post("/v1/reserve-requests/{request_id}/decline",
              responses=_answers(wire.RequestAnswer), openapi_extra=body_of("DeclineBody"))
    async def post_decline(request: Request, request_id: str) -> JSONResponse:
        return await command(request, lambda b: _validate(wire.DeclineBody, b).command(request_id))

    @app.post("/v1/reserve-requests/{request_id}/cancel",
              responses=_answers(wire.RequestAnswer))
    async def post_cancel(request: Request, request_id: str) -> JSONResponse:
        return await command(request, lambda b: _validate(wire.CancelBody, b).command(request_id))

    if console:
        mount_console(app, services)  # the managers' web console at / (console/)
    return app
