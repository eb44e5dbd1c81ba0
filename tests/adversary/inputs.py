"""Bad inputs, generated with hypothesis: what a careless or hostile client may send.

Each strategy draws a ``BadInput`` aimed at a ``Target`` (the orders, request and keys a
campaign set up), with the answers the contract allows for it. Nothing drawn here is a
command the service may carry out: every one must be refused and change nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

HTTP, ERP, COMMANDS = "http", "erp.events", "reserve.commands"
CLIENT_ERRORS = frozenset({400, 403, 404, 409, 413, 422})
DOMAIN = frozenset({403, 404, 409, 422})

Json = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """What a campaign set up, for bad inputs to aim at."""

    owner_order: str  # petrova's (the owner's) order, holds 8
    requester_order: str  # ivanov's (the requester's) order, short of 8
    request_id: str  # ivanov's pending request to petrova
    sku: str
    warehouse: str
    tokens: dict[str, str]  # manager -> token
    erp_token: str
    used_event_id: str  # an ERP event_id already stored
    used_idempotency_key: str  # ivanov's key that created ``request_id``
    used_command_id: str  # a reserve.commands command_id already answered
    requester: str = "ivanov"
    owner: str = "petrova"
    stranger: str = "sidorov"

    def auth(self, manager: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[manager]}"}


@dataclass(frozen=True)
class BadInput:
    """One bad input on one channel, and the answers that count as a clean refusal.

    On HTTP: a status in ``statuses`` with the contract's error body. On ``erp.events`` or a
    ``reserve.commands`` message without a usable ``command_id``: a ``reserve.dlq`` entry. On
    ``reserve.commands`` with a ``command_id``: a command result with ``ok: false``.
    """

    channel: str
    what: str
    body: bytes | None = None
    method: str = "POST"
    path: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    statuses: frozenset[int] = CLIENT_ERRORS
    key: bytes | None = None
    command_id: str | None = None  # set when a command result is the expected answer
    codes: frozenset[str] = field(default_factory=frozenset)  # if set, the error code must be one


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


# -- building blocks ---------------------------------------------------------------------------

def not_json() -> st.SearchStrategy[bytes]:
    """Bytes no JSON reader accepts: random bytes, broken documents, a number too long to
    read, nesting deeper than the parser's recursion limit, invalid UTF-8."""
    def unreadable(raw: bytes) -> bool:
        try:
            json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            return bool(raw.strip())
        return False

    return st.one_of(
        st.binary(min_size=1, max_size=300).filter(unreadable),
        st.sampled_from([b"{", b'{"quantity": 1', b"[1, 2", b"{'a': 1}", b"nul", b"\xff\xfe{}",
                         b'{"a": "\xc3\x28"}', b"\x00", b"{}}", b'{"a":1,}']),
        st.integers(4301, 6000).map(lambda n: b'{"quantity": ' + b"9" * n + b"}"),
        st.integers(2000, 50_000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(2000, 20_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    )


def wrong_values() -> st.SearchStrategy[Any]:
    """Values of a wrong JSON type for any field."""
    return st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
                     st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                          st.integers(),
                                                                          max_size=2))


def bad_quantities() -> st.SearchStrategy[Any]:
    """Quantities the schema refuses: zero, negative, beyond 10^9, fractional, as text."""
    return st.one_of(st.integers(max_value=0), st.integers(min_value=10**9 + 1),
                     st.integers(min_value=10**9 + 1).map(str), st.just(1.5),
                     st.just(3.0), st.just("3"), st.booleans(), wrong_values())


def bad_text() -> st.SearchStrategy[Any]:
    """Strings the schema refuses: empty, too long, holding NUL, or not a string at all."""
    return st.one_of(st.just(""), st.text(min_size=201, max_size=400),
                     st.text(max_size=20).map(lambda s: s + "\x00"),
                     st.integers(), wrong_values().filter(lambda v: not isinstance(v, str)))


