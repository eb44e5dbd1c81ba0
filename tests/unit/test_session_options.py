"""The session settings every PostgreSQL connection of the service starts with."""

from __future__ import annotations

from services.eventstore import SESSION_OPTIONS, apply_session_options


def test_they_are_set_when_the_operator_set_none_and_only_once() -> None:
    env: dict[str, str] = {}
    apply_session_options(env)
    apply_session_options(env)
    assert env["PGOPTIONS"] == SESSION_OPTIONS
    assert "-c jit=off" in SESSION_OPTIONS
    assert "-c max_parallel_workers_per_gather=0" in SESSION_OPTIONS


def test_an_operators_own_options_come_after_them_so_they_win() -> None:
    env = {"PGOPTIONS": "-c jit=on -c work_mem=64MB"}
    apply_session_options(env)
    assert env["PGOPTIONS"] == f"{SESSION_OPTIONS} -c jit=on -c work_mem=64MB"
