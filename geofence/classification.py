"""Fixes x zones -> inside / outside / uncertain, warning band, signed distance, schedule.

The accuracy rule of the contract, with ``d`` the signed distance from the fix to the zone's
boundary (negative inside) and ``acc`` its 68 % accuracy radius:

* INSIDE when the accuracy circle lies wholly inside: ``d < -acc``;
* OUTSIDE when it lies wholly outside: ``d > acc``;
* UNCERTAIN otherwise (the circle crosses the boundary, or touches it).

The warning band of an exclusion or victim zone with ``buffer_m = b`` uses the same confidence:
a fix is in the band when it is not INSIDE and its accuracy circle lies wholly within ``b`` of the
zone, ``d + acc < b``. A fix that only might be within the band is not in it; one that might be
inside the zone is UNCERTAIN for the zone and, if the band holds it, in the band.

Victim zones are circles around the victim's latest fix. The distance between two uncertain
positions is uncertain by both accuracies, so a victim pair uses ``acc + victim_acc``. A victim
position older than ``max_age_s`` at the fix's own time (or newer by as much: a late offender fix
must not be compared with where the victim went later) is stale: the pair is UNCERTAIN, never in
the band, its distance NaN, and ``victim_stale`` says why. A victim zone without a position is
stale too.

The work is vectorized over the whole batch, in chunks that fit the CPU caches: the (fix, zone)
pairs come from each subject's zone list with one gather, circles are measured with the chord rule
of geofence._projection, polygons with the edge kernel of geofence._edges (compiled with Numba
by geofence._kernel when Numba is installed, bit for bit the same results), schedules with one
searchsorted. There is no Python loop over fixes or zones; the loops that remain are over chunks,
over time zones present in a chunk, and over the handful of fixes whose accuracy circle is wider
than the keep-out screen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely

from tagwatch.geofence._edges import (
    SELECT_RECORD,
    SELECT_WIDTH,
    cell_of,
    select_nearest,
    signed_distance,
)
from tagwatch.geofence._kernel import circle_kernel, polygon_kernel
from tagwatch.geofence._layout import (
    CIRCLE,
    EVERYONE,
    KEEPOUT_ALLOWANCE_M,
    POLYGON,
    PREFILTER_CELLS_PER_DEGREE,
    VICTIM_CIRCLE,
    prefilter_keys,
    reach_box_arrays,
)
from tagwatch.geofence._projection import chord_distance, ecef, mean_radius, to_frame
from tagwatch.geofence.batch import (
    INSIDE,
    OUTSIDE,
    UNCERTAIN,
    Classification,
    FixBatch,
    VictimPositions,
)
from tagwatch.geofence.schedule import schedule_clock
from tagwatch.geofence.snapshot import IndexSnapshot

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Int8Array = npt.NDArray[np.int8]


_EMPTY_I64 = np.zeros(0, dtype=np.int64)

CHUNK_FIXES = 65_536  # a batch of up to 65,536 fixes is one chunk (docs/geofence.md)
SORT_MIN_FIXES = 4_096  # smaller batches are measured in arrival order
POLYGON_BLOCK = 2_048  # (pair, edge) rows of a block stay in the CPU cache


@dataclass(frozen=True, slots=True)
class _Victims:
    row_of_slot: IntArray
    x: FloatArray
    y: FloatArray
    z: FloatArray
    half_inv_r: FloatArray
    time: FloatArray
    acc: FloatArray
    max_age: FloatArray


def stable_order(key: IntArray) -> IntArray:
    """``np.argsort(key, kind="stable")``, sorted 16 bits at a time. NumPy sorts keys of 16 bits
    or less by radix and wider ones by merge sort (timsort): for a batch of 65,536 fixes over
    100,000 subjects that was 4.8 ms, a tenth of classifying it; two radix passes take 0.7 ms.
    Keys outside 0..2**32 - 1 take NumPy's sort."""
    if key.size == 0:
        return np.zeros(0, dtype=np.int64)
    top = int(key.max())
    if int(key.min()) < 0 or top >= 1 << 32:
        return np.argsort(key, kind="stable")
    order = np.argsort((key & 0xFFFF).astype(np.uint16), kind="stable")
    if top < 1 << 16:
        return order
    high = (key[order] >> 16).astype(np.uint16)
    return order[np.argsort(high, kind="stable")]


def subject_order(rows: IntArray) -> IntArray:
    """The stable order of fixes by subject row, unknown subjects (row -1) first."""
    return stable_order(rows + 1)


