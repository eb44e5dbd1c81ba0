"""The fault-injection suite is long: it runs under ``pytest -m faults`` (``make test-faults``)
and is left out of every other run, ``make test`` included."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "faults" in (config.getoption("markexpr") or ""):
        return
    skipped = [item for item in items if item.get_closest_marker("faults")]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if not item.get_closest_marker("faults")]