def bad_reasons() -> st.SearchStrategy[Any]:
    """Decline reasons the schema refuses (a reason may be up to 2,000 characters)."""
    return st.one_of(st.just(""), st.text(min_size=2001, max_size=2100),
                     st.text(max_size=10).map(lambda s: s + "\x00"), wrong_values())


def not_a_time() -> st.SearchStrategy[Any]:
    """What no date-time parser reads (numbers are not here: pydantic reads them as Unix
    times)."""
    return st.one_of(st.sampled_from(["yesterday", "", "2020-13-01T00:00:00", "30.04.2020",
                                      "2020-04-31T08:00:00"]),
                     st.none(), st.lists(st.integers(), max_size=2), st.booleans())


def path_text() -> st.SearchStrategy[str]:
    """Unicode letters and digits: safe inside one URL path segment."""
    return st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=150)


def unicode_text() -> st.SearchStrategy[str]:
    """Valid but odd names: any Unicode (no NUL, no lone surrogates), up to the limit."""
    return st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]),
                   min_size=1, max_size=200)


def mutate(valid: Json, required: list[str], bad_for: Callable[[str], st.SearchStrategy[Any]]
           ) -> st.SearchStrategy[tuple[str, Json]]:
    """``valid`` with one field dropped, one extra field added, or one field's value broken."""
    drop = st.sampled_from(required).map(
        lambda k: (f"without {k}", {n: v for n, v in valid.items() if n != k}))
    extra = st.text(min_size=1, max_size=30).filter(lambda k: k not in valid).map(
        lambda k: (f"with an extra field {k!r}", {**valid, k: 1}))
    broken = st.sampled_from(sorted(valid)).flatmap(
        lambda k: bad_for(k).map(lambda v: (f"with {k}={v!r:.60}", {**valid, k: v})))
    return st.one_of(drop, extra, broken)


# -- HTTP ----------------------------------------------------------------------------------

