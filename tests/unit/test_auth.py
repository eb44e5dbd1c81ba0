"""Bearer tokens: who is calling, compared in constant time."""

from __future__ import annotations

import pytest

from handlers.auth import Authenticator, Caller

API_TOKENS = {"tok-ivanov-0123456789": "ivanov", "tok-petrova-0123456789": "petrova"}
ERP_TOKEN = "tok-erp-0123456789"


@pytest.fixture
def authenticator() -> Authenticator:
    return Authenticator(dict(API_TOKENS), frozenset({ERP_TOKEN}))


def test_a_managers_token_names_that_manager(authenticator: Authenticator) -> None:
    assert authenticator.identify("Bearer tok-ivanov-0123456789") == Caller("manager", "ivanov")
    assert authenticator.identify("Bearer tok-petrova-0123456789") == Caller("manager", "petrova")


def test_an_erp_token_names_the_erp(authenticator: Authenticator) -> None:
    assert authenticator.identify(f"Bearer {ERP_TOKEN}") == Caller("erp", "erp")


def test_the_bearer_scheme_is_case_insensitive(authenticator: Authenticator) -> None:
    assert authenticator.identify(f"bearer {ERP_TOKEN}") == Caller("erp", "erp")


@pytest.mark.parametrize("header", [
    None,
    "",
    "Basic x",
    f"Basic {ERP_TOKEN}",
    "Bearer",
    "Bearer ",
    "Bearer    ",
    "Bearer unknown-token",
    "Bearer tok-ivanov",
    "Bearer tok-ivanov-012345678",
    "Bearer tok-ivanov-0123456789x",
    f"{ERP_TOKEN}",
], ids=["missing", "empty", "basic", "basic-with-valid-token", "no-token", "empty-token",
        "blank-token", "unknown", "short-prefix", "prefix", "extended", "no-scheme"])
def test_a_header_without_a_known_bearer_token_names_nobody(
    authenticator: Authenticator, header: str | None
) -> None:
    assert authenticator.identify(header) is None


def test_with_no_tokens_configured_nobody_is_identified() -> None:
    assert Authenticator({}, frozenset()).identify("Bearer anything") is None


class CountingCompare:
    def __init__(self) -> None:
        self.compared: list[bytes] = []

    def __call__(self, a: bytes, b: bytes) -> bool:
        self.compared.append(b)
        return a == b


@pytest.mark.parametrize("presented", [
    "tok-ivanov-0123456789", "tok-petrova-0123456789", ERP_TOKEN, "unknown-token",
])
def test_every_known_token_is_compared_with_compare_digest_without_early_exit(
    authenticator: Authenticator, monkeypatch: pytest.MonkeyPatch, presented: str
) -> None:
    counting = CountingCompare()
    monkeypatch.setattr("handlers.auth.hmac.compare_digest", counting)
    authenticator.identify(f"Bearer {presented}")
    known = sorted(t.encode() for t in [*API_TOKENS, ERP_TOKEN])
    assert sorted(counting.compared) == known