def _victims(index: IndexSnapshot, victims: VictimPositions | None) -> _Victims | None:
    if victims is None or victims.zone_id.size == 0:
        return None
    geom = index.zones["geom"]
    order = np.argsort(victims.time, kind="stable")  # the latest position of a zone wins
    slots = np.array(
        [index.slot_of.get(int(z), -1) for z in victims.zone_id[order]], dtype=np.int64
    )
    valid = slots >= 0
    valid[valid] = geom[slots[valid]] == VICTIM_CIRCLE
    row_of_slot = np.full(index.zone_capacity, -1, dtype=np.int64)
    row_of_slot[slots[valid]] = order[valid]
    x, y, z = ecef(victims.lon, victims.lat)
    assert isinstance(victims.max_age_s, np.ndarray)
    return _Victims(
        row_of_slot,
        x,
        y,
        z,
        0.5 / mean_radius(victims.lat),
        victims.time,
        victims.acc,
        victims.max_age_s,
    )


def classify(
    index: IndexSnapshot,
    fixes: FixBatch,
    victims: VictimPositions | None = None,
    *,
    reach_m: float = 0.0,
) -> Classification:
    """Classify a batch of fixes against every zone that applies to each fix's subject.

    ``victims`` carries the victims' latest positions for victim zones; ``reach_m`` widens the
    distance within which global and group exclusion zones are reported (for display). Fixes of
    subjects the index does not know get no rows; their ids are in ``unknown_subject_ids``.
    """
    n = len(fixes)
    rows = index.subject_rows(fixes.subject_id)
    unknown = np.unique(fixes.subject_id[rows < 0]) if (rows < 0).any() else _EMPTY_I64
    context = _Context(index, _victims(index, victims), float(reach_m))
    # Fixes are measured in subject-row order: a subject's list, zones, polygons and edges were
    # stored side by side when it was registered, so the index's tables are then read forwards
    # instead of at random; the rows are put back in fix order at the end.
    order = subject_order(rows) if n > SORT_MIN_FIXES else None
    lon, lat, acc, when = fixes.lon, fixes.lat, fixes.acc, fixes.time
    if order is not None:
        lon, lat, acc, when, rows = lon[order], lat[order], acc[order], when[order], rows[order]
    measured = [
        context.chunk(lon, lat, acc, when, rows, start, min(start + CHUNK_FIXES, n))
        for start in range(0, n, CHUNK_FIXES)
    ]
    pieces = [columns for columns, _ in measured] or [context.empty()]
    names = (
        "fix_index",
        "zone_id",
        "kind",
        "state",
        "in_band",
        "distance_m",
        "active",
        "victim_stale",
    )
    columns = {
        name: pieces[0][name] if len(pieces) == 1 else np.concatenate([p[name] for p in pieces])
        for name in names
    }
    # Each chunk's rows in output order (its keep-out rows merged among its subject-list rows),
    # as positions into the concatenated rows: the merge and putting the fixes back in order are
    # then one gather per column instead of a copy each.
    source: IntArray | None = None
    if any(merged is not None for _, merged in measured):
        sources: list[IntArray] = []
        offset = 0
        for piece, merged in measured:
            size = int(piece["fix_index"].size)
            sources.append(np.arange(offset, offset + size) if merged is None else merged + offset)
            offset += size
        source = np.concatenate(sources)
    if order is not None:
        fix_index = np.asarray(columns["fix_index"], dtype=np.int64)
        position = fix_index if source is None else fix_index[source]
        rows_back, per_fix = _unsort_rows(position, order, n)
        source = rows_back if source is None else source[rows_back]
        columns["fix_index"] = np.repeat(np.arange(n, dtype=np.int64), per_fix)
    elif source is not None:
        columns["fix_index"] = columns["fix_index"][source]
    if source is not None:
        for name in names[1:]:
            columns[name] = columns[name][source]
    return Classification(**columns, unknown_subject_ids=unknown)  # type: ignore[arg-type]


