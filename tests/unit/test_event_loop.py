"""``RESERVES_EVENT_LOOP``: which event loop ``reserves serve`` runs on (and, refused the same
way when malformed, ``RESERVES_SWITCH_INTERVAL_S``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvloop

from services.cli import main
from services.runtime import LoopThread, event_loop_factory
from services.settings import EventLoop, SettingsError, load_settings

TOKENS = {"RESERVES_API_TOKENS": "ivanov=t-ivanov", "RESERVES_ERP_TOKENS": "t-erp"}


def _chosen(tmp_path: Path, **values: str) -> EventLoop:
    return load_settings({"RESERVES_VAR_DIR": str(tmp_path), **TOKENS, **values}).event_loop


def _loop_type(name: EventLoop) -> type:
    loop = event_loop_factory(name)()
    try:
        return type(loop)
    finally:
        loop.close()


def test_uvloop_by_default(tmp_path: Path) -> None:
    assert issubclass(_loop_type(_chosen(tmp_path)), uvloop.Loop)
    assert issubclass(_loop_type(_chosen(tmp_path, RESERVES_EVENT_LOOP="")), uvloop.Loop)


def test_the_standard_loop_when_asked(tmp_path: Path) -> None:
    loop_type = _loop_type(_chosen(tmp_path, RESERVES_EVENT_LOOP="asyncio"))
    assert not issubclass(loop_type, uvloop.Loop)
    assert issubclass(loop_type, asyncio.BaseEventLoop)


def test_an_unknown_loop_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="RESERVES_EVENT_LOOP must be one of uvloop, asyncio"):
        _chosen(tmp_path, RESERVES_EVENT_LOOP="trio")


def test_the_relay_loop_thread_runs_on_the_chosen_loop() -> None:
    thread = LoopThread("test", event_loop_factory("uvloop"))
    try:
        async def running() -> object:
            return asyncio.get_running_loop()

        assert isinstance(thread.submit(running()).result(timeout=5), uvloop.Loop)
    finally:
        thread.stop()


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("RESERVES_EVENT_LOOP", "trio",
     "RESERVES_EVENT_LOOP must be one of uvloop, asyncio; not 'trio'"),
    ("RESERVES_SWITCH_INTERVAL_S", "fast",
     "RESERVES_SWITCH_INTERVAL_S must be seconds, not 'fast'"),
])
def test_serve_refuses_a_bad_loop_setting_before_starting_anything(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        variable: str, value: str, message: str) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["serve"]) == 2
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert message in err
