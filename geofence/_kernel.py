"""The polygon edge kernel compiled with Numba, when Numba is installed.

The NumPy kernel of geofence._edges makes about thirty passes over a (pair, candidate edge) row
table that it first has to build in memory (about 24 rows per fix); this one walks each pair's
candidate list in place, once. It computes exactly what the NumPy kernel computes, in the same
floating-point order (float32 search over the same candidates in the same order, ties to the first
candidate; float64 re-measure of the winner; the same side rule), so the two give bit-for-bit the
same distances: the NumPy kernel stays the reference and the fallback when Numba is missing or
disabled (``TAGWATCH_GEOFENCE_NUMBA=0``).

Numba is imported lazily and the kernel compiled, with an explicit signature, the first time a
batch is classified: about 1.4 s in a fresh environment, 0.8 s (mostly importing Numba) once the
compiled code is cached on disk (next to this file, or in NUMBA_CACHE_DIR).

Why compiled: the tables (district candidate lists, the edges of every subject's own polygons) are
far larger than the CPU caches, so the kernel is bound by memory latency. It therefore works in
blocks of pairs and, within a block, in passes whose loads do not depend on the previous
iteration (grid cell, candidate list, edge numbers, edge records, winner), so that many cache
misses are in flight at once; and the caller hands it the pairs sorted by polygon.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from tagwatch.geofence._numba import numba_or_none

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_KERNEL: Callable[..., None] | None = None
_TRIED = False


def _polygon_distances(
    px: FloatArray,
    py: FloatArray,
    shape: IntArray,
    s_grid: FloatArray,
    s_gridded: npt.NDArray[np.int8],
    s_cell_base: IntArray,
    s_cand_base: IntArray,
    s_edge_base: IntArray,
    s_n_edges: IntArray,
    cells: npt.NDArray[np.int32],
    cand: npt.NDArray[np.int32],
    select: npt.NDArray[np.float32],
    exact: FloatArray,
    normals: npt.NDArray[np.float32],
    out: FloatArray,
) -> None:  # pragma: no cover - runs compiled; tests compare it with the NumPy kernel
    """Signed distance of each (point, polygon) pair; see geofence._edges for the rules.

    The pairs go in blocks, and each block in passes whose loads do not depend on the previous
    iteration (grid cell, candidate list, edge numbers, edge records, winner), so that the CPU
    keeps many cache misses in flight: the tables are far larger than the caches, and a single
    pass that follows each pair's chain of lookups to the end waits for them one at a time."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    n = px.size
    block = 256
    at = np.empty(block, dtype=np.int64)
    list_base = np.empty(block, dtype=np.int64)
    count = np.empty(block, dtype=np.int64)
    row_start = np.empty(block + 1, dtype=np.int64)
    winner = np.empty(block, dtype=np.int64)
    edges = np.empty(block * 64, dtype=np.int64)
    for a in range(0, n, block):
        b = min(a + block, n)
        m = b - a
        # 1. The cell of each point (polygons without grid have one cell listing every edge).
        for j in range(m):
            sh = shape[a + j]
            cell = 0.0
            if s_gridded[sh] != 0:
                x = px[a + j]
                y = py[a + j]
                g = s_grid[sh]
                ix = math.floor((x - g[0]) * g[2])
                iy = math.floor((y - g[1]) * g[2])
                if ix >= 0.0 and ix < g[3] and iy >= 0.0 and iy < g[4]:
                    cell = iy * g[3] + ix
                else:
                    jx = math.floor((x - g[5]) * g[7])
                    jy = math.floor((y - g[6]) * g[7])
                    fine_n = g[3] * g[4]
                    if jx >= 0.0 and jx < g[8] and jy >= 0.0 and jy < g[9]:
                        cell = fine_n + jy * g[8] + jx
                    else:
                        cell = fine_n + g[8] * g[9]
            at[j] = s_cell_base[sh] + np.int64(cell)
        # 2. Its candidate list.
        total = np.int64(0)
        for j in range(m):
            first = np.int64(cells[at[j]])
            c = np.int64(cells[at[j] + 1]) - first
            list_base[j] = s_cand_base[shape[a + j]] + first
            count[j] = c
            row_start[j] = total
            total += c
        row_start[m] = total
        if total > edges.size:
            edges = np.empty(2 * total, dtype=np.int64)
        # 3. Absolute edge numbers.
        for j in range(m):
            base = s_edge_base[shape[a + j]]
            lb = list_base[j]
            r0 = row_start[j]
            for k in range(count[j]):
                edges[r0 + k] = base + cand[lb + k]
        # 4. The float32 search: the first candidate at the least squared distance wins.
        for j in range(m):
            x32 = np.float32(px[a + j])
            y32 = np.float32(py[a + j])
            best = np.float32(np.inf)
            w = edges[row_start[j]]
            for r in range(row_start[j], row_start[j + 1]):
                e = edges[r]
                dx = x32 - select[e, 0]
                dy = y32 - select[e, 1]
                ex = select[e, 2]
                ey = select[e, 3]
                t = dx * ex
                t += dy * ey
                t *= select[e, 4]
                t = min(max(t, zero), one)
                dx -= t * ex
                dy -= t * ey
                d2 = dx * dx + dy * dy
                better = d2 < best
                w = e if better else w
                best = d2 if better else best
            winner[j] = w
        # 5. The winner again, in float64, with the side rule.
        for j in range(m):
            w = winner[j]
            x = px[a + j]
            y = py[a + j]
            sx = exact[w, 0]
            sy = exact[w, 1]
            ex64 = exact[w, 2]
            ey64 = exact[w, 3]
            dx64 = x - sx
            dy64 = y - sy
            t64 = (dx64 * ex64 + dy64 * ey64) / (ex64 * ex64 + ey64 * ey64)
            u = min(max(t64, 0.0), 1.0)
            rx = dx64 - u * ex64
            ry = dy64 - u * ey64
            distance = math.sqrt(rx * rx + ry * ry)
            if t64 >= 1.0:
                nx = np.float64(normals[w, 2])
                ny = np.float64(normals[w, 3])
                outside = (x - (sx + ex64)) * nx + (y - (sy + ey64)) * ny > 0.0
            elif t64 <= 0.0:
                nx = np.float64(normals[w, 0])
                ny = np.float64(normals[w, 1])
                outside = (x - sx) * nx + (y - sy) * ny > 0.0
            else:
                outside = ex64 * dy64 - ey64 * dx64 < 0.0
            out[a + j] = distance if outside else -distance


def polygon_kernel() -> Callable[..., None] | None:
    """The compiled kernel, or None without Numba (or with TAGWATCH_GEOFENCE_NUMBA=0)."""
    global _KERNEL, _TRIED  # noqa: PLW0603 - compiled once per process
    if _TRIED:
        return _KERNEL
    _TRIED = True
    numba = numba_or_none()
    if numba is None:
        return None
    i64 = numba.int64[::1]
    f64 = numba.float64[::1]
    signature = numba.void(
        f64,
        f64,
        i64,
        numba.float64[:, ::1],
        numba.int8[::1],
        i64,
        i64,
        i64,
        i64,
        numba.int32[::1],
        numba.int32[::1],
        numba.float32[:, ::1],
        numba.float64[:, ::1],
        numba.float32[:, ::1],
        f64,
    )
    compiled = numba.njit(signature, nogil=True, cache=True, boundscheck=False)(_polygon_distances)
    _KERNEL = compiled
    return _KERNEL