def http_inputs(t: Target) -> st.SearchStrategy[BadInput]:
    give, decline, cancel = (f"/v1/reserve-requests/{t.request_id}/{a}"
                             for a in ("give", "decline", "cancel"))
    command_paths = ["/v1/reserve-requests", give, decline, cancel, "/v1/erp/events"]
    views = [f"/v1/stock/{t.warehouse}/{t.sku}", f"/v1/stock/{t.warehouse}/{t.sku}/reserves",
             f"/v1/orders/{t.owner_order}", f"/v1/reserve-requests/{t.request_id}", "/v1/inbox"]
    every = [("POST", p) for p in command_paths] + [("GET", p) for p in views]

    def token_for(path: str) -> dict[str, str]:
        if path == "/v1/erp/events":
            return {"Authorization": f"Bearer {t.erp_token}"}
        return t.auth(t.owner if path in (give, decline) else t.requester)

    def post(path: str, body: bytes, what: str, statuses: frozenset[int],
             headers: dict[str, str] | None = None, codes: frozenset[str] = frozenset()
             ) -> BadInput:
        return BadInput(HTTP, f"POST {path} {what}", body, "POST", path,
                        tuple((headers or token_for(path)).items()), statuses, codes=codes)

    malformed = st.tuples(st.sampled_from(command_paths), not_json()).map(
        lambda pb: post(pb[0], pb[1], f"with unreadable body {pb[1][:40]!r}",
                        frozenset({400}),
                        # nesting the parser's stack happens to hold is read, and refused as
                        # not an object
                        codes=frozenset({"malformed_json", "malformed_body"})))
    not_object = st.tuples(
        st.sampled_from(command_paths[:4]),
        st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(max_size=10),
                  st.just(None), st.booleans())).map(
        lambda pv: post(pv[0], dumps(pv[1]), f"with a non-object body {pv[1]!r:.40}",
                        frozenset({400}), codes=frozenset({"malformed_body"})))

    valid_request: Json = {"from_order_id": t.owner_order, "to_order_id": t.requester_order,
                           "sku": t.sku, "warehouse": t.warehouse, "quantity": 1}

    def request_field(k: str) -> st.SearchStrategy[Any]:
        return bad_quantities() if k == "quantity" else bad_text()

    bad_request = mutate(valid_request, sorted(valid_request), request_field).map(
        lambda wb: post("/v1/reserve-requests", dumps(wb[1]), wb[0], frozenset({422})))
    odd_ids = st.tuples(st.sampled_from(["from_order_id", "to_order_id", "sku", "warehouse"]),
                        unicode_text()).map(
        lambda kv: post("/v1/reserve-requests", dumps({**valid_request, kv[0]: "~" + kv[1][:199]}),
                        f"naming an unknown {kv[0]}", DOMAIN))
    too_much = st.integers(9, 10**9).map(
        lambda n: post("/v1/reserve-requests", dumps({**valid_request, "quantity": n}),
                       f"for {n} units, more than is held", frozenset({409})))
    same_order = st.just(post("/v1/reserve-requests", dumps(
        {**valid_request, "from_order_id": t.requester_order}), "from and to the same order",
        frozenset({422}), codes=frozenset({"same_order"})))
    not_yours = st.sampled_from([t.owner, t.stranger]).map(
        lambda m: post("/v1/reserve-requests", dumps(valid_request),
                       f"by {m}, who does not manage the requesting order", DOMAIN,
                       headers=t.auth(m)))

    bad_give = st.one_of(
        bad_quantities().filter(lambda q: q is not None).map(  # None: "give all", valid
            lambda q: post(give, dumps({"quantity": q}), f"quantity={q!r:.40}",
                           frozenset({422}))),
        st.integers(9, 10**9).map(lambda q: post(give, dumps({"quantity": q}),
                                                 f"{q} units, more than requested",
                                                 frozenset({409}))),
        st.text(min_size=1, max_size=20).filter(lambda k: k != "quantity").map(
            lambda k: post(give, dumps({"quantity": 1, k: 1}), f"extra field {k!r}",
                           frozenset({422}))),
        st.sampled_from([t.requester, t.stranger]).map(
            lambda m: post(give, b"{}", f"by {m}, not the owner", frozenset({403}),
                           headers=t.auth(m))),
    )
    bad_decline = st.one_of(
        st.just(post(decline, b"{}", "without a reason", frozenset({422}))),
        bad_reasons().map(
            lambda r: post(decline, dumps({"reason": r}), f"reason={r!r:.40}", frozenset({422}))),
        st.sampled_from([t.requester, t.stranger]).map(
            lambda m: post(decline, dumps({"reason": "no"}), f"by {m}, not the owner",
                           frozenset({403}), headers=t.auth(m))),
    )
    bad_cancel = st.one_of(
        st.text(min_size=1, max_size=20).map(
            lambda k: post(cancel, dumps({k: 1}), f"extra field {k!r}", frozenset({422}))),
        st.sampled_from([t.owner, t.stranger]).map(
            lambda m: post(cancel, b"", f"by {m}, not the requester", frozenset({403}),
                           headers=t.auth(m))),
    )
    unknown_request = st.tuples(path_text(), st.sampled_from(["give", "decline", "cancel"])
                                ).map(lambda ia: post(
        f"/v1/reserve-requests/unknown-{ia[0]}/{ia[1]}",
        dumps({"reason": "x"} if ia[1] == "decline" else {}), "on an unknown request",
        frozenset({404})))

    no_token = st.sampled_from(every).flatmap(lambda mp: st.one_of(
        st.just(()), st.sampled_from(["Bearer", "Bearer  -", "Basic abc", "bearer", "Token x"]).map(
            lambda h: (("Authorization", h),)),
        st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80).map(
            lambda tok: (("Authorization", f"Bearer wrong-{tok}"),)),
    ).map(lambda hs: BadInput(HTTP, f"{mp[0]} {mp[1]} with Authorization {dict(hs)!r:.60}",
                              b"{}" if mp[0] == "POST" else None, mp[0], mp[1], hs,
                              frozenset({401}), codes=frozenset({"unauthorized"}))))
    wrong_kind = st.sampled_from(every).map(lambda mp: BadInput(
        HTTP, f"{mp[0]} {mp[1]} with the wrong kind of token",
        b"{}" if mp[0] == "POST" else None, mp[0], mp[1],
        tuple((t.auth(t.requester) if mp[1] == "/v1/erp/events" else
               {"Authorization": f"Bearer {t.erp_token}"}).items()),
        frozenset({403}), codes=frozenset({"forbidden"})))

    long_key = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=201,
                       max_size=300).map(lambda k: post(
        "/v1/reserve-requests", dumps(valid_request), "with an over-long Idempotency-Key",
        frozenset({422}), headers={**t.auth(t.requester), "Idempotency-Key": k},
        codes=frozenset({"invalid_idempotency_key"})))
    reused_key = st.integers(2, 7).map(lambda q: post(  # the first one asked for 8
        "/v1/reserve-requests", dumps({**valid_request, "quantity": q}),
        "reusing an Idempotency-Key for different content", frozenset({422}),
        headers={**t.auth(t.requester), "Idempotency-Key": t.used_idempotency_key},
        codes=frozenset({"idempotency_key_reused"})))

    nul_views = st.sampled_from([f"/v1/orders/a%00{t.owner_order}", f"/v1/stock/w%00/{t.sku}",
                                 f"/v1/reserve-requests/{t.request_id}%00"]).map(
        lambda p: BadInput(HTTP, f"GET {p}", None, "GET", p,
                           tuple(t.auth(t.requester).items()), frozenset({404, 422})))
    unknown_views = path_text().flatmap(
        lambda s: st.sampled_from([f"/v1/orders/nope-{s}", f"/v1/reserve-requests/nope-{s}"]).map(
            lambda p: BadInput(HTTP, f"GET an unknown id {p!r:.60}", None, "GET", p,
                               tuple(t.auth(t.requester).items()), frozenset({404}))))

    erp = erp_bodies(t).map(lambda wb: post("/v1/erp/events", wb[1], wb[0], wb[2]))
    return st.one_of(malformed, not_object, bad_request, odd_ids, too_much, same_order,
                     not_yours, bad_give, bad_decline, bad_cancel, unknown_request, no_token,
                     wrong_kind, long_key, reused_key, nul_views, unknown_views, erp)


