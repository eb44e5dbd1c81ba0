"""The managers' web console in a real headless Chromium: two managers in two browser
contexts play the seed's story, then a partial give, a decline with a reason, a cancel and a
refused over-request. Each step leaves a screenshot (see conftest.py)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, expect

from tests.browser.conftest import Screens
from tests.e2e.serve import Running
from tests.support import ERP_AUTH, SEED_SUCCESS, SKU, TOKENS, WAREHOUSE, envelope, seed_facts, uid

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
TIMEOUT_MS = 20_000
DESKTOP: ViewportSize = {"width": 1100, "height": 520}


@pytest.fixture(autouse=True)
def _generous_deadlines() -> None:
    expect.set_options(timeout=TIMEOUT_MS)


def open_as(browser: Browser, contexts: list[BrowserContext], service: Running,
            manager: str, screens: Screens | None = None) -> Page:
    """A fresh browser context for ``manager``, signed in with their token through the form."""
    context = browser.new_context(base_url=service.url, viewport=DESKTOP, locale="ru-RU")
    contexts.append(context)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/signin"))
    expect(page.get_by_role("heading", name="Вход")).to_be_visible()
    expect(page.get_by_text("Режим разработки")).to_have_count(0)  # tokens come from the env
    if screens is not None:
        screens.shot(page, "01-signin")
    token = {m: t for t, m in TOKENS.items()}[manager]
    page.get_by_label("Токен").fill(token)
    page.get_by_role("button", name="Войти").click()
    expect(page.get_by_test_id("who")).to_have_text(manager)
    assert token not in page.content(), "a token must never be rendered into a page"
    return page


def post_facts(service: Running, facts: list[dict[str, Any]]) -> None:
    response = httpx.post(f"{service.url}/v1/erp/events", json=facts, headers=ERP_AUTH,
                          timeout=10)
    assert response.status_code == 200, response.text


def mark(page: Page) -> None:
    """A value that survives only while the page is not reloaded."""
    page.evaluate("window.__stayed = 'yes'")


def not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__stayed") == "yes", "the page was reloaded"


def test_seed_story_in_two_browsers(browser: Browser, contexts: list[BrowserContext],
                                    service: Running, screens: Screens) -> None:
    owner_order, requester_order = uid("F-"), uid("R-")
    post_facts(service, seed_facts(owner_order, requester_order))

    ivanov = open_as(browser, contexts, service, "ivanov", screens)
    petrova = open_as(browser, contexts, service, "petrova")
    expect(petrova.get_by_role("heading", name="Мои заказы")).to_be_visible()
    mark(petrova)

    # "My orders": the requesting order, filtered by number, short of 8.
    ivanov.get_by_label("Номер или партнёр").fill("F4718999")
    ivanov.get_by_role("button", name="Применить").click()
    row = ivanov.locator(f'tr[data-order="{requester_order}"]')
    expect(row).to_contain_text("ИП Васильев")
    expect(row).to_contain_text("04.05.2020 10:15:00")
    expect(row.locator(".status")).to_have_text("▲ не хватает 8 шт.")
    screens.shot(ivanov, "02-my-orders")
    row.get_by_role("link", name="F4718999").click()

    # The provisioning window: the stock item at its warehouse, and the order's own figures.
    expect(ivanov.get_by_role("heading", name="Обеспечение заказа клиента")).to_be_visible()
    line = ivanov.locator(f'tr[data-sku="{SKU}"]')
    expect(line.get_by_test_id("on-hand")).to_have_text("10")
    expect(line.get_by_test_id("stock-reserved")).to_have_text("10")
    expect(line.get_by_test_id("free")).to_have_text("0")
    expect(line.get_by_test_id("line-reserved")).to_have_text("2")
    expect(line.get_by_test_id("shortage")).to_have_text("8")
    screens.shot(ivanov, "03-provisioning")

    # Activating the reserved figure (from the keyboard) opens the reserves list.
    line.get_by_test_id("stock-reserved").focus()
    ivanov.keyboard.press("Enter")
    expect(ivanov.get_by_role("heading", name=f"Резервы {SKU} на складе «{WAREHOUSE}»")
           ).to_be_visible()
    holder = ivanov.locator(f'tr[data-order="{owner_order}"]')
    for cell in ("F4718837", "petrova", "30.04.2020 8:42:28", "8"):
        expect(holder).to_contain_text(cell)
    expect(ivanov.locator(f'tr[data-order="{requester_order}"]')).to_have_count(0)
    screens.shot(ivanov, "04-reserves")

    # The request dialog: quantity pre-filled with the shortage, capped by what is held.
    holder.get_by_role("link", name="Запросить… F4718837").click()
    quantity = ivanov.get_by_label("Количество")
    expect(quantity).to_have_value("8")
    expect(quantity).to_have_attribute("max", "8")
    screens.shot(ivanov, "05-request-dialog")
    ivanov.get_by_role("button", name="Запросить").click()
    expect(ivanov.get_by_role("status")).to_contain_text("Запрос отправлен")
    mark(ivanov)

    # The owner, still on "My orders", sees the unread count rise without reloading.
    expect(petrova.get_by_test_id("unread")).to_have_text("1")
    not_reloaded(petrova)
    screens.shot(petrova, "06-owner-unread")
    petrova.get_by_role("link", name=re.compile("Обсуждения")).click()
    incoming = petrova.get_by_test_id("incoming")
    expect(incoming).to_have_count(1)
    expect(incoming).to_contain_text(
        "ivanov просит 8 шт. CTS66443 со склада «Основной склад» из вашего заказа F4718837 "
        "для заказа F4718999")
    expect(petrova.get_by_test_id("messages")).to_contain_text("ivanov просит резерв 8 шт.")
    expect(petrova.get_by_test_id("unread")).to_have_text("0")
    screens.shot(petrova, "07-owner-discussions")
    incoming.get_by_role("button", name="Отдать резерв").click()
    expect(petrova.get_by_role("status")).to_have_text("Резерв отдан.")
    expect(petrova.get_by_test_id("incoming")).to_have_count(0)

    # The requester's order turns green in front of them; their unread count rises.
    expect(ivanov.get_by_test_id("order-status").locator(".status")).to_have_attribute(
        "data-status", "green")
    expect(ivanov.locator(f'tr[data-sku="{SKU}"]').get_by_test_id("shortage")).to_have_text("0")
    expect(ivanov.locator(f'tr[data-sku="{SKU}"]').get_by_test_id("line-reserved")
           ).to_have_text("10")
    expect(ivanov.get_by_test_id("unread")).to_have_text("1")
    not_reloaded(ivanov)
    screens.shot(ivanov, "08-requester-green")

    ivanov.get_by_role("link", name=re.compile("Обсуждения")).click()
    success = ivanov.locator('li[data-kind="reserve_given"] .text')
    expect(success).to_have_text(SEED_SUCCESS)
    expect(ivanov.locator('[data-testid="outgoing"][data-status="given"]')).to_contain_text(
        "отдано 8 шт.")
    screens.shot(ivanov, "09-requester-success")


def _facts(sku: str, petrova_order: str, sidorov_order: str,
           ivanov_order: str) -> list[dict[str, Any]]:
    def placed(order_id: str, number: str, date: str, manager: str,
               quantity: int) -> dict[str, Any]:
        return envelope("CustomerOrderPlaced", {
            "order_id": order_id, "number": number, "date": date, "partner": "ООО Вектор",
            "manager": manager, "lines": [{"sku": sku, "warehouse": WAREHOUSE,
                                           "quantity": quantity}]})

    def reserve(order_id: str, quantity: int) -> dict[str, Any]:
        return envelope("ReservePlaced", {"order_id": order_id, "sku": sku,
                                          "warehouse": WAREHOUSE, "quantity": quantity})

    return [
        envelope("StockLevelSet", {"warehouse": WAREHOUSE, "sku": sku, "on_hand": 30}),
        placed(sidorov_order, "S-100", "2020-03-01T09:00:00", "sidorov", 20),
        reserve(sidorov_order, 20),
        placed(petrova_order, "P-200", "2020-04-01T09:00:00", "petrova", 8),
        reserve(petrova_order, 8),
        placed(ivanov_order, "I-300", "2020-05-01T09:00:00", "ivanov", 10),
        reserve(ivanov_order, 2),
    ]


def _ask(page: Page, order: str, source: str, sku: str, quantity: str | None) -> None:
    page.goto("/reserves?" + str(httpx.QueryParams(
        {"order": order, "sku": sku, "warehouse": WAREHOUSE})))
    page.locator(f'tr[data-order="{source}"]').get_by_role(
        "link", name=re.compile("Запросить")).click()
    if quantity is not None:
        page.get_by_label("Количество").fill(quantity)
    page.get_by_role("button", name="Запросить").click()


def test_partial_give_decline_cancel_and_refused_over_request(
        browser: Browser, contexts: list[BrowserContext], service: Running,
        screens: Screens) -> None:
    sku = uid("SKU-")
    petrova_order, sidorov_order, ivanov_order = uid("P-"), uid("S-"), uid("I-")
    post_facts(service, _facts(sku, petrova_order, sidorov_order, ivanov_order))
    ivanov = open_as(browser, contexts, service, "ivanov")
    petrova = open_as(browser, contexts, service, "petrova")
    petrova.get_by_role("link", name=re.compile("Обсуждения")).click()
    mark(petrova)

    # Reserves list, oldest order first; a request beyond the shortage is refused plainly.
    ivanov.goto("/order?id=" + ivanov_order)
    ivanov.locator(f'tr[data-sku="{sku}"]').get_by_test_id("stock-reserved").click()
    expect(ivanov.locator("tbody tr")).to_have_count(2)
    expect(ivanov.locator("tbody tr").first).to_contain_text("S-100")
    expect(ivanov.locator("tbody tr").nth(1)).to_contain_text("P-200")
    ivanov.locator(f'tr[data-order="{sidorov_order}"]').get_by_role(
        "link", name=re.compile("Запросить")).click()
    expect(ivanov.get_by_label("Количество")).to_have_value("8")
    expect(ivanov.get_by_label("Количество")).to_have_attribute("max", "20")
    ivanov.get_by_label("Количество").fill("12")
    ivanov.get_by_role("button", name="Запросить").click()
    expect(ivanov.get_by_test_id("refusal")).to_have_text(
        "Не получилось: Это больше, чем не хватает вашему заказу: запросите не больше нехватки.")
    screens.shot(ivanov, "10-refused-over-request")

    # Cancel: ask sidorov for 3, then take it back from "My requests".
    ivanov.get_by_label("Количество").fill("3")
    ivanov.get_by_role("button", name="Запросить").click()
    expect(ivanov.get_by_role("status")).to_contain_text("Запрос отправлен")
    ivanov.get_by_role("link", name=re.compile("Обсуждения")).click()
    pending = ivanov.locator('[data-testid="outgoing"][data-status="pending"]', has_text=sku)
    expect(pending).to_contain_text("3 шт.")
    expect(pending).to_contain_text("S-100")
    pending.get_by_role("button", name="Отменить запрос").click()
    expect(ivanov.get_by_role("status")).to_have_text("Запрос отменён.")
    expect(ivanov.locator('[data-testid="outgoing"][data-status="cancelled"]', has_text=sku)
           ).to_contain_text("отменён")
    screens.shot(ivanov, "11-cancelled")

    # Partial give: petrova, watching Discussions, sees the request arrive live; gives 5 of 8.
    _ask(ivanov, ivanov_order, petrova_order, sku, None)
    expect(ivanov.get_by_role("status")).to_contain_text("Запрос отправлен")
    incoming = petrova.get_by_test_id("incoming")
    expect(incoming).to_contain_text("ivanov просит 8 шт.")
    not_reloaded(petrova)
    screens.shot(petrova, "12-owner-incoming-live")
    incoming.get_by_label("Сколько отдать").fill("5")
    incoming.get_by_role("button", name="Отдать резерв").click()
    expect(petrova.get_by_role("status")).to_have_text("Резерв отдан.")
    mark(petrova)
    ivanov.get_by_role("link", name=re.compile("Обсуждения")).click()
    expect(ivanov.locator('li[data-kind="reserve_given"]', has_text=sku)).to_contain_text(
        f"УСПЕХ!!! Отдан резерв 5 шт. {sku}. Заказ клиента P-200 от 01.04.2020 9:00:00")
    expect(ivanov.locator('[data-testid="outgoing"][data-status="given"]', has_text=sku)
           ).to_contain_text("отдано 5 шт.")
    screens.shot(ivanov, "13-partial-give")

    # Decline with a reason: ivanov, now watching Discussions, sees the refusal arrive live.
    mark(ivanov)
    asker = ivanov.context.new_page()
    _ask(asker, ivanov_order, petrova_order, sku, None)
    expect(asker.get_by_role("status")).to_contain_text("Запрос отправлен")
    asker.close()
    incoming = petrova.get_by_test_id("incoming")
    expect(incoming).to_contain_text("ivanov просит 3 шт.")
    not_reloaded(petrova)
    incoming.get_by_label("Причина отказа").fill("Клиент уже оплатил, отгрузка завтра")
    incoming.get_by_role("button", name="Отказать").click()
    expect(petrova.get_by_role("status")).to_have_text("Запрос отклонён.")
    declined = ivanov.locator('li[data-kind="reserve_declined"]', has_text=sku)
    expect(declined).to_contain_text("Причина: Клиент уже оплатил, отгрузка завтра")
    expect(ivanov.locator('[data-testid="outgoing"][data-status="declined"]', has_text=sku)
           ).to_contain_text("«Клиент уже оплатил, отгрузка завтра»")
    not_reloaded(ivanov)
    screens.shot(ivanov, "14-declined")

    # The order is still 3 short; English by the switch, on a 360 px wide screen.
    ivanov.set_viewport_size({"width": 360, "height": 740})
    ivanov.goto("/order?id=" + ivanov_order)
    expect(ivanov.locator(f'tr[data-sku="{sku}"]').get_by_test_id("shortage")).to_have_text("3")
    ivanov.get_by_role("link", name="English").click()
    expect(ivanov.get_by_role("heading", name="Customer order provisioning")).to_be_visible()
    expect(ivanov.get_by_test_id("order-status")).to_have_text("▲ short by 3")
    screens.shot(ivanov, "15-english-360px")
    reserves = "/reserves?" + str(httpx.QueryParams(
        {"order": ivanov_order, "sku": sku, "warehouse": WAREHOUSE}))
    for path in (f"/order?id={ivanov_order}", "/orders", "/discussions", reserves):
        ivanov.goto(path)
        width = ivanov.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"{path} scrolls sideways at 360 px ({width} px wide)"
    expect(ivanov.get_by_role("heading", name="Reserves of")).to_be_visible()
