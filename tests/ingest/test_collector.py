"""The ingest worker's garbage collector settings (ingest/collector.py): what is alive when the
catalogue is loaded is frozen out of the collector's sight, the young threshold is raised, and
cycles made afterwards are still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from tagwatch.ingest import collector
from tagwatch.settings import Settings


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_what_is_loaded_is_frozen_and_later_cycles_are_still_collected() -> None:
    catalogue = [_Node() for _ in range(1_000)]  # stands for the engine's long-lived objects
    assert collector.settle(50_000) == (50_000, *collector.OLDER_THRESHOLDS)
    assert gc.get_freeze_count() >= len(catalogue)

    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle made while the worker runs
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
    assert all(isinstance(node, _Node) for node in catalogue)


def test_zero_keeps_pythons_thresholds() -> None:
    before = gc.get_threshold()
    assert collector.settle(0) == before


def test_the_benches_default_is_the_workers() -> None:
    field = Settings.model_fields["ingest_gc_threshold"]
    assert field.default == collector.DEFAULT_YOUNG_THRESHOLD