class _Context:
    """Per-batch views of the index, so each chunk reads plain arrays."""

    def __init__(self, index: IndexSnapshot, victims: _Victims | None, reach_m: float) -> None:
        self.index = index
        self.victims = victims
        self.reach_m = reach_m
        zones = index.zones
        self.z_id = zones["zone_id"]
        self.z_kind = zones["kind"]
        self.z_geom = zones["geom"]
        self.z_buffer = zones["buffer"]
        self.z_radius = zones["radius"]
        self.z_circle = zones["circle"]
        self.z_shape = zones["shape"]
        self.z_key = zones["sort_key"]
        self.z_group = zones["group"]
        shapes = index.shapes
        self.s_frame = shapes["frame"]
        self.s_grid = shapes["grid"]
        self.s_edge_base = shapes["edge_base"]
        self.s_cand_base = shapes["cand_base"]
        self.s_cell_base = shapes["cell_base"]
        self.s_n_edges = shapes["n_edges"]
        self.s_gridded = shapes["gridded"]
        self.kernel = polygon_kernel()
        self.circle_kernel = circle_kernel()
        self.select_rows = index.edge_select
        self.select = index.edge_select.view(SELECT_RECORD).reshape(-1)
        self.exact = index.edge_exact
        self.normals = index.edge_normals
        self.cand = index.cand_edge
        self.cells = index.cell_start
        subjects = index.subjects
        self.list_start = subjects["list_start"]
        self.list_len = subjects["list_len"]
        self.sub_tz = subjects["tz"]
        self.lists = index.list_slots
        self.tree = index.keepout_tree
        self.tree_slots = index.keepout_tree_slots
        self.cell_keys = index.keepout_cell_keys
        self.cell_start = index.keepout_cell_start
        self.cell_slots = index.keepout_cell_slots
        self.dense = index.keepout_dense
        self.membership = index.membership
        self.schedules = index.schedules
        self.tz_names = index.tz_names

    def empty(self) -> dict[str, npt.NDArray[np.generic]]:
        return {
            "fix_index": _EMPTY_I64,
            "zone_id": _EMPTY_I64,
            "kind": np.zeros(0, dtype=np.int8),
            "state": np.zeros(0, dtype=np.int8),
            "in_band": np.zeros(0, dtype=np.bool_),
            "distance_m": np.zeros(0, dtype=np.float64),
            "active": np.zeros(0, dtype=np.bool_),
            "victim_stale": np.zeros(0, dtype=np.bool_),
        }

    # ------------------------------------------------------------------ one chunk

    def chunk(
        self,
        all_lon: FloatArray,
        all_lat: FloatArray,
        all_acc: FloatArray,
        all_when: FloatArray,
        all_rows: IntArray,
        start: int,
        stop: int,
    ) -> tuple[dict[str, npt.NDArray[np.generic]], IntArray | None]:
        """The chunk's rows: its fixes' subject-list pairs in output order, then the candidate
        keep-out pairs; and, when there are keep-out pairs, the positions of the rows to keep in
        output order (_merge_order), else None (the rows are in output order)."""
        lon = all_lon[start:stop]
        lat = all_lat[start:stop]
        acc = all_acc[start:stop]
        when = all_when[start:stop]
        rows = all_rows[start:stop]
        m = stop - start
        safe = np.maximum(rows, 0)
        count = np.where(rows >= 0, self.list_len[safe], 0)
        own_start = np.cumsum(count) - count
        total = int(own_start[-1] + count[-1]) if m else 0
        pair_fix = np.repeat(np.arange(m, dtype=np.int64), count)
        position = np.repeat(self.list_start[safe] - own_start, count) + np.arange(total)
        slot = self.lists[position]

        g_fix, g_slot = self._keepout_pairs(lon, lat, acc, rows)
        if g_fix.size:
            pair_fix = np.concatenate((pair_fix, g_fix))
            slot = np.concatenate((slot, g_slot))

        x, y, z = ecef(lon, lat)
        distance, stale, extra_acc = self._measure(pair_fix, slot, x, y, z, when)
        pair_acc = acc[pair_fix]
        if extra_acc is not None:
            pair_acc = pair_acc + extra_acc
        state = np.full(slot.size, UNCERTAIN, dtype=np.int8)
        state[distance < -pair_acc] = INSIDE
        state[distance > pair_acc] = OUTSIDE
        buffer = self.z_buffer[slot]
        in_band = (distance + pair_acc < buffer) & (state != INSIDE)
        active = self._active(pair_fix, slot, rows, when)

        columns: dict[str, npt.NDArray[np.generic]] = {
            "fix_index": pair_fix + start,
            "zone_id": self.z_id[slot],
            "kind": self.z_kind[slot],
            "state": state,
            "in_band": in_band,
            "distance_m": distance,
            "active": active,
            "victim_stale": stale,
        }
        if g_fix.size == 0:
            return columns, None
        keep_global = distance[total:] <= pair_acc[total:] + buffer[total:] + self.reach_m
        return columns, _merge_order(
            total, keep_global, own_start, count, self.z_key[slot], pair_fix
        )

    # ------------------------------------------------------------------ pairs with keep-out zones

    def _keepout_pairs(
        self, lon: FloatArray, lat: FloatArray, acc: FloatArray, rows: IntArray
    ) -> tuple[IntArray, IntArray]:
        """Candidate (fix, global exclusion zone) pairs. An ordinary fix looks up the zones listed
        for its grid cell (a cell lists every zone whose reach box touches it); a fix whose
        accuracy circle is wider than the cells' allowance goes through an STRtree bulk query
        with its own box."""
        if self.cell_keys.size == 0:
            return _EMPTY_I64, _EMPTY_I64
        fixes_parts: list[IntArray] = []
        slots_parts: list[IntArray] = []
        narrow = acc + self.reach_m <= KEEPOUT_ALLOWANCE_M
        if self.dense is not None:
            r0, c0, n_rows, n_cols, table = self.dense
            per = PREFILTER_CELLS_PER_DEGREE
            row = np.clip(np.floor((lat + 90.0) * per), 0, 180 * per - 1).astype(np.int64)
            col = np.clip(np.floor((lon + 180.0) * per), 0, 360 * per - 1).astype(np.int64)
            row -= r0
            col -= c0
            inside = (row >= 0) & (row < n_rows) & (col >= 0) & (col < n_cols)
            at = np.where(inside, row * n_cols + col, 0)
            pos = table[at].astype(np.int64)
            hit = np.flatnonzero(inside & (pos >= 0) & narrow)
        else:
            keys = prefilter_keys(lon, lat)
            pos = np.minimum(np.searchsorted(self.cell_keys, keys), self.cell_keys.size - 1)
            hit = np.flatnonzero((self.cell_keys[pos] == keys) & narrow)
        if hit.size:
            first = self.cell_start[pos[hit]]
            count = self.cell_start[pos[hit] + 1] - first
            starts = np.cumsum(count) - count
            total = int(starts[-1] + count[-1])
            fixes_parts.append(np.repeat(hit, count))
            slots_parts.append(self.cell_slots[np.repeat(first - starts, count) + np.arange(total)])
        wide = np.flatnonzero(~narrow)
        if wide.size and self.tree is not None:
            owner, boxes = reach_box_arrays(
                lon[wide], lat[wide], lon[wide], lat[wide], acc[wide] + self.reach_m
            )
            hits = self.tree.query(shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]))
            fix = wide[owner[hits[0]]]
            slot = self.tree_slots[hits[1]]
            order = np.lexsort((slot, fix))
            fix, slot = fix[order], slot[order]
            if fix.size > 1:  # a zone or a fix split at the antimeridian has two boxes
                distinct = np.concatenate(([True], (np.diff(fix) != 0) | (np.diff(slot) != 0)))
                fix, slot = fix[distinct], slot[distinct]
            fixes_parts.append(fix)
            slots_parts.append(slot)
        if not fixes_parts:
            return _EMPTY_I64, _EMPTY_I64
        fix = np.concatenate(fixes_parts)
        slot = np.concatenate(slots_parts)
        group = self.z_group[slot]
        applies = rows[fix] >= 0
        grouped = np.flatnonzero(applies & (group != EVERYONE))
        if grouped.size:
            member_keys = (rows[fix[grouped]] << 20) | group[grouped]
            if self.membership.size:
                at = np.minimum(
                    np.searchsorted(self.membership, member_keys), self.membership.size - 1
                )
                is_member = self.membership[at] == member_keys
            else:
                is_member = np.zeros(grouped.size, dtype=np.bool_)
            applies[grouped[~is_member]] = False
        fix = fix[applies]
        slot = slot[applies]
        if wide.size and fix.size > 1:  # cell lists are in order already; wide hits are not
            order = np.lexsort((self.z_key[slot], fix))
            fix = fix[order]
            slot = slot[order]
        return fix, slot

    # ------------------------------------------------------------------ geometry

    def _measure(
        self,
        pair_fix: IntArray,
        slot: IntArray,
        x: FloatArray,
        y: FloatArray,
        z: FloatArray,
        when: FloatArray,
    ) -> tuple[FloatArray, BoolArray, FloatArray | None]:
        geom = self.z_geom[slot]
        distance = np.empty(slot.size, dtype=np.float64)
        stale = np.zeros(slot.size, dtype=np.bool_)
        extra_acc: FloatArray | None = None

        circles = np.flatnonzero(geom == CIRCLE)
        if circles.size and self.circle_kernel is not None:
            distance[circles] = self.circle_kernel(
                circles, pair_fix, slot, x, y, z, self.z_circle, self.z_radius
            )
        elif circles.size:
            s = slot[circles]
            f = pair_fix[circles]
            centre = self.z_circle[s]
            arc = chord_distance(
                x[f], y[f], z[f], centre[:, 0], centre[:, 1], centre[:, 2], centre[:, 3]
            )
            distance[circles] = arc - self.z_radius[s]

        polygons = np.flatnonzero(geom == POLYGON)
        if polygons.size:
            distance[polygons] = self._polygons(pair_fix[polygons], slot[polygons], x, y, z)

        victims = np.flatnonzero(geom == VICTIM_CIRCLE)
        if victims.size:
            extra_acc = np.zeros(slot.size, dtype=np.float64)
            self._victim_pairs(victims, pair_fix, slot, x, y, z, when, distance, stale, extra_acc)
        return distance, stale, extra_acc

    def _polygons(
        self, f: IntArray, s: IntArray, x: FloatArray, y: FloatArray, z: FloatArray
    ) -> FloatArray:
        """With the compiled kernel (geofence._kernel): every pair in one call, sorted by polygon.
        Without it, the NumPy kernel: small polygons (every edge is a candidate) and gridded ones
        (the candidates of the fix's cell) in separate blocks, since the small ones need neither
        the cell nor the lists."""
        out = np.empty(f.size, dtype=np.float64)
        shape = self.z_shape[s]
        if self.kernel is not None:
            # In polygon order: a district's grid and lists, and a subject's small polygons (stored
            # side by side), are then read while they are still in the cache. The pairs come in
            # subject-row order, so a subject's own polygons are already in runs: a stable sort
            # (timsort, which merges runs) cost about half of a quicksort here, and two radix
            # passes (stable_order) less again.
            # The kernel reads each pair's fix and frame itself and projects it (bit for bit as
            # to_frame does, with NumPy's arcsine), and writes the distances back in pair order.
            self.kernel(
                f,
                shape,
                stable_order(shape),
                x,
                y,
                z,
                self.s_frame,
                self.s_grid,
                self.s_gridded,
                self.s_cell_base,
                self.s_cand_base,
                self.s_edge_base,
                self.s_n_edges,
                self.cells,
                self.cand,
                self.select_rows,
                self.exact,
                self.normals,
                out,
            )
            return out
        gridded = self.s_gridded[shape].view(np.bool_)
        parts: list[tuple[IntArray | None, bool]]
        if not gridded.any() or gridded.all():
            parts = [(None, bool(gridded.size and gridded[0]))]
        else:
            parts = [(np.flatnonzero(~gridded), False), (np.flatnonzero(gridded), True)]
        for which, grid in parts:
            ff = f if which is None else f[which]
            sh = shape if which is None else shape[which]
            part = np.empty(ff.size, dtype=np.float64)
            for a in range(0, ff.size, POLYGON_BLOCK):
                b = min(a + POLYGON_BLOCK, ff.size)
                part[a:b] = self._polygon_block(ff[a:b], sh[a:b], x, y, z, grid)
            if which is None:
                out = part
            else:
                out[which] = part
        return out

    def _polygon_block(
        self,
        f: IntArray,
        shape: IntArray,
        x: FloatArray,
        y: FloatArray,
        z: FloatArray,
        grid: bool,
    ) -> FloatArray:
        px, py = to_frame(x[f], y[f], z[f], self.s_frame[shape])
        if grid:
            at = self.s_cell_base[shape] + cell_of(px, py, self.s_grid[shape])
            first = self.cells[at].astype(np.int64)
            count = self.cells[at + 1].astype(np.int64) - first
            starts = np.cumsum(count) - count
            total = int(starts[-1] + count[-1])
            rows = np.repeat(self.s_cand_base[shape] + first - starts, count) + np.arange(total)
            edge = self.cand[rows] + np.repeat(self.s_edge_base[shape], count)
        else:
            # A polygon without grid lists all its edges, in order, for its only cell.
            count = self.s_n_edges[shape]
            starts = np.cumsum(count) - count
            total = int(starts[-1] + count[-1])
            edge = np.repeat(self.s_edge_base[shape] - starts, count) + np.arange(total)
        records = np.take(self.select, edge).view(np.float32).reshape(-1, SELECT_WIDTH)
        winner = edge[
            select_nearest(
                np.repeat(px.astype(np.float32), count),
                np.repeat(py.astype(np.float32), count),
                records,
                starts,
            )
        ]
        return signed_distance(
            px, py, np.take(self.exact, winner, axis=0), np.take(self.normals, winner, axis=0)
        )

    def _victim_pairs(
        self,
        victims: IntArray,
        pair_fix: IntArray,
        slot: IntArray,
        x: FloatArray,
        y: FloatArray,
        z: FloatArray,
        when: FloatArray,
        distance: FloatArray,
        stale: BoolArray,
        extra_acc: FloatArray,
    ) -> None:
        distance[victims] = np.nan
        stale[victims] = True
        v = self.victims
        if v is None:
            return
        s = slot[victims]
        f = pair_fix[victims]
        row = v.row_of_slot[s]
        known = row >= 0
        safe = np.maximum(row, 0)
        fresh = known & (np.abs(when[f] - v.time[safe]) <= v.max_age[safe])
        ok = victims[fresh]
        r = safe[fresh]
        fr = f[fresh]
        arc = chord_distance(x[fr], y[fr], z[fr], v.x[r], v.y[r], v.z[r], v.half_inv_r[r])
        distance[ok] = arc - self.z_radius[s[fresh]]
        stale[ok] = False
        extra_acc[ok] = v.acc[r]

    # ------------------------------------------------------------------ schedules

    def _active(
        self, pair_fix: IntArray, slot: IntArray, rows: IntArray, when: FloatArray
    ) -> BoolArray:
        scheduled = self.schedules.has_schedule(slot)
        if not scheduled.any():
            return np.ones(slot.size, dtype=np.bool_)
        tz = np.where(rows >= 0, self.sub_tz[np.maximum(rows, 0)], 0)
        clock = np.empty(when.size, dtype=np.int64)
        present = np.flatnonzero(np.bincount(tz))
        if present.size == 1:
            clock[:] = schedule_clock(when, self.tz_names[int(present[0])])
        else:
            for code in present.tolist():
                mask = tz == code
                clock[mask] = schedule_clock(when[mask], self.tz_names[code])
        return self.schedules.active_pairs(slot, pair_fix, clock)


