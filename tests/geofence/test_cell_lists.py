"""The candidate lists of a large polygon's grid cells, built in two levels (blocks of cells
first), against the definition measured cell by cell against every edge: the same lists, edge
for edge, so the faster build changes no classification."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagwatch.geofence._edges import _cell_lists, _cell_lists_numpy, _segment_distance
from tagwatch.geofence._grid_kernel import compiled_cell_lists


def _brute_force(
    edges: np.ndarray, lo: np.ndarray, cell: float, nx: int, ny: int
) -> tuple[np.ndarray, np.ndarray]:
    centre_x = np.tile(lo[0] + (np.arange(nx) + 0.5) * cell, ny)
    centre_y = np.repeat(lo[1] + (np.arange(ny) + 0.5) * cell, nx)
    d = _segment_distance(centre_x[:, None], centre_y[:, None], edges)
    limit = d.min(axis=1, keepdims=True) + 2.0 * cell * np.sqrt(0.5) + 1e-3
    rows, cols = np.nonzero(d <= limit)
    return np.bincount(rows, minlength=nx * ny), cols.astype(np.int32)


def _ragged_ring(seed: int, n: int, size: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0.0, 2 * np.pi, n))
    radii = size * rng.uniform(0.4, 1.0, n)
    ring = np.column_stack((radii * np.cos(angles), radii * np.sin(angles)))
    start = ring
    direction = np.roll(ring, -1, axis=0) - ring
    return np.hstack((start, direction))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(3, 400),
    size=st.floats(50.0, 40_000.0),
    nx=st.integers(1, 70),
    ny=st.integers(1, 70),
    margin=st.floats(0.0, 2.0),
)
def test_two_level_lists_equal_the_definition(
    seed: int, n: int, size: float, nx: int, ny: int, margin: float
) -> None:
    edges = _ragged_ring(seed, n, size)
    edges = edges[np.hypot(edges[:, 2], edges[:, 3]) > 0]
    lo = np.array([-size * (1 + margin), -size * (1 + margin)])
    cell = 2 * size * (1 + margin) / max(nx, ny)
    want_counts, want_lists = _brute_force(edges, lo, cell, nx, ny)
    # what the index uses (compiled with Numba here) and the NumPy version, both
    for counts, lists in (
        _cell_lists(edges, lo, cell, nx, ny),
        _cell_lists_numpy(edges, lo, cell, nx, ny),
    ):
        assert counts.dtype == np.int64 and lists.dtype == np.int32
        assert np.array_equal(counts, want_counts)
        assert np.array_equal(lists, want_lists)


def test_the_lists_are_compiled_where_numba_is_installed() -> None:
    """Where Numba is installed (the suite's environment), the compiled builder is the one the
    index uses."""
    pytest.importorskip("numba")
    if os.environ.get("TAGWATCH_GEOFENCE_NUMBA") == "0":
        pytest.skip("compiled kernels switched off")
    assert compiled_cell_lists() is not None


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(3, 300),
    nx=st.integers(1, 40),
    ny=st.integers(1, 40),
    levels=st.sampled_from([(1,), (3, 1), (8, 1), (8, 4, 2, 1), (12, 3, 1), (16, 8, 2, 1)]),
)
def test_any_nesting_of_groups_gives_the_definition(
    seed: int, n: int, nx: int, ny: int, levels: tuple[int, ...]
) -> None:
    """The compiled builder's groups of cells are only a way to shorten lists: every nesting
    (each size dividing the one before it, the last the cells) gives the same lists."""
    compiled = compiled_cell_lists()
    if compiled is None:
        pytest.skip("Numba not installed or switched off")
    size = 1_000.0
    edges = _ragged_ring(seed, n, size)
    edges = edges[np.hypot(edges[:, 2], edges[:, 3]) > 0]
    lo = np.array([-1.5 * size, -1.5 * size])
    cell = 3 * size / max(nx, ny)
    want_counts, want_lists = _brute_force(edges, lo, cell, nx, ny)
    counts, lists = compiled(
        np.ascontiguousarray(edges), lo[0], lo[1], cell, nx, ny, np.array(levels, dtype=np.int64)
    )
    assert np.array_equal(counts, want_counts)
    assert np.array_equal(lists, want_lists)
