"""The candidate lists of a large polygon's grid cells (geofence._edges._cell_lists), compiled
with Numba when it is installed.

Building a district's grid with NumPy loops in Python over its blocks of cells (73 per district,
each a handful of small array operations), and that loop was a third of building the national
index (bench geofence: 8 s of 22 s for 400 districts and the global zones). Compiled, the same
arithmetic runs in one pass per grid. It computes exactly what the NumPy version computes: the
same float64 operations in the same order (no fused multiply-add: Numba compiles without
fastmath), so the lists are the same edge for edge, which tests/geofence/test_cell_lists.py
checks against the definition for both. Without Numba, or with ``TAGWATCH_GEOFENCE_NUMBA=0``,
the NumPy version runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from tagwatch.geofence._numba import numba_or_none

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_COMPILED: Callable[..., tuple[IntArray, npt.NDArray[np.int32]]] | None = None
_TRIED = False


def _cell_lists(
    edges: FloatArray, lo0: float, lo1: float, cell: float, nx: int, ny: int, block: int
) -> tuple[IntArray, npt.NDArray[np.int32]]:  # pragma: no cover - runs compiled
    """Counts per cell and the concatenated lists, cells in order and each list in edge order.

    Blocks of ``block`` x ``block`` cells get their lists first (against every edge), then each
    cell is measured against its block's list only; see geofence._edges._cell_lists for why the
    lists are exact."""
    n = edges.shape[0]
    bx = -(-nx // block)
    by = -(-ny // block)
    e0 = edges[:, 0]
    e1 = edges[:, 1]
    e2 = edges[:, 2]
    e3 = edges[:, 3]
    inv_len2 = np.empty(n, dtype=np.float64)
    for k in range(n):
        inv_len2[k] = 1.0 / (e2[k] * e2[k] + e3[k] * e3[k])
    d = np.empty(n, dtype=np.float64)

    # 1. Each block's list, as CSR.
    size = block * cell
    block_reach = 2.0 * size * math.sqrt(0.5)
    block_start = np.zeros(bx * by + 1, dtype=np.int64)
    block_edges = np.empty(max(n, 16) * 4, dtype=np.int64)
    used = 0
    for b in range(bx * by):
        qx = lo0 + ((b % bx) + 0.5) * size
        qy = lo1 + ((b // bx) + 0.5) * size
        nearest = np.inf
        for k in range(n):
            dx = qx - e0[k]
            dy = qy - e1[k]
            u = min(max((dx * e2[k] + dy * e3[k]) * inv_len2[k], 0.0), 1.0)
            rx = dx - u * e2[k]
            ry = dy - u * e3[k]
            d[k] = math.sqrt(rx * rx + ry * ry)
            nearest = min(nearest, d[k])
        limit = nearest + block_reach + 1e-3
        for k in range(n):
            if d[k] <= limit:
                if used == block_edges.size:
                    grown = np.empty(2 * used, dtype=np.int64)
                    grown[:used] = block_edges
                    block_edges = grown
                block_edges[used] = k
                used += 1
        block_start[b + 1] = used

    # 2. Each cell, in cell order, against its block's list.
    reach = 2.0 * cell * math.sqrt(0.5)
    counts = np.zeros(nx * ny, dtype=np.int64)
    out = np.empty(max(n, 16) * 4, dtype=np.int32)
    written = 0
    for iy in range(ny):
        qy = lo1 + (iy + 0.5) * cell
        for ix in range(nx):
            qx = lo0 + (ix + 0.5) * cell
            b = (iy // block) * bx + ix // block
            first = block_start[b]
            last = block_start[b + 1]
            nearest = np.inf
            for r in range(first, last):
                k = block_edges[r]
                dx = qx - e0[k]
                dy = qy - e1[k]
                u = min(max((dx * e2[k] + dy * e3[k]) * inv_len2[k], 0.0), 1.0)
                rx = dx - u * e2[k]
                ry = dy - u * e3[k]
                d[r - first] = math.sqrt(rx * rx + ry * ry)
                nearest = min(nearest, d[r - first])
            limit = nearest + reach + 1e-3
            c = iy * nx + ix
            for r in range(first, last):
                if d[r - first] <= limit:
                    if written == out.size:
                        grown32 = np.empty(2 * written, dtype=np.int32)
                        grown32[:written] = out
                        out = grown32
                    out[written] = block_edges[r]
                    written += 1
                    counts[c] += 1
    return counts, out[:written].copy()


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
        numba.int64,
    )
    _COMPILED = numba.njit(signature, nogil=True, cache=True, boundscheck=False)(_cell_lists)
    return _COMPILED
