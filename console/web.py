"""The managers' web console: server-rendered pages over the same handlers and views the HTTP
API uses. Every command goes through ``CommandHandler.execute`` with the signed-in manager as
the actor, so the domain's rules decide who may do what, exactly as for API callers."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError

from console import i18n, session
from console.live import event_stream
from console.queries import ORDER_FILTERS, ConsoleQueries
from domain import commands as c
from handlers import wire
from handlers.auth import Caller
from handlers.outcome import Outcome

if TYPE_CHECKING:
    from handlers.http_api import Services

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC_PATH = "/console/static"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["when"] = i18n.when
    return env


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never ``//host`` or a scheme) may be a redirect target."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/orders"
    return target


def _see_other(path: str, **query: str) -> RedirectResponse:
    suffix = f"?{urlencode(query)}" if query else ""
    return RedirectResponse(path + suffix, status_code=303)


def _quantity(raw: str | None) -> int | None:
    try:
        value = int((raw or "").strip())
    except ValueError:
        return None
    return value if value >= 1 else None


class Console:
    def __init__(self, services: Services, dev_tokens: dict[str, str]) -> None:
        self.services = services
        self.queries = ConsoleQueries(services.views.pool)
        self.dev_tokens = dev_tokens  # manager -> token; empty unless tokens were generated
        self.env = _environment()

    # -- rendering ---------------------------------------------------------------------------

    def render(self, request: Request, template: str, who: Caller | None,
               status: int = 200, **context: Any) -> HTMLResponse:
        lang = i18n.language(request.cookies.get(session.LANG_COOKIE))
        position, unread = self.queries.pulse(who.name) if who else (0, 0)
        position = getattr(request.state, "position", position)

        def t(key: str, **values: object) -> str:
            return i18n.text(lang, key, **values)

        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        html = self.env.get_template(template).render(
            t=t, lang=lang, who=who, unread=unread, position=position,
            csrf=session.csrf_value(request), here=here, static=STATIC_PATH,
            refusal=lambda code, message: i18n.refusal(lang, code, message),
            form_key=lambda: uuid.uuid4().hex, **context)
        response = HTMLResponse(html, status_code=status,
                                headers={"Cache-Control": "no-store",
                                         "Referrer-Policy": "same-origin",
                                         "X-Content-Type-Options": "nosniff",
                                         "X-Frame-Options": "DENY"})
        session.keep_csrf(response, request)
        return response

    def execute(self, who: Caller, key: str, build: Callable[[], BaseModel],
                make: Callable[[Any], c.Command], invalid: str = "invalid_quantity") -> Outcome:
        """Validates a form through the API's own wire model, then runs the command as ``who``;
        the form's one-time key makes a double submission return the first answer."""
        try:
            body = build()
        except ValidationError:
            return Outcome(422, {"error": {"code": invalid, "message": ""}})
        scoped = f"console:{who.name}:{key}" if 0 < len(key) <= 100 else None
        return self.services.commands.execute(make(body), who.name, scoped)

    def guard(self, page: Callable[..., Response]) -> Callable[..., Response]:
        """While PostgreSQL is unreachable a page says so in words (503), like the API does
        in JSON, instead of a stack trace or a JSON body in the manager's browser."""
        from handlers.http_api import UNAVAILABLE  # late: handlers.http_api imports this module

        @functools.wraps(page)
        def guarded(*args: Any, **kwargs: Any) -> Response:
            try:
                return page(*args, **kwargs)
            except UNAVAILABLE as e:
                request = kwargs.get("request")
                if not isinstance(request, Request):
                    raise
                log.warning("console page unavailable: %s", type(e).__name__)
                return self.render(request, "message.html", None, status=503,
                                   text_key="unavailable")

        return guarded

    # -- pages -------------------------------------------------------------------------------

    def router(self) -> APIRouter:
        r = APIRouter(include_in_schema=False)
        db, views = self.queries, self.services.views

        def signed_in(request: Request) -> Caller | None:
            who = session.manager(request, self.services.auth)
            if who is not None:
                # The position a page claims is read before its content: a projection that
                # moves in between then makes the live channel refresh the page, instead of
                # the page showing older content under a newer position for good.
                request.state.position = db.pulse(who.name)[0]
            return who

        def to_signin(request: Request) -> RedirectResponse:
            return _see_other("/signin", next=request.url.path + (
                f"?{request.url.query}" if request.url.query else ""))

        def forbidden_form(request: Request, who: Caller | None) -> HTMLResponse:
            return self.render(request, "message.html", who, status=403, text_key="csrf")

        @r.get("/")
        @self.guard
        def home(request: Request) -> Response:
            return _see_other("/orders" if signed_in(request) else "/signin")

        @r.get("/signin")
        @self.guard
        def signin_page(request: Request, next: str = "/orders") -> Response:
            return self.render(request, "signin.html", None, next=_safe_next(next),
                               dev_managers=sorted(self.dev_tokens), failed=False)

        @r.post("/signin")
        @self.guard
        def signin(request: Request, token: str = Form(""), csrf: str = Form(""),
                   next: str = Form("/orders")) -> Response:
            if not session.csrf_ok(request, csrf):
                return forbidden_form(request, None)
            who = self.services.auth.identify(f"Bearer {token.strip()}") if token else None
            if who is None or who.kind != "manager":
                return self.render(request, "signin.html", None, status=401,
                                   next=_safe_next(next), dev_managers=sorted(self.dev_tokens),
                                   failed=True)
            response = _see_other(_safe_next(next))
            session.sign_in(response, request, token.strip())
            return response

        @r.post("/signin/dev")
        @self.guard
        def signin_dev(request: Request, manager: str = Form(""), csrf: str = Form(""),
                       next: str = Form("/orders")) -> Response:
            token = self.dev_tokens.get(manager)
            if token is None:  # no picker at all when tokens come from the environment
                return self.render(request, "message.html", None, status=404,
                                   text_key="not_found")
            if not session.csrf_ok(request, csrf):
                return forbidden_form(request, None)
            response = _see_other(_safe_next(next))
            session.sign_in(response, request, token)
            return response

        @r.post("/signout")
        @self.guard
        def signout(request: Request, csrf: str = Form("")) -> Response:
            if not session.csrf_ok(request, csrf):
                return forbidden_form(request, signed_in(request))
            response = _see_other("/signin")
            session.sign_out(response)
            return response

        @r.get("/lang/{code}")
        @self.guard
        def switch_language(code: str, next: str = "/orders") -> Response:
            response = _see_other(_safe_next(next))
            response.set_cookie(session.LANG_COOKIE, i18n.language(code), max_age=365 * 86400,
                                samesite="lax", path="/")
            return response

        @r.get("/orders")
        @self.guard
        def orders(request: Request, q: str = "", show: str = "all") -> Response:
            who = signed_in(request)
            if who is None:
                return to_signin(request)
            show = show if show in ORDER_FILTERS else "all"
            rows = db.my_orders(who.name, q.strip()[:200], show)
            return self.render(request, "orders.html", who, orders=rows, q=q,
                               show=show, filters=ORDER_FILTERS)

        @r.get("/order")
        @self.guard
        def order(request: Request, id: str = "", sent: str = "") -> Response:
            who = signed_in(request)
            if who is None:
                return to_signin(request)
            found = views.order(id)
            if found is None:
                return self.render(request, "message.html", who, status=404,
                                   text_key="order_not_found")
            lines = [{**line, "stock": views.stock(line["warehouse"], line["sku"])}
                     for line in found["lines"]]
            return self.render(request, "order.html", who, order=found, lines=lines,
                               sent=bool(sent), mine=found["manager"] == who.name)

        @r.get("/reserves")
        @self.guard
        def reserves(request: Request, order: str = "", sku: str = "",
                     warehouse: str = "") -> Response:
            who = signed_in(request)
            if who is None:
                return to_signin(request)
            found = views.order(order)
            line = next((ln for ln in (found or {}).get("lines", [])
                         if ln["sku"] == sku and ln["warehouse"] == warehouse), None)
            if found is None or line is None:
                return self.render(request, "message.html", who, status=404,
                                   text_key="order_not_found")
            holders = [h for h in views.reserves(warehouse, sku)["reserves"]
                       if h["order_id"] != order]
            return self.render(request, "reserves.html", who, order=found, line=line,
                               holders=holders, mine=found["manager"] == who.name)

        def request_context(order_id: str, from_id: str, sku: str,
                            warehouse: str) -> dict[str, Any] | None:
            mine, theirs = views.order(order_id), views.order(from_id)
            if mine is None or theirs is None:
                return None
            line = next((ln for ln in mine["lines"]
                         if ln["sku"] == sku and ln["warehouse"] == warehouse), None)
            held = next((h["quantity"] for h in views.reserves(warehouse, sku)["reserves"]
                         if h["order_id"] == from_id), 0)
            shortage = line["shortage"] if line else 0
            return {"order": mine, "source": theirs, "sku": sku, "warehouse": warehouse,
                    "held": held, "shortage": shortage,
                    "suggested": max(1, min(shortage, held))}

        @r.get("/request")
        @self.guard
        def request_dialog(request: Request, order: str = "", source: str = "", sku: str = "",
                           warehouse: str = "") -> Response:
            who = signed_in(request)
            if who is None:
                return to_signin(request)
            context = request_context(order, source, sku, warehouse)
            if context is None:
                return self.render(request, "message.html", who, status=404,
                                   text_key="order_not_found")
            return self.render(request, "request.html", who, error=None,
                               quantity=context["suggested"], **context)

        @r.post("/request")
        @self.guard
        def send_request(request: Request, order: str = Form(""), source: str = Form(""),
                         sku: str = Form(""), warehouse: str = Form(""),
                         quantity: str = Form(""), key: str = Form(""),
                         csrf: str = Form("")) -> Response:
            who = signed_in(request)
            if who is None:
                return to_signin(request)
            if not session.csrf_ok(request, csrf):
                return forbidden_form(request, who)
            outcome = self.execute(
                who, key,
                lambda: wire.RequestReserveBody.model_validate({
                    "from_order_id": source, "to_order_id": order, "sku": sku,
                    "warehouse": warehouse, "quantity": _quantity(quantity)}),
                lambda body: body.command())
            if outcome.ok:
                return _see_other("/order", id=order, sent="1")
            context = request_context(order, source, sku, warehouse)
            if context is None:
                return self.render(request, "message.html", who, status=404,
                                   text_key="order_not_found")
            return self.render(request, "request.html", who, status=outcome.status,
                               error=outcome.error, quantity=quantity, **context)

        def discussions_page(request: Request, who: Caller, status: int = 200,
                             error: dict[str, str] | None = None,
                             failed_request: str = "") -> HTMLResponse:
            seen, newest = db.seen_position(who.name), db.inbox_position(who.name)
            messages = views.inbox(who.name, limit=100)["messages"]
            unseen = db.unseen_ids(who.name, seen)
            db.mark_seen(who.name, newest)  # before rendering, so the badge shows what is left
            return self.render(
                request, "discussions.html", who, status=status, error=error,
                failed_request=failed_request, incoming=db.incoming(who.name),
                outgoing=db.outgoing(who.name), messages=messages, unseen_ids=unseen,
                done=request.query_params.get("done", ""))

        @r.get("/discussions")
        @self.guard
        def discussions(request: Request) -> Response:
            who = signed_in(request)
            if who is None:
                return to_signin(request)
            return discussions_page(request, who)

        def answer(request: Request, request_id: str, key: str, csrf: str, done: str,
                   build: Callable[[], BaseModel], make: Callable[[Any], c.Command],
                   invalid: str = "invalid_quantity") -> Response:
            who = signed_in(request)
            if who is None:
                return to_signin(request)
            if not session.csrf_ok(request, csrf):
                return forbidden_form(request, who)
            outcome = self.execute(who, key, build, make, invalid)
            if outcome.ok:
                return _see_other("/discussions", done=done)
            return discussions_page(request, who, status=outcome.status, error=outcome.error,
                                    failed_request=request_id)

        @r.post("/discussions/give")
        @self.guard
        def give(request: Request, request_id: str = Form(""), quantity: str = Form(""),
                 key: str = Form(""), csrf: str = Form("")) -> Response:
            amount = _quantity(quantity) if quantity.strip() else None
            if quantity.strip() and amount is None:
                who = signed_in(request)
                if who is None:
                    return to_signin(request)
                return discussions_page(request, who, status=422, failed_request=request_id,
                                        error={"code": "invalid_quantity", "message": ""})
            return answer(request, request_id, key, csrf, "given",
                          lambda: wire.GiveBody.model_validate({"quantity": amount}),
                          lambda body: body.command(request_id))

        @r.post("/discussions/decline")
        @self.guard
        def decline(request: Request, request_id: str = Form(""), reason: str = Form(""),
                    key: str = Form(""), csrf: str = Form("")) -> Response:
            return answer(request, request_id, key, csrf, "declined",
                          lambda: wire.DeclineBody.model_validate({"reason": reason.strip()}),
                          lambda body: body.command(request_id), invalid="reason_required")

        @r.post("/discussions/cancel")
        @self.guard
        def cancel(request: Request, request_id: str = Form(""), key: str = Form(""),
                   csrf: str = Form("")) -> Response:
            return answer(request, request_id, key, csrf, "cancelled",
                          lambda: wire.CancelBody.model_validate({}),
                          lambda body: body.command(request_id))

        @r.get("/events")
        async def events(request: Request) -> Response:
            who = signed_in(request)
            if who is None:
                return Response(status_code=401)
            return event_stream(request, lambda: db.pulse(who.name))

        return r


def mount_console(app: FastAPI, services: Services) -> None:
    """Serves the console at ``/`` beside the API. The development sign-in picker exists only
    when the managers' tokens were generated (RESERVES_API_TOKENS unset)."""
    settings = getattr(services, "settings", None)
    dev_tokens: dict[str, str] = {}
    if settings is not None and getattr(settings, "generated_api_tokens", False):
        dev_tokens = {m: t for t, m in settings.api_tokens.items()}
    console = Console(services, dev_tokens)
    console.queries.create_schema()
    app.include_router(console.router())
    app.mount(STATIC_PATH, StaticFiles(directory=HERE / "static"), name="console-static")
