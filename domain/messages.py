"""The texts managers read in their inbox (the seed's "Discussions"), in Russian."""

from __future__ import annotations

from datetime import datetime


def format_order_date(date: datetime) -> str:
    """``dd.mm.yyyy H:MM:SS``: the hour without a leading zero, as 1C writes it."""
    return f"{date:%d.%m.%Y} {date.hour}:{date:%M:%S}"


def success_text(quantity: int, sku: str, number: str, date: datetime) -> str:
    return (
        f"УСПЕХ!!! Отдан резерв {quantity} шт. {sku}. "
        f"Заказ клиента {number} от {format_order_date(date)}"
    )


def given_out_text(quantity: int, sku: str, from_number: str, to_number: str,
                   requester: str) -> str:
    """What the owner keeps as a record of their own give."""
    return (
        f"Вы отдали резерв {quantity} шт. {sku} из заказа клиента {from_number} "
        f"в заказ клиента {to_number} ({requester})."
    )


def request_text(requester: str, quantity: int, sku: str, warehouse: str,
                 from_number: str, to_number: str) -> str:
    return (
        f"{requester} просит резерв {quantity} шт. {sku} (склад {warehouse}) "
        f"из вашего заказа клиента {from_number} для заказа клиента {to_number}."
    )


def declined_text(owner: str, quantity: int, sku: str, from_number: str, reason: str) -> str:
    return (
        f"ОТКАЗ. {owner} не отдал резерв {quantity} шт. {sku} "
        f"из заказа клиента {from_number}. Причина: {reason}"
    )


def cancelled_text(requester: str, quantity: int, sku: str, from_number: str) -> str:
    return (
        f"{requester} отменил запрос резерва {quantity} шт. {sku} "
        f"из вашего заказа клиента {from_number}."
    )


def expired_text(quantity: int, sku: str, from_number: str) -> str:
    return (
        f"Запрос резерва {quantity} шт. {sku} из заказа клиента {from_number} "
        f"истёк без ответа."
    )