# -- ERP facts (HTTP body or erp.events message) ----------------------------------------------

def erp_bodies(t: Target) -> st.SearchStrategy[tuple[str, bytes, frozenset[int]]]:
    """Bad ERP bodies: (what, bytes, HTTP statuses the contract allows)."""
    def env(type_: str, data: Json, event_id: str | None = None) -> Json:
        return {"event_id": event_id or f"adv-{abs(hash(json.dumps(data, default=str)))}",
                "type": type_, "occurred_at": "2020-04-30T08:00:00+03:00", "data": data}

    stock = env("StockLevelSet", {"warehouse": t.warehouse, "sku": t.sku, "on_hand": 10})
    reserve = env("ReservePlaced", {"order_id": t.owner_order, "sku": t.sku,
                                    "warehouse": t.warehouse, "quantity": 1})
    placed = env("CustomerOrderPlaced", {
        "order_id": "adv-new", "number": "N1", "date": "2020-05-01T09:00:00", "partner": "P",
        "manager": t.requester, "lines": [{"sku": t.sku, "warehouse": t.warehouse,
                                           "quantity": 1}]})

    def data_field(k: str) -> st.SearchStrategy[Any]:
        if k in ("quantity", "on_hand"):
            return bad_quantities().filter(lambda v: not (k == "on_hand" and v == 0))
        if k == "lines":
            return st.one_of(st.just([]), wrong_values(),
                             st.just([{"sku": t.sku, "warehouse": t.warehouse, "quantity": 0}]),
                             st.just([{"sku": t.sku}]))
        if k == "date":
            return not_a_time()
        return bad_text()

    def bad_data(e: Json) -> st.SearchStrategy[tuple[str, Json]]:
        return mutate(e["data"], sorted(e["data"]), data_field).map(
            lambda wd: (f"{e['type']} {wd[0]}", {**e, "data": wd[1]}))

    def envelope_field(k: str) -> st.SearchStrategy[Any]:
        if k == "type":
            return st.one_of(st.text(max_size=30).filter(lambda s: s not in (
                "StockLevelSet", "CustomerOrderPlaced", "ReservePlaced", "ReserveReleased",
                "OrderShipped", "OrderCancelled")), wrong_values())
        if k == "occurred_at":
            return not_a_time()
        if k == "data":
            return st.one_of(st.lists(st.integers(), max_size=2), st.text(max_size=5), st.none())
        return bad_text()

    schema = st.one_of(
        st.sampled_from([stock, reserve, placed]).flatmap(bad_data),
        st.sampled_from([stock, reserve, placed]).flatmap(
            lambda e: mutate(e, sorted(e), envelope_field)),
    ).map(lambda we: (we[0], dumps(we[1]), frozenset({422})))
    refused = st.one_of(
        st.integers(1, 10**9 - 8).map(lambda n: ("ReserveReleased beyond what is held", dumps(env(
            "ReserveReleased", {"order_id": t.owner_order, "sku": t.sku,
                                "warehouse": t.warehouse, "quantity": 8 + n})))),
        unicode_text().map(lambda o: ("ReservePlaced for an unknown order", dumps(env(
            "ReservePlaced", {"order_id": "adv-unknown-" + o[:180], "sku": t.sku,
                              "warehouse": t.warehouse, "quantity": 1})))),
        st.just(("CustomerOrderPlaced twice", dumps(env("CustomerOrderPlaced", {
            **placed["data"], "order_id": t.owner_order})))),
        st.integers(1, 10**9).map(lambda n: ("ReservePlaced beyond what is ordered", dumps(env(
            "ReservePlaced", {"order_id": t.owner_order, "sku": t.sku,
                              "warehouse": t.warehouse, "quantity": n}))))

    ).map(lambda wb: (wb[0], wb[1], frozenset({409})))
    reused = st.integers(0, 10**9).map(lambda n: ("an event_id reused for other content", dumps(
        env("StockLevelSet", {"warehouse": t.warehouse, "sku": t.sku, "on_hand": 1000 + n},
            event_id=t.used_event_id)), frozenset({422})))
    batches = st.one_of(
        st.just(("an empty batch", b"[]", frozenset({422}))),
        st.just(("a batch of 1,001", dumps([stock] * 1001), frozenset({422}))),
        # good facts first, then a bad one: nothing of the batch may apply
        st.tuples(st.integers(1, 5), schema | refused).map(lambda nb: (
            f"a batch of {nb[0]} good facts then {nb[1][0]}",
            b"[" + b",".join([dumps(env("StockLevelSet", {
                "warehouse": t.warehouse, "sku": t.sku, "on_hand": 500 + i}, f"adv-good-{i}-"
                + str(abs(hash(nb[1][1]))))) for i in range(nb[0])] + [nb[1][1]]) + b"]",
            nb[1][2])),
    )
    return st.one_of(schema, refused, reused, batches)


