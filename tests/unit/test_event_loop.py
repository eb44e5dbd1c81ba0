"""``RESERVES_EVENT_LOOP``: which event loop ``reserves serve`` runs on."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from services.cli import main
from services.runtime import LoopThread, event_loop_factory
from services.settings import SettingsError


def _loop_type(env: dict[str, str]) -> type:
    loop = event_loop_factory(env)()
    try:
        return type(loop)
    finally:
        loop.close()


def test_uvloop_by_default() -> None:
    assert issubclass(_loop_type({}), uvloop.Loop)
    assert issubclass(_loop_type({"RESERVES_EVENT_LOOP": ""}), uvloop.Loop)


def test_the_standard_loop_when_asked() -> None:
    loop_type = _loop_type({"RESERVES_EVENT_LOOP": "asyncio"})
    assert not issubclass(loop_type, uvloop.Loop)
    assert issubclass(loop_type, asyncio.BaseEventLoop)


def test_an_unknown_loop_is_a_configuration_error() -> None:
    with pytest.raises(SettingsError, match="RESERVES_EVENT_LOOP must be one of uvloop, asyncio"):
        event_loop_factory({"RESERVES_EVENT_LOOP": "trio"})


def test_the_relay_loop_thread_runs_on_the_chosen_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESERVES_EVENT_LOOP", "uvloop")
    thread = LoopThread("test")
    try:
        async def running() -> object:
            return asyncio.get_running_loop()

        assert isinstance(thread.submit(running()).result(timeout=5), uvloop.Loop)
    finally:
        thread.stop()


def test_serve_refuses_an_unknown_loop_before_starting_anything(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RESERVES_EVENT_LOOP", "trio")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "RESERVES_EVENT_LOOP must be one of uvloop, asyncio; not 'trio'" in err
