"""``reserves serve --roles``: which parts of the service one process runs."""

from __future__ import annotations

import argparse

import pytest

from services.cli import parse_roles
from services.settings import ROLES


def test_roles_are_a_comma_separated_subset() -> None:
    assert parse_roles("api") == {"api"}
    assert parse_roles(" relay, projections ,") == {"relay", "projections"}
    assert parse_roles(",".join(ROLES)) == set(ROLES)


@pytest.mark.parametrize("raw", ["", ",", "api,web", "everything"])
def test_unknown_or_no_roles_are_refused_with_the_list_of_roles(raw: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="api,consumers,relay"):
        parse_roles(raw)


def test_serve_runs_every_role_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from services import cli

    seen: list[frozenset[str]] = []

    def fake_serve(args: argparse.Namespace, settings: object) -> int:
        seen.append(args.roles)
        return 0

    monkeypatch.setattr(cli, "cmd_serve", fake_serve)
    monkeypatch.setenv("RESERVES_API_TOKENS", "ivanov=t1")
    monkeypatch.setenv("RESERVES_ERP_TOKENS", "t2")
    assert cli.main(["serve"]) == 0
    assert cli.main(["serve", "--roles", "api,expiry"]) == 0
    assert seen == [frozenset(ROLES), frozenset({"api", "expiry"})]
