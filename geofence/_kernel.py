"""The polygon edge kernel compiled with Numba, when Numba is installed.

The NumPy kernel of geofence._edges makes about thirty passes over a (pair, candidate edge) row
table that it first has to build in memory (about 24 rows per fix); this one walks each pair's
candidate list in place, once. It computes exactly what the NumPy kernel computes, in the same
floating-point order (float32 search over the same candidates in the same order, ties to the first
candidate; float64 re-measure of the winner; the same side rule), so the two give bit-for-bit the
same distances: the NumPy kernel stays the reference and the fallback when Numba is missing or
disabled (``TAGWATCH_GEOFENCE_NUMBA=0``).

The kernel also projects each pair's fix into its polygon's frame (_frame_prep, then the rest of
geofence._projection.to_frame at the start of each block), and circle pairs are measured the same
way (_circle_prep): reading the fix and the frame or circle row where they are used replaces a
dozen gathered and temporary columns per pair (about a tenth of classifying a national batch).
Both keep to_frame's and chord_distance's float64 operations in their order, and leave the
arcsine to NumPy, whose SIMD arcsine differs from libm's (Numba's) in the last bit for about 1 %
of inputs: so the compiled path's distances stay the NumPy path's, bit for bit.

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

from tagwatch.geofence._numba import compile_kernel, numba_or_none
from tagwatch.geofence._projection import (
    FRAME_COS_LAT,
    FRAME_COS_LON,
    FRAME_HALF_INV_R,
    FRAME_SIN_LAT,
    FRAME_SIN_LON,
    FRAME_X,
    FRAME_Y,
    FRAME_Z,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_KERNEL: Callable[..., None] | None = None
_CIRCLES: Callable[..., FloatArray] | None = None
_TRIED = False


def _frame_prep(
    order: IntArray,
    pair_fix: IntArray,
    pair_shape: IntArray,
    x: FloatArray,
    y: FloatArray,
    z: FloatArray,
    s_frame: FloatArray,
    shape: IntArray,
    east: FloatArray,
    north: FloatArray,
    ratio: FloatArray,
    horizontal2: FloatArray,
) -> None:  # pragma: no cover - runs compiled; tests compare it with the NumPy kernel
    """The first half of geofence._projection.to_frame for the pairs in polygon ``order``, with
    the same float64 operations in the same order: each pair's point in its polygon's frame
    before the arc correction, and the chord ratio whose arcsine the caller takes with NumPy
    (NumPy's SIMD arcsine and libm's differ in the last bit for about 1 % of inputs). Reading
    the fix and the frame row here replaces a dozen gathered and temporary columns."""
    for i in range(order.size):
        k = order[i]
        fix = pair_fix[k]
        sh = pair_shape[k]
        shape[i] = sh
        dx = x[fix] - s_frame[sh, FRAME_X]
        dy = y[fix] - s_frame[sh, FRAME_Y]
        dz = z[fix] - s_frame[sh, FRAME_Z]
        sin_lon = s_frame[sh, FRAME_SIN_LON]
        cos_lon = s_frame[sh, FRAME_COS_LON]
        e = cos_lon * dy - sin_lon * dx
        radial = cos_lon * dx + sin_lon * dy
        nn = s_frame[sh, FRAME_COS_LAT] * dz - s_frame[sh, FRAME_SIN_LAT] * radial
        chord2 = dx * dx + dy * dy + dz * dz
        east[i] = e
        north[i] = nn
        horizontal2[i] = e * e + nn * nn
        r = math.sqrt(chord2) * s_frame[sh, FRAME_HALF_INV_R]
        ratio[i] = 1.0 if r > 1.0 else r  # np.minimum(r, 1.0), NaN included


def _circle_prep(
    circles: IntArray,
    pair_fix: IntArray,
    slot: IntArray,
    x: FloatArray,
    y: FloatArray,
    z: FloatArray,
    z_circle: FloatArray,
    z_radius: FloatArray,
    ratio: FloatArray,
    half_inv_r: FloatArray,
    radius: FloatArray,
) -> None:  # pragma: no cover - runs compiled; tests compare it with the NumPy path
    """geofence._projection.chord_distance up to the arcsine, for the circle pairs ``circles``,
    with the same float64 operations in the same order: the chord ratio, and the circle's
    1 / 2R and radius, so that the caller's ``arcsin(ratio) / half_inv_r - radius`` is the
    NumPy path's distance bit for bit."""
    for i in range(circles.size):
        k = circles[i]
        fix = pair_fix[k]
        s = slot[k]
        dx = x[fix] - z_circle[s, 0]
        dy = y[fix] - z_circle[s, 1]
        dz = z[fix] - z_circle[s, 2]
        hir = z_circle[s, 3]
        r = math.sqrt(dx * dx + dy * dy + dz * dz) * hir
        ratio[i] = 1.0 if r > 1.0 else r  # np.minimum(r, 1.0), NaN included
        half_inv_r[i] = hir
        radius[i] = z_radius[s]


