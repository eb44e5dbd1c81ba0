"""``reserves serve`` tunes the cyclic garbage collector once it has started."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from services.cli import GC_YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def gc_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("gc_restored")
def test_startup_objects_are_frozen_and_young_collections_come_less_often() -> None:
    gc.unfreeze()
    middle, old = gc.get_threshold()[1:]
    built_at_startup = {"a": [1, 2, 3]}

    tune_gc()

    assert gc.get_freeze_count() > 0
    # frozen: in no generation the collector scans any more
    assert all(o is not built_at_startup for o in gc.get_objects())
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, middle, old)


@pytest.mark.usefixtures("gc_restored")
def test_cycles_made_after_startup_are_still_collected() -> None:
    tune_gc()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()

    assert gone() is None