# -- Kafka ----------------------------------------------------------------------------------

def erp_messages(t: Target) -> st.SearchStrategy[BadInput]:
    """Bad ``erp.events`` messages: each must become a ``reserve.dlq`` entry."""
    return st.one_of(
        not_json().map(lambda b: ("unreadable bytes", b)),
        erp_bodies(t).map(lambda wbs: (wbs[0], wbs[1])),
    ).map(lambda wb: BadInput(ERP, f"erp.events message: {wb[0]}", wb[1],
                              key=f"{t.warehouse}/{t.sku}".encode()))


def command_messages(t: Target, fresh_id: Callable[[], str]) -> st.SearchStrategy[BadInput]:
    """Bad ``reserve.commands`` messages: without a usable ``command_id`` a ``reserve.dlq``
    entry, else a command result with ``ok: false``."""
    def dlq(what: str, body: bytes) -> BadInput:
        return BadInput(COMMANDS, f"reserve.commands message: {what}", body, key=b"adv")

    def answered(what: str, message: Json, codes: frozenset[str] = frozenset()) -> BadInput:
        cid = message["command_id"]
        return BadInput(COMMANDS, f"reserve.commands message: {what}", dumps(message),
                        key=cid.encode("utf-8", "surrogatepass"), command_id=cid, codes=codes)

    request_data: Json = {"from_order_id": t.owner_order, "to_order_id": t.requester_order,
                          "sku": t.sku, "warehouse": t.warehouse, "quantity": 1}

    def command(type_: str, data: Json, actor: str | None = None) -> Json:
        return {"command_id": fresh_id(), "type": type_, "actor": actor or t.requester,
                "data": data}

    no_id = st.one_of(
        not_json().map(lambda b: dlq("unreadable bytes", b)),
        st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.none(), st.text()).map(
            lambda v: dlq(f"a non-object {v!r:.40}", dumps(v))),
        st.one_of(st.just(""), wrong_values(), st.integers()).map(lambda cid: dlq(
            f"command_id={cid!r:.40}",
            dumps({"command_id": cid, "type": "CancelReserveRequest", "actor": t.requester,
                   "data": {"request_id": t.request_id}}))),
        st.just(dlq("no command_id", dumps({"type": "CancelReserveRequest",
                                            "actor": t.requester,
                                            "data": {"request_id": t.request_id}}))),
    )

    def request_field(k: str) -> st.SearchStrategy[Any]:
        return bad_quantities() if k == "quantity" else bad_text()

    refused = st.one_of(
        mutate(request_data, sorted(request_data), request_field).map(
            lambda wd: answered(f"RequestReserve {wd[0]}", command("RequestReserve", wd[1]))),
        st.one_of(st.text(max_size=30), wrong_values()).filter(lambda s: s not in (
            "RequestReserve", "GiveReserve", "DeclineReserveRequest", "CancelReserveRequest")).map(
            lambda ty: answered(f"type={ty!r:.40}", {**command("GiveReserve", {
                "request_id": t.request_id}), "type": ty})),
        unicode_text().filter(lambda a: a not in t.tokens).map(lambda a: answered(
            "from an unknown actor", command("CancelReserveRequest",
                                             {"request_id": t.request_id}, actor=a),
            codes=frozenset({"unknown_actor"}))),
        st.sampled_from([t.requester, t.stranger]).map(lambda m: answered(
            f"GiveReserve by {m}, not the owner",
            command("GiveReserve", {"request_id": t.request_id}, actor=m))),
        st.sampled_from([t.owner, t.stranger]).map(lambda m: answered(
            f"CancelReserveRequest by {m}, not the requester",
            command("CancelReserveRequest", {"request_id": t.request_id}, actor=m))),
        st.integers(9, 10**9).map(lambda q: answered(
            f"GiveReserve of {q}, more than requested",
            command("GiveReserve", {"request_id": t.request_id, "quantity": q}, t.owner))),
        bad_reasons().map(lambda r: answered(f"DeclineReserveRequest reason={r!r:.40}", command(
            "DeclineReserveRequest", {"request_id": t.request_id, "reason": r}, t.owner))),
        st.just(answered("GiveReserve without request_id", command("GiveReserve", {}, t.owner))),
        st.text(min_size=1, max_size=20).filter(
            lambda k: k not in ("command_id", "type", "actor", "data")).map(
            lambda k: answered(f"extra top-level field {k!r}", {
                **command("CancelReserveRequest", {"request_id": t.request_id}, t.owner), k: 1})),
        st.integers(2, 8).map(lambda q: answered(
            "a command_id reused for different content",
            {"command_id": t.used_command_id, "type": "GiveReserve", "actor": t.owner,
             "data": {"request_id": t.request_id, "quantity": q}},
            codes=frozenset({"idempotency_key_reused"}))),
    )
    return st.one_of(no_id, refused)