def _polygon_distances(
    east: FloatArray,
    north: FloatArray,
    arcsine: FloatArray,
    horizontal2: FloatArray,
    order: IntArray,
    shape: IntArray,
    s_frame: FloatArray,
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
    """Signed distance of each (point, polygon) pair; see geofence._edges for the rules. The
    pairs come in polygon ``order``; each point's frame position is finished from _frame_prep's
    columns and the arcsine (the rest of to_frame, in its order of operations), and its distance
    is written to ``out`` at its place before the sort.

    The pairs go in blocks, and each block in passes whose loads do not depend on the previous
    iteration (grid cell, candidate list, edge numbers, edge records, winner), so that the CPU
    keeps many cache misses in flight: the tables are far larger than the caches, and a single
    pass that follows each pair's chain of lookups to the end waits for them one at a time."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    n = east.size
    block = 256
    px = np.empty(block, dtype=np.float64)
    py = np.empty(block, dtype=np.float64)
    at = np.empty(block, dtype=np.int64)
    list_base = np.empty(block, dtype=np.int64)
    count = np.empty(block, dtype=np.int64)
    row_start = np.empty(block + 1, dtype=np.int64)
    winner = np.empty(block, dtype=np.int64)
    edges = np.empty(block * 64, dtype=np.int64)
    for a in range(0, n, block):
        b = min(a + block, n)
        m = b - a
        # 0. The point in its polygon's frame: arc / horizontal distance scales east and north.
        for j in range(m):
            arc = arcsine[a + j] / s_frame[shape[a + j], FRAME_HALF_INV_R]
            h2 = horizontal2[a + j]
            scale = arc / math.sqrt(h2) if h2 > 0.0 else 1.0
            px[j] = east[a + j] * scale
            py[j] = north[a + j] * scale
        # 1. The cell of each point (polygons without grid have one cell listing every edge).
        for j in range(m):
            sh = shape[a + j]
            cell = 0.0
            if s_gridded[sh] != 0:
                x = px[j]
                y = py[j]
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
            x32 = np.float32(px[j])
            y32 = np.float32(py[j])
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
            x = px[j]
            y = py[j]
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
            out[order[a + j]] = distance if outside else -distance


def polygon_kernel() -> Callable[..., None] | None:
    """The compiled measure of (fix, polygon) pairs, or None without Numba (or with
    TAGWATCH_GEOFENCE_NUMBA=0): ``measure(pair_fix, pair_shape, order, x, y, z, s_frame, s_grid,
    s_gridded, s_cell_base, s_cand_base, s_edge_base, s_n_edges, cells, cand, select, exact,
    normals, out)`` writes each pair's signed distance to ``out`` (pair order), measuring the
    pairs in polygon ``order``."""
    global _KERNEL, _CIRCLES, _TRIED  # noqa: PLW0603 - compiled once per process
    if _TRIED:
        return _KERNEL
    _TRIED = True
    numba = numba_or_none()
    if numba is None:
        return None
    i64 = numba.int64[::1]
    f64 = numba.float64[::1]
    f64_2d = numba.float64[:, ::1]
    prep = compile_kernel(
        numba,
        numba.void(i64, i64, i64, f64, f64, f64, f64_2d, i64, f64, f64, f64, f64),
        _frame_prep,
    )
    distances = compile_kernel(
        numba,
        numba.void(
            f64,
            f64,
            f64,
            f64,
            i64,
            i64,
            f64_2d,
            f64_2d,
            numba.int8[::1],
            i64,
            i64,
            i64,
            i64,
            numba.int32[::1],
            numba.int32[::1],
            numba.float32[:, ::1],
            f64_2d,
            numba.float32[:, ::1],
            f64,
        ),
        _polygon_distances,
    )

    def measure(
        pair_fix: IntArray,
        pair_shape: IntArray,
        order: IntArray,
        x: FloatArray,
        y: FloatArray,
        z: FloatArray,
        s_frame: FloatArray,
        *tables: npt.NDArray[np.generic],
    ) -> None:
        n = order.size
        shape = np.empty(n, dtype=np.int64)
        east = np.empty(n, dtype=np.float64)
        north = np.empty(n, dtype=np.float64)
        ratio = np.empty(n, dtype=np.float64)
        horizontal2 = np.empty(n, dtype=np.float64)
        prep(order, pair_fix, pair_shape, x, y, z, s_frame, shape, east, north, ratio, horizontal2)
        np.arcsin(ratio, out=ratio)  # NumPy's, as to_frame takes it
        distances(east, north, ratio, horizontal2, order, shape, s_frame, *tables)

    circle_prep = compile_kernel(
        numba, numba.void(i64, i64, i64, f64, f64, f64, f64_2d, f64, f64, f64, f64), _circle_prep
    )

    def measure_circles(
        circles: IntArray,
        pair_fix: IntArray,
        slot: IntArray,
        x: FloatArray,
        y: FloatArray,
        z: FloatArray,
        z_circle: FloatArray,
        z_radius: FloatArray,
    ) -> FloatArray:
        n = circles.size
        ratio = np.empty(n, dtype=np.float64)
        half_inv_r = np.empty(n, dtype=np.float64)
        radius = np.empty(n, dtype=np.float64)
        circle_prep(circles, pair_fix, slot, x, y, z, z_circle, z_radius, ratio, half_inv_r, radius)
        np.arcsin(ratio, out=ratio)
        np.divide(ratio, half_inv_r, out=ratio)
        return np.subtract(ratio, radius, out=ratio)

    _KERNEL = measure
    _CIRCLES = measure_circles
    return _KERNEL


def circle_kernel() -> Callable[..., FloatArray] | None:
    """The compiled measure of (fix, circle zone) pairs, or None without Numba:
    ``measure_circles(circles, pair_fix, slot, x, y, z, z_circle, z_radius)`` is the distance of
    the pairs ``circles`` to their circles' edges, as the NumPy path computes it."""
    polygon_kernel()
    return _CIRCLES if _KERNEL is not None else None
