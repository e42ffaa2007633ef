"""Signed distance from many points to many polygons at once, in NumPy.

Shapely is the right tool to validate and normalize a zone, but not for the hot path: making a
Shapely point costs about 0.45 us and a point-to-polygon distance another 0.5-10 us, while the
budget is under a microsecond per fix for all of its zones. So each polygon is compiled once into
flat edge arrays in its local frame, and a batch of (point, polygon) pairs is answered with
element-wise arithmetic:

* the distance is the minimum over candidate edges of the point-to-segment distance;
* the side comes from the nearest feature: the left side of the nearest edge (rings are oriented
  with the interior on their left), or, when the nearest point is a vertex, the side of the vertex's
  pseudo-normal (the sum of its two edges' outward normals), which is right even for a point that
  is only nearly nearest to that vertex. This needs no ray casting over all edges, so it works with
  a short candidate list.

The search runs in float32 on compact 24-byte edge records (gathers, not arithmetic, are the cost);
only the winning edge of each pair is then measured again in float64. The float32 choice can only
pick an edge that is within about a centimetre of the nearest one, so the reported distance is
within a centimetre of the exact minimum and the side is right except inside slivers thinner than
that.

Small polygons (up to GRID_MIN_EDGES edges) use all their edges. Larger ones (districts) get a
uniform grid over their bounding box, and a coarser one reaching FAR_FIELD_M around it; a cell
lists the edges that can be nearest for some point in
the cell: with ``q`` the cell centre, ``h`` its half-diagonal and ``D`` the distance from ``q`` to
the nearest edge, an edge farther than ``D + 2h`` from ``q`` is farther than ``D + h`` from every
point of the cell, while the edge nearest to ``q`` is within ``D + h`` of all of them. The lists
are therefore exact, not heuristic. Points outside both grids use every edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

from tagwatch.geofence._grid_kernel import compiled_cell_lists

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

GRID_MIN_EDGES = 24
GRID_MAX_CELLS_PER_AXIS = 64
GRID_MIN_CELL_M = 20.0
FAR_FIELD_M = 30_000.0
FAR_CELLS_PER_AXIS = 24
BLOCK = 8  # cells per side of the blocks that pre-select the cells' candidate edges (NumPy)
# The compiled builder's nested groups of cells, coarsest first, each dividing the one before,
# the last the cells (geofence._grid_kernel): 3.7 ms a district of 535 edges, where blocks of 8
# then the cells took 6.4 ms (the lists are the same for any nesting, see _cell_lists_numpy).
COMPILED_LEVELS = np.array([8, 4, 2, 1], dtype=np.int64)
GRID_PARAMS = 10  # fine x0, y0, 1/cell, nx, ny; far-field x0, y0, 1/cell, nx, ny

SMALL_BATCH = 4_096  # polygons checked or compiled together (zones.check_small_polygons says why)
SELECT_WIDTH = 6  # float32: start x, y; direction x, y; 1 / length**2; padding
SELECT_RECORD = np.dtype((np.void, 4 * SELECT_WIDTH))


@dataclass(frozen=True, slots=True)
class CompiledPolygon:
    select: npt.NDArray[np.float32]  # (n, SELECT_WIDTH)
    exact: FloatArray  # (n, 4): start x, y; direction x, y
    normals: npt.NDArray[np.float32]  # (n, 4): pseudo-normal at the start vertex, at the end
    grid: tuple[float, ...]  # GRID_PARAMS numbers, all zero for a polygon without grids
    cell_start: npt.NDArray[np.int32]  # offsets into cand per cell (+1); last cell = all edges
    cand: npt.NDArray[np.int32]  # edge numbers, relative to this polygon

    @property
    def n_edges(self) -> int:
        return int(self.exact.shape[0])

    @property
    def n_cells(self) -> int:
        return int(self.cell_start.size - 1)

    @property
    def nbytes(self) -> int:
        return int(
            self.select.nbytes
            + self.exact.nbytes
            + self.normals.nbytes
            + self.cell_start.nbytes
            + self.cand.nbytes
        )


def rings_of(polygon: BaseGeometry) -> list[BaseGeometry]:
    """Exterior ring first, then the holes."""
    assert isinstance(polygon, shapely.Polygon)
    return [polygon.exterior, *polygon.interiors]


def compile_polygon(polygon: BaseGeometry) -> CompiledPolygon:
    """Edge arrays (and, for large polygons, the candidate grid) of an oriented polygon."""
    exact_parts: list[FloatArray] = []
    normal_parts: list[FloatArray] = []
    for part in shapely.get_parts(polygon):
        for ring_geom in rings_of(part):
            ring = np.asarray(shapely.get_coordinates(ring_geom), dtype=np.float64)
            keep = np.concatenate(([True], np.any(np.diff(ring, axis=0) != 0.0, axis=1)))
            ring = ring[keep]
            if not np.array_equal(ring[0], ring[-1]):
                ring = np.vstack((ring, ring[:1]))
            start = ring[:-1]
            direction = ring[1:] - start
            length = np.hypot(direction[:, 0], direction[:, 1])
            outward = np.column_stack((direction[:, 1], -direction[:, 0])) / length[:, None]
            at_start = outward + np.roll(outward, 1, axis=0)
            at_end = outward + np.roll(outward, -1, axis=0)
            exact_parts.append(np.hstack((start, direction)))
            normal_parts.append(np.hstack((at_start, at_end)))
    exact = np.ascontiguousarray(np.concatenate(exact_parts))
    normals = np.concatenate(normal_parts).astype(np.float32)
    select = np.zeros((exact.shape[0], SELECT_WIDTH), dtype=np.float32)
    select[:, 0:4] = exact
    select[:, 4] = 1.0 / np.einsum("ij,ij->i", exact[:, 2:4], exact[:, 2:4])
    n = exact.shape[0]
    if n <= GRID_MIN_EDGES:
        return CompiledPolygon(
            select,
            exact,
            normals,
            (0.0,) * GRID_PARAMS,
            np.array([0, n], dtype=np.int32),
            np.arange(n, dtype=np.int32),
        )
    grid, cell_start, cand = _grid(exact)
    return CompiledPolygon(select, exact, normals, grid, cell_start, cand)


def _segment_distance(px: FloatArray, py: FloatArray, edges: FloatArray) -> FloatArray:
    """Distance from points (column vectors) to segments (rows of ``edges``), as a matrix."""
    dx = px - edges[:, 0]
    dy = py - edges[:, 1]
    inv_len2 = 1.0 / (edges[:, 2] * edges[:, 2] + edges[:, 3] * edges[:, 3])
    u = np.clip((dx * edges[:, 2] + dy * edges[:, 3]) * inv_len2, 0.0, 1.0)
    rx = dx - u * edges[:, 2]
    ry = dy - u * edges[:, 3]
    return np.asarray(np.sqrt(rx * rx + ry * ry), dtype=np.float64)


def _near_edges(
    px: FloatArray, py: FloatArray, reach: float, edges: FloatArray, among: IntArray
) -> tuple[IntArray, IntArray]:
    """(point, edge) pairs such that the edge is within the point's nearest distance plus
    ``reach``, among the edges ``among``; edge numbers are those of ``edges``."""
    d = _segment_distance(px[:, None], py[:, None], edges[among])
    # 1 mm of slack keeps the lists exact through the kernel's float32 arithmetic.
    limit = d.min(axis=1, keepdims=True) + reach + 1e-3
    points, cols = np.nonzero(d <= limit)
    return points, among[cols]


def _cell_lists(
    edges: FloatArray, lo: FloatArray, cell: float, nx: int, ny: int
) -> tuple[IntArray, npt.NDArray[np.int32]]:
    """Candidate counts and concatenated candidate lists of the cells of one uniform grid:
    compiled (geofence._grid_kernel) when Numba is there, else with NumPy; the same lists."""
    compiled = compiled_cell_lists()
    if compiled is None:
        return _cell_lists_numpy(edges, lo, cell, nx, ny)
    counts, lists = compiled(
        np.ascontiguousarray(edges, dtype=np.float64),
        float(lo[0]),
        float(lo[1]),
        float(cell),
        int(nx),
        int(ny),
        COMPILED_LEVELS,
    )
    return counts, lists


def _cell_lists_numpy(
    edges: FloatArray, lo: FloatArray, cell: float, nx: int, ny: int
) -> tuple[IntArray, npt.NDArray[np.int32]]:
    """Candidate counts and concatenated candidate lists of the cells of one uniform grid.

    Two levels, so that a district of hundreds of edges is not measured against every one of
    its thousands of cells: blocks of BLOCK x BLOCK cells get their lists first (the same rule,
    with the block's centre Q and half-diagonal H), then each cell (centre q, half-diagonal h)
    is measured against its block's list only. The lists are the same as measuring against every
    edge: an edge within D_q + 2h of q is within D_Q + 2H of Q, because |Q - q| <= H - h and
    D_q <= D_Q + |Q - q|; and q's nearest edge is among them. 5x faster on a district of 550
    edges (tests/geofence/test_cell_lists.py checks the equality).
    """
    all_edges = np.arange(edges.shape[0], dtype=np.int64)
    bx, by = -(-nx // BLOCK), -(-ny // BLOCK)
    block = cell * BLOCK
    block_x = lo[0] + (np.tile(np.arange(bx), by) + 0.5) * block
    block_y = lo[1] + (np.repeat(np.arange(by), bx) + 0.5) * block
    owner, listed = _near_edges(block_x, block_y, 2.0 * block * np.sqrt(0.5), edges, all_edges)
    starts = np.searchsorted(owner, np.arange(bx * by + 1))
    cells_of: list[IntArray] = []
    edges_of: list[IntArray] = []
    for b in range(bx * by):
        ix = (b % bx) * BLOCK + np.arange(BLOCK)
        iy = (b // bx) * BLOCK + np.arange(BLOCK)
        ix, iy = ix[ix < nx], iy[iy < ny]
        cx = np.tile(ix, iy.size)
        cy = np.repeat(iy, ix.size)
        points, near = _near_edges(
            lo[0] + (cx + 0.5) * cell,
            lo[1] + (cy + 0.5) * cell,
            2.0 * cell * np.sqrt(0.5),
            edges,
            listed[starts[b] : starts[b + 1]],
        )
        cells_of.append((cy * nx + cx)[points])
        edges_of.append(near)
    cells = np.concatenate(cells_of)
    cand = np.concatenate(edges_of)
    order = np.lexsort((cand, cells))
    counts = np.bincount(cells, minlength=nx * ny).astype(np.int64)
    return counts, cand[order].astype(np.int32)


def _grid(
    edges: FloatArray,
) -> tuple[tuple[float, ...], npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """A fine grid over the polygon and a coarse one around it, for the far field."""
    ends = edges[:, 0:2] + edges[:, 2:4]
    lo = np.minimum(edges[:, 0:2].min(axis=0), ends.min(axis=0))
    hi = np.maximum(edges[:, 0:2].max(axis=0), ends.max(axis=0))
    size = float((hi - lo).max())
    params: list[float] = []
    all_counts: list[IntArray] = []
    all_lists: list[npt.NDArray[np.int32]] = []
    for margin, per_axis in (
        (max(0.1 * size, 500.0), GRID_MAX_CELLS_PER_AXIS),
        (max(size, FAR_FIELD_M), FAR_CELLS_PER_AXIS),
    ):
        glo = lo - margin
        ghi = hi + margin
        cell = max(float((ghi - glo).max()) / per_axis, GRID_MIN_CELL_M)
        nx = int(np.ceil((ghi[0] - glo[0]) / cell))
        ny = int(np.ceil((ghi[1] - glo[1]) / cell))
        counts, lists = _cell_lists(edges, glo, cell, nx, ny)
        params.extend((float(glo[0]), float(glo[1]), 1.0 / cell, float(nx), float(ny)))
        all_counts.append(counts)
        all_lists.append(lists)
    n = edges.shape[0]
    counts = np.concatenate([*all_counts, [n]])
    cand = np.concatenate([*all_lists, np.arange(n, dtype=np.int32)])
    cell_start = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=cell_start[1:])
    return tuple(params), cell_start.astype(np.int32), cand


def cell_of(px: FloatArray, py: FloatArray, grid: FloatArray) -> IntArray:
    """Cell number of each point in its polygon's grids (one GRID_PARAMS row per point): the fine
    grid first, then the far-field grid, then the last cell, which lists every edge."""
    fine_n = grid[:, 3] * grid[:, 4]
    ix = np.floor((px - grid[:, 0]) * grid[:, 2])
    iy = np.floor((py - grid[:, 1]) * grid[:, 2])
    jx = np.floor((px - grid[:, 5]) * grid[:, 7])
    jy = np.floor((py - grid[:, 6]) * grid[:, 7])
    in_fine = (ix >= 0) & (ix < grid[:, 3]) & (iy >= 0) & (iy < grid[:, 4])
    in_far = (jx >= 0) & (jx < grid[:, 8]) & (jy >= 0) & (jy < grid[:, 9])
    far_n = grid[:, 8] * grid[:, 9]
    cell = np.where(
        in_fine,
        iy * grid[:, 3] + ix,
        np.where(in_far, fine_n + jy * grid[:, 8] + jx, fine_n + far_n),
    )
    return cell.astype(np.int64)


def select_nearest(
    px: npt.NDArray[np.float32],
    py: npt.NDArray[np.float32],
    select: npt.NDArray[np.float32],
    segment_starts: IntArray,
) -> IntArray:
    """Row of the (nearly) nearest edge in each segment of point/edge rows, one segment per
    (point, polygon) pair. ``select`` holds the gathered float32 edge records, row-aligned with
    ``px``/``py``; returns absolute row numbers."""
    dx = px - select[:, 0]
    dy = py - select[:, 1]
    ex = select[:, 2]
    ey = select[:, 3]
    t = dx * ex
    t += dy * ey
    t *= select[:, 4]
    np.clip(t, 0.0, 1.0, out=t)
    dx -= t * ex
    dy -= t * ey
    dx *= dx
    dy *= dy
    dx += dy
    # Squared distance in the high half, row number in the low half: one minimum finds both.
    key = dx.view(np.uint32).astype(np.uint64)
    key <<= np.uint64(32)
    key |= np.arange(key.size, dtype=np.uint64)
    best = np.minimum.reduceat(key, segment_starts)
    return (best & np.uint64(0xFFFFFFFF)).astype(np.int64)


def signed_distance(
    px: FloatArray,
    py: FloatArray,
    exact: FloatArray,
    normals: npt.NDArray[np.float32],
) -> FloatArray:
    """Signed distance (negative inside) from each point to its own edge, with the side rule of
    the module docstring."""
    dx = px - exact[:, 0]
    dy = py - exact[:, 1]
    ex = exact[:, 2]
    ey = exact[:, 3]
    t = (dx * ex + dy * ey) / (ex * ex + ey * ey)
    u = np.clip(t, 0.0, 1.0)
    rx = dx - u * ex
    ry = dy - u * ey
    distance = np.sqrt(rx * rx + ry * ry)
    outside = ex * dy - ey * dx < 0.0
    at_start = t <= 0.0
    at_end = t >= 1.0
    if at_start.any() or at_end.any():
        vx = np.where(at_end, exact[:, 0] + ex, exact[:, 0])
        vy = np.where(at_end, exact[:, 1] + ey, exact[:, 1])
        nx = np.where(at_end, normals[:, 2], normals[:, 0])
        ny = np.where(at_end, normals[:, 3], normals[:, 1])
        vertex_outside = (px - vx) * nx + (py - vy) * ny > 0.0
        outside = np.where(at_start | at_end, vertex_outside, outside)
    return np.where(outside, distance, -distance)


def polygon_signed_distance(
    px: FloatArray,
    py: FloatArray,
    compiled: CompiledPolygon,
) -> FloatArray:
    """All points against one compiled polygon; for tests and the build, not the hot path."""
    grid = np.broadcast_to(np.asarray(compiled.grid, dtype=np.float64), (px.size, GRID_PARAMS))
    cell = cell_of(px, py, grid)
    first = compiled.cell_start[cell].astype(np.int64)
    count = compiled.cell_start[cell + 1].astype(np.int64) - first
    starts = np.cumsum(count) - count
    rows = np.repeat(first - starts, count) + np.arange(int(count.sum()))
    edge = compiled.cand[rows].astype(np.int64)
    records = np.take(compiled.select, edge, axis=0)
    winner = edge[
        select_nearest(
            np.repeat(px, count).astype(np.float32),
            np.repeat(py, count).astype(np.float32),
            records,
            starts,
        )
    ]
    return signed_distance(px, py, compiled.exact[winner], compiled.normals[winner])


def compile_small_polygons(polygons: npt.NDArray[np.object_]) -> list[CompiledPolygon | None]:
    """compile_polygon for many oriented single-ring polygons at once, element by element the same
    arithmetic on concatenated edge arrays; None for a polygon it does not take (holes, parts,
    repeated vertices, more than GRID_MIN_EDGES edges): call compile_polygon for those. Taken
    SMALL_BATCH at a time, for the reason zones.check_small_polygons gives."""
    out: list[CompiledPolygon | None] = []
    for first in range(0, len(polygons), SMALL_BATCH):
        out.extend(_compile_small_polygons(polygons[first : first + SMALL_BATCH]))
    return out


def _compile_small_polygons(polygons: npt.NDArray[np.object_]) -> list[CompiledPolygon | None]:
    n_polygons = len(polygons)
    ok = (shapely.get_type_id(polygons) == shapely.GeometryType.POLYGON) & (
        shapely.get_num_interior_rings(polygons) == 0
    )
    coords, owner_raw = shapely.get_coordinates(
        shapely.get_exterior_ring(polygons), return_index=True
    )
    ring = np.ascontiguousarray(coords, dtype=np.float64)
    owner = np.asarray(owner_raw, dtype=np.int64)
    count = np.bincount(owner, minlength=n_polygons)
    start = np.zeros(n_polygons + 1, dtype=np.int64)
    np.cumsum(count, out=start[1:])
    if n_polygons == 0 or (count < 4).any():
        return [None] * n_polygons
    last = start[1:] - 1
    ok &= count - 1 <= GRID_MIN_EDGES
    # Closed rings without repeated consecutive vertices: compile_polygon keeps every vertex.
    ok &= (ring[start[:-1]] == ring[last]).all(axis=1)
    moved = np.any(np.diff(ring, axis=0) != 0.0, axis=1)
    same = np.ones(moved.size, dtype=np.bool_)
    same[last[:-1]] = False
    repeated = np.bincount(owner[:-1][same & ~moved], minlength=n_polygons)
    ok &= repeated == 0
    # Edges: every position but the last of its ring starts one.
    is_start = np.ones(ring.shape[0], dtype=np.bool_)
    is_start[last] = False
    edge_rows = np.flatnonzero(is_start)
    edges = count - 1
    edge_start = np.zeros(n_polygons + 1, dtype=np.int64)
    np.cumsum(edges, out=edge_start[1:])
    startxy = ring[edge_rows]
    direction = ring[edge_rows + 1] - startxy
    length = np.hypot(direction[:, 0], direction[:, 1])
    outward = np.column_stack((direction[:, 1], -direction[:, 0])) / length[:, None]
    edge_owner = owner[edge_rows]
    position = np.arange(edge_rows.size) - edge_start[edge_owner]
    n_of = edges[edge_owner]
    base = edge_start[edge_owner]
    previous = base + (position - 1) % n_of
    following = base + (position + 1) % n_of
    at_start = outward + outward[previous]
    at_end = outward + outward[following]
    exact = np.ascontiguousarray(np.hstack((startxy, direction)))
    normals = np.hstack((at_start, at_end)).astype(np.float32)
    select = np.zeros((exact.shape[0], SELECT_WIDTH), dtype=np.float32)
    select[:, 0:4] = exact
    select[:, 4] = 1.0 / np.einsum("ij,ij->i", exact[:, 2:4], exact[:, 2:4])
    no_grid = (0.0,) * GRID_PARAMS
    out: list[CompiledPolygon | None] = []
    for j, (a, b) in enumerate(zip(edge_start[:-1].tolist(), edge_start[1:].tolist(), strict=True)):
        if not ok[j]:
            out.append(None)
            continue
        n = b - a
        out.append(
            CompiledPolygon(
                select[a:b],
                exact[a:b],
                normals[a:b],
                no_grid,
                np.array([0, n], dtype=np.int32),
                np.arange(n, dtype=np.int32),
            )
        )
    return out