def _unsort_rows(position: IntArray, order: IntArray, n: int) -> tuple[IntArray, IntArray]:
    """For rows of fixes measured in ``order`` (``position`` = a row's fix's place in ``order``,
    rows in measured order): the rows in fix order (each fix's rows keeping their order), and the
    number of rows of each fix."""
    count = np.bincount(position, minlength=n)
    first = np.cumsum(count) - count
    where = np.empty(n, dtype=np.int64)
    where[order] = np.arange(n, dtype=np.int64)  # position of each fix in the measured order
    per_fix = count[where]
    out_start = np.cumsum(per_fix) - per_fix
    total = int(position.size)
    rows = np.repeat(first[where] - out_start, per_fix) + np.arange(total)
    return rows, per_fix


def _merge_order(
    own_total: int,
    keep_global: BoolArray,
    own_start: IntArray,
    own_count: IntArray,
    sort_key: IntArray,
    local_fix: IntArray,
) -> IntArray:
    """The rows to keep, in output order: the kept keep-out rows (already in (fix, key) order)
    inserted among the subject-list rows (in (fix, key) order), as positions into the rows."""
    kept = own_total + np.flatnonzero(keep_global)
    if kept.size == 0:
        return np.arange(own_total, dtype=np.int64)
    g_fix = local_fix[kept]
    g_key = sort_key[kept]
    base = own_start[g_fix]
    limit = own_count[g_fix]
    before = np.zeros(kept.size, dtype=np.int64)
    own_key = sort_key[:own_total]
    for j in range(int(limit.max())):
        at = np.minimum(base + j, max(own_total - 1, 0))
        before += (j < limit) & (own_key[at] < g_key)
    target = base + before + np.arange(kept.size)
    size = own_total + kept.size
    source = np.empty(size, dtype=np.int64)
    is_global = np.zeros(size, dtype=np.bool_)
    is_global[target] = True
    source[~is_global] = np.arange(own_total, dtype=np.int64)
    source[target] = kept
    return source
