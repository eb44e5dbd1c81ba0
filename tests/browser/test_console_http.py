"""The console's security and bookkeeping over HTTP, on a real Core (PostgreSQL): sign-in and
its cookie, the development picker only with generated tokens, CSRF, who may act, and the
unread marks. Views are brought up to date with ``catch_up``, never by sleeping."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from console.queries import ConsoleQueries
from handlers.http_api import create_http_app
from services.runtime import Core
from tests.support import (
    ERP_AUTH,
    ERP_TOKEN,
    SKU,
    TOKENS,
    WAREHOUSE,
    make_settings,
    seed_facts,
    uid,
)

pytestmark = pytest.mark.integration
TOKEN = {m: t for t, m in TOKENS.items()}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def catch_up(core: Core) -> None:
    while core.projector.run_once():
        pass


@pytest.fixture
def client(core: Core) -> Iterator[TestClient]:
    with TestClient(create_http_app(core)) as c:
        yield c


def csrf_of(client: TestClient, path: str = "/signin") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = CSRF.search(page.text)
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


def sign_in(client: TestClient, manager: str) -> None:
    answer = client.post("/signin", data={"token": TOKEN[manager], "csrf": csrf_of(client)},
                         follow_redirects=False)
    assert answer.status_code == 303, answer.text


def seeded(client: TestClient, core: Core) -> tuple[str, str]:
    owner_order, requester_order = uid("F-"), uid("R-")
    posted = client.post("/v1/erp/events", json=seed_facts(owner_order, requester_order),
                         headers=ERP_AUTH)
    assert posted.status_code == 200, posted.text
    catch_up(core)
    return owner_order, requester_order


def test_signing_in_keeps_the_token_in_a_strict_httponly_cookie_never_in_pages(
        client: TestClient) -> None:
    assert client.get("/orders", follow_redirects=False).headers["location"].startswith(
        "/signin")
    answer = client.post("/signin", data={"token": TOKEN["ivanov"], "csrf": csrf_of(client)},
                         follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/orders"
    cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith("rx_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    for path in ("/orders", "/discussions", "/signin"):
        page = client.get(path)
        assert page.status_code == 200
        assert TOKEN["ivanov"] not in page.text and ERP_TOKEN not in page.text
    assert 'data-testid="who">ivanov<' in client.get("/orders").text


def test_a_wrong_token_or_an_erp_token_does_not_sign_in(client: TestClient) -> None:
    for token in ("not-a-token", ERP_TOKEN):
        answer = client.post("/signin", data={"token": token, "csrf": csrf_of(client)},
                             follow_redirects=False)
        assert answer.status_code == 401
        assert "rx_session" not in answer.cookies
        assert "Токен не подошёл" in answer.text
    assert client.get("/events").status_code == 401


def test_no_manager_picker_when_tokens_come_from_the_environment(client: TestClient) -> None:
    page = client.get("/signin")
    assert "/signin/dev" not in page.text
    answer = client.post("/signin/dev", data={"manager": "ivanov", "csrf": csrf_of(client)},
                         follow_redirects=False)
    assert answer.status_code == 404 and "rx_session" not in answer.cookies


def test_the_manager_picker_exists_only_with_generated_tokens(database_url: str,
                                                               tmp_path: Path) -> None:
    settings = dataclasses.replace(make_settings(tmp_path, database_url),
                                   generated_api_tokens=True)
    core = Core(settings, database_url)
    try:
        with TestClient(create_http_app(core)) as client:
            page = client.get("/signin")
            assert all(f'value="{m}"' in page.text for m in ("ivanov", "petrova", "sidorov"))
            answer = client.post("/signin/dev", data={"manager": "petrova",
                                                      "csrf": csrf_of(client)},
                                 follow_redirects=False)
            assert answer.status_code == 303
            orders = client.get("/orders")
            assert 'data-testid="who">petrova<' in orders.text
            assert TOKEN["petrova"] not in orders.text
    finally:
        core.close()


def test_forms_without_the_csrf_value_or_from_another_site_change_nothing(
        client: TestClient, core: Core) -> None:
    owner_order, requester_order = seeded(client, core)
    sign_in(client, "ivanov")
    form = {"order": requester_order, "source": owner_order, "sku": SKU,
            "warehouse": WAREHOUSE, "quantity": "8", "key": uid()}
    assert client.post("/request", data={**form, "csrf": "forged-value-forged-value"}
                       ).status_code == 403
    good = csrf_of(client, "/orders")
    assert client.post("/request", data={**form, "csrf": good},
                       headers={"Origin": "https://evil.example"}).status_code == 403
    catch_up(core)
    assert ConsoleQueries(core.pool).outgoing("ivanov") == []
    sent = client.post("/request", data={**form, "csrf": good}, follow_redirects=False)
    assert sent.status_code == 303, sent.text
    catch_up(core)
    assert [r.requested for r in ConsoleQueries(core.pool).outgoing("ivanov")] == [8]


def test_only_the_owner_may_answer_and_refusals_read_as_sentences(
        client: TestClient, core: Core) -> None:
    owner_order, requester_order = seeded(client, core)
    sign_in(client, "ivanov")
    csrf = csrf_of(client, "/orders")
    form = {"order": requester_order, "source": owner_order, "sku": SKU,
            "warehouse": WAREHOUSE, "csrf": csrf}
    over = client.post("/request", data={**form, "quantity": "9", "key": uid()})
    assert over.status_code == 409
    assert "В заказе-владельце нет столько резерва" in over.text
    assert client.post("/request", data={**form, "quantity": "8", "key": uid()},
                       follow_redirects=False).status_code == 303
    catch_up(core)
    request_id = ConsoleQueries(core.pool).outgoing("ivanov")[0].request_id

    client.cookies.clear()
    sign_in(client, "sidorov")
    stolen = client.post("/discussions/give", data={
        "request_id": request_id, "quantity": "8", "key": uid(),
        "csrf": csrf_of(client, "/orders")})
    assert stolen.status_code == 403
    assert "Отвечать на запрос может только владелец резерва." in stolen.text
    catch_up(core)
    assert core.views.request(request_id)["status"] == "pending"  # type: ignore[index]


def test_unread_count_falls_when_discussions_are_seen(client: TestClient, core: Core) -> None:
    owner_order, requester_order = seeded(client, core)
    sign_in(client, "ivanov")
    csrf = csrf_of(client, "/orders")
    assert client.post("/request", data={
        "order": requester_order, "source": owner_order, "sku": SKU, "warehouse": WAREHOUSE,
        "quantity": "8", "key": uid(), "csrf": csrf}, follow_redirects=False).status_code == 303
    catch_up(core)
    client.cookies.clear()
    sign_in(client, "petrova")
    unread = re.compile(r'data-testid="unread"[^>]*>(\d+)<')
    assert unread.search(client.get("/orders").text).group(1) == "1"  # type: ignore[union-attr]
    discussions = client.get("/discussions").text
    assert "ivanov просит 8 шт." in discussions and 'class="new"' in discussions
    assert unread.search(client.get("/orders").text).group(1) == "0"  # type: ignore[union-attr]
    assert 'class="new"' not in client.get("/discussions").text


def test_the_api_still_answers_json_beside_the_console(client: TestClient) -> None:
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert client.get("/health").json() == {"status": "ok"}


def test_a_decline_needs_a_reason(client: TestClient, core: Core) -> None:
    owner_order, requester_order = seeded(client, core)
    sign_in(client, "ivanov")
    assert client.post("/request", data={
        "order": requester_order, "source": owner_order, "sku": SKU, "warehouse": WAREHOUSE,
        "quantity": "8", "key": uid(), "csrf": csrf_of(client, "/orders")},
        follow_redirects=False).status_code == 303
    catch_up(core)
    request_id = ConsoleQueries(core.pool).outgoing("ivanov")[0].request_id
    client.cookies.clear()
    sign_in(client, "petrova")
    blank = client.post("/discussions/decline", data={
        "request_id": request_id, "reason": "   ", "key": uid(),
        "csrf": csrf_of(client, "/orders")})
    assert blank.status_code == 422 and "Укажите причину отказа" in blank.text
    catch_up(core)
    assert core.views.request(request_id)["status"] == "pending"  # type: ignore[index]


def test_pages_say_in_words_when_the_database_is_unreachable(client: TestClient,
                                                             core: Core) -> None:
    sign_in(client, "ivanov")
    core.pool.close()
    page = client.get("/orders")
    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")
    assert "Сервис временно недоступен" in page.text
