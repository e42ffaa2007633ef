"""The candidate lists of a large polygon's grid cells (geofence._edges._cell_lists), compiled
with Numba when it is installed.

Building a district's grid with NumPy loops in Python over its blocks of cells (73 per district,
each a handful of small array operations), and that loop was a third of building the national
index (bench geofence: 8 s of 22 s for 400 districts and the global zones). Compiled, the same
arithmetic runs in one pass per level of nested groups of cells. Each distance is computed as
the NumPy version computes it: the same float64 operations in the same order (no fused
multiply-add: Numba compiles without fastmath), so the lists are the same edge for edge, which
tests/geofence/test_cell_lists.py checks against the definition for both. Without Numba, or with
``TAGWATCH_GEOFENCE_NUMBA=0``, the NumPy version runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from tagwatch.geofence._numba import compile_kernel, numba_or_none

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_COMPILED: Callable[..., tuple[IntArray, npt.NDArray[np.int32]]] | None = None
_TRIED = False


def _cell_lists(
    edges: FloatArray,
    lo0: float,
    lo1: float,
    cell: float,
    nx: int,
    ny: int,
    levels: IntArray,
) -> tuple[IntArray, npt.NDArray[np.int32]]:  # pragma: no cover - runs compiled
    """Counts per cell and the concatenated lists, cells in order and each list in edge order.

    ``levels`` are the sizes, in cells, of nested square groups of cells, coarsest first, each
    dividing the one before it, the last 1 (the cells themselves): e.g. (8, 4, 2, 1). The coarsest
    groups are measured against every edge, each finer group against its parent's list only,
    with the same rule; see geofence._edges._cell_lists_numpy for why the lists stay exact (the
    argument holds for any group inside another). Four levels build a district's grids (535 edges)
    in 3.7 ms, where blocks of 8 cells then the cells took 6.4 and blocks of 3 then cells 4.7."""
    n = edges.shape[0]
    e0 = edges[:, 0]
    e1 = edges[:, 1]
    e2 = edges[:, 2]
    e3 = edges[:, 3]
    inv_len2 = np.empty(n, dtype=np.float64)
    for k in range(n):
        inv_len2[k] = 1.0 / (e2[k] * e2[k] + e3[k] * e3[k])
    d = np.empty(n, dtype=np.float64)

    # The parent of every group is one group of the whole polygon: all edges.
    parent_size = max(nx, ny)
    parent_gx = 1
    parent_start = np.zeros(2, dtype=np.int64)
    parent_start[1] = n
    parent_edges = np.arange(n, dtype=np.int64)
    for level in range(levels.size):
        g = levels[level]
        gx = -(-nx // g)
        gy = -(-ny // g)
        size = g * cell
        reach = 2.0 * size * math.sqrt(0.5)
        start = np.zeros(gx * gy + 1, dtype=np.int64)
        out = np.empty(max(parent_start[-1], 16) * 2, dtype=np.int64)
        used = 0
        for j in range(gy):
            qy = lo1 + (j + 0.5) * size
            pj = (j * g) // parent_size
            for i in range(gx):
                qx = lo0 + (i + 0.5) * size
                p = pj * parent_gx + (i * g) // parent_size
                first = parent_start[p]
                last = parent_start[p + 1]
                nearest = np.inf
                for r in range(first, last):
                    k = parent_edges[r]
                    dx = qx - e0[k]
                    dy = qy - e1[k]
                    u = min(max((dx * e2[k] + dy * e3[k]) * inv_len2[k], 0.0), 1.0)
                    rx = dx - u * e2[k]
                    ry = dy - u * e3[k]
                    d[r - first] = math.sqrt(rx * rx + ry * ry)
                    nearest = min(nearest, d[r - first])
                limit = nearest + reach + 1e-3
                for r in range(first, last):
                    if d[r - first] <= limit:
                        if used == out.size:
                            grown = np.empty(2 * used, dtype=np.int64)
                            grown[:used] = out
                            out = grown
                        out[used] = parent_edges[r]
                        used += 1
                start[j * gx + i + 1] = used
        parent_size = g
        parent_gx = gx
        parent_start = start
        parent_edges = out[:used]
    counts = np.empty(nx * ny, dtype=np.int64)
    for c in range(nx * ny):
        counts[c] = parent_start[c + 1] - parent_start[c]
    return counts, parent_edges.astype(np.int32)


def compiled_cell_lists() -> Callable[..., tuple[IntArray, npt.NDArray[np.int32]]] | None:
    """The compiled builder, or None without Numba (or with TAGWATCH_GEOFENCE_NUMBA=0)."""
    global _COMPILED, _TRIED  # noqa: PLW0603 - compiled once per process
    if _TRIED:
        return _COMPILED
    _TRIED = True
    numba = numba_or_none()
    if numba is None:
        return None
    signature = numba.types.Tuple((numba.int64[::1], numba.int32[::1]))(
        numba.float64[:, ::1],
        numba.float64,
        numba.float64,
        numba.float64,
        numba.int64,
        numba.int64,
        numba.int64[::1],
    )
    _COMPILED = compile_kernel(numba, signature, _cell_lists)
    return _COMPILED
