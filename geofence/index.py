"""The zone index the ingest process keeps in memory: built once, changed one zone at a time.

What it holds, and why that shape:

* a **subject table** (id -> time zone, groups) because schedules run on the subject's clock and
  group zones apply through membership; the caller registers subjects once and then passes only
  subject ids with the fixes;
* for each subject, the **list of zones that always apply to it**, sorted by (kind priority, zone
  id): its own zones, plus the inclusion and curfew zones it gets from its groups or from everyone.
  Those "stay inside" zones must be reported for every fix (being far outside is the violation),
  so they are written into the lists of the subjects they apply to: a fix then finds all its pairs
  with one contiguous read, already in output order;
* **global and group exclusion zones** ("keep out" zones that apply to many subjects: schools,
  airports) in an STRtree of reach boxes; only fixes that come near one are paired with it. A
  coarse grid of the cells those boxes touch screens the batch first, so that Shapely points are
  made only for the few fixes near a global zone;
* **polygons compiled once** into flat edge arrays in their own local frame, shared by every zone
  with the same geometry (a district is stored once however many subjects it confines).

Every change is incremental: a zone is added to or removed from the lists it belongs to and its
polygon's ranges in the edge pools are appended or released (pools compact when garbage outweighs
live data). The STRtree and a few small lookup tables are rebuilt lazily, at the next batch after a
change, in time proportional to the number of global zones, not of all zones.
"""

from __future__ import annotations

import bisect
import dataclasses
import gc
import hashlib
import marshal
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

from tagwatch.geofence._edges import (
    GRID_PARAMS,
    SELECT_WIDTH,
    CompiledPolygon,
    compile_polygon,
    compile_small_polygons,
)
from tagwatch.geofence._layout import (
    _F32,
    _F64,
    _I8,
    _I32,
    _I64,
    CIRCLE,
    EVERYONE,
    KEEPOUT_ALLOWANCE_M,
    KIND_SHIFT,
    POLYGON,
    PREFILTER_CELLS_PER_DEGREE,
    VICTIM_CIRCLE,
    reach_boxes,
)
from tagwatch.geofence._memory import release_free_memory
from tagwatch.geofence._pool import RangePool, SlotTable
from tagwatch.geofence._projection import FRAME_WIDTH, ecef, mean_radius
from tagwatch.geofence.batch import Classification, FixBatch, VictimPositions
from tagwatch.geofence.classification import classify
from tagwatch.geofence.schedule import ScheduleBook, check_timezone
from tagwatch.geofence.snapshot import IndexSnapshot
from tagwatch.geofence.zones import (
    CheckedZone,
    Outline,
    Zone,
    ZoneKind,
    ZoneValidationError,
    check_small_polygons,
    check_zone,
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def _raw_key(zone: Zone, repair: bool) -> bytes:
    """A digest of the zone's geometry as given, to find a district already prepared for
    another subject. The coordinates are serialized with marshal (version 2: no back-references,
    floats as their 8 bytes), which keeps every type and bit (an int from a float, -0.0 from 0.0)
    and costs a fifth of packing the rings through NumPy: formatting 480 floats with repr cost
    half a millisecond per zone, a minute for a national set. Anything marshal refuses is packed
    as float64 arrays, or else formatted with repr."""
    geometry = zone.geometry or {}
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{geometry.get('type')}|{repair}|".encode())
    coordinates = geometry.get("coordinates")
    try:
        digest.update(b"marshal|" + marshal.dumps(coordinates, 2))
        return digest.digest()
    except ValueError:
        pass
    depth = 2 if geometry.get("type") == "MultiPolygon" else 1
    try:
        _pack_rings(coordinates, depth, digest)
    except (TypeError, ValueError):
        digest.update(b"repr|" + repr(coordinates).encode())
    return digest.digest()


# id of a GeoJSON object -> (the object, its raw key), for one upsert_many batch
RawKeys = dict[int, tuple[Any, bytes]]


def _raw_key_of(zone: Zone, repair: bool, seen: RawKeys) -> bytes:
    """_raw_key, computed once per GeoJSON object in a batch. The store decodes a geometry text
    once for all the zones that have it (store.engine_repository: a district is the inclusion
    zone of thousands of subjects), so its copies arrive as one object, and keying it again for
    every copy was an eighth of building the national index. ``seen`` holds the object itself,
    so its id cannot be reused within the batch; the index never changes a zone's GeoJSON."""
    geometry = zone.geometry
    hit = seen.get(id(geometry))
    if hit is not None and hit[0] is geometry:
        return hit[1]
    raw = _raw_key(zone, repair)
    seen[id(geometry)] = (geometry, raw)
    return raw


def _pack_rings(node: Any, depth: int, digest: Any) -> None:
    if depth == 0:
        ring = np.asarray(node)
        if ring.dtype.kind not in "fi":  # strings, booleans, mixtures: let check_zone judge
            raise TypeError("not numbers")
        ring = ring.astype(np.float64)
        digest.update(repr(ring.shape).encode())
        digest.update(ring.tobytes())
        return
    if not isinstance(node, list | tuple):
        raise TypeError("not a list")
    digest.update(b"[%d" % len(node))
    for child in node:
        _pack_rings(child, depth - 1, digest)


# From this many zones (or new polygons) a batch is checked and compiled array-wise.
BULK_MIN_ZONES = 16
TRIM_ZONES = 10_000  # after an upsert_many this large, free memory goes back (geofence._memory)
GC_PAUSE_ZONES = 1_000  # upsert_many pauses the cyclic garbage collector for this many zones
DENSE_CELLS_MAX = 4_000_000  # 16 MB of int32 at most for the dense keep-out cell table
LOOKUP_TABLE_SPREAD = 32  # a direct subject lookup table while ids span <= 32 per subject


def _distinct_runs(batch: list[Zone]) -> Iterator[range]:
    """The batch cut before each zone whose id came earlier in the same piece (as ranges of
    positions): within a piece no zone replaces another, so adding the pieces in turn is adding
    the zones in turn. A zone without a valid id is refused whatever comes with it, and cuts
    nothing."""
    first = 0
    ids: set[int] = set()
    for i, zone in enumerate(batch):
        zone_id = zone.zone_id
        valid = isinstance(zone_id, int) and not isinstance(zone_id, bool)
        if valid and zone_id in ids:
            yield range(first, i)
            first, ids = i, set()
        if valid:
            ids.add(zone_id)
    if first < len(batch):
        yield range(first, len(batch))


def _dense_cells(keys: IntArray) -> tuple[int, int, int, int, npt.NDArray[np.int32]] | None:
    if keys.size == 0:
        return None
    width = 360 * PREFILTER_CELLS_PER_DEGREE
    rows = keys // width
    cols = keys % width
    r0, c0 = int(rows.min()), int(cols.min())
    n_rows = int(rows.max()) - r0 + 1
    n_cols = int(cols.max()) - c0 + 1
    if n_rows * n_cols > DENSE_CELLS_MAX:
        return None
    table = np.full(n_rows * n_cols, -1, dtype=np.int32)
    table[(rows - r0) * n_cols + (cols - c0)] = np.arange(keys.size, dtype=np.int32)
    return r0, c0, n_rows, n_cols, table


def _box_cells(box: tuple[float, ...]) -> list[int]:
    per = PREFILTER_CELLS_PER_DEGREE
    lo_lon, lo_lat, hi_lon, hi_lat = box
    rows = range(
        max(math.floor((lo_lat + 90.0) * per), 0),
        min(math.floor((hi_lat + 90.0) * per), 180 * per - 1) + 1,
    )
    cols = range(
        max(math.floor((lo_lon + 180.0) * per), 0),
        min(math.floor((hi_lon + 180.0) * per), 360 * per - 1) + 1,
    )
    return [r * 360 * per + c for r in rows for c in cols]


class ZoneIndex:
    """All zones and subjects, in the arrays the classifier reads. Not thread-safe: one writer
    (the ingest process applying zone changes between batches)."""

    def __init__(self) -> None:
        self._zones = SlotTable(
            {
                "zone_id": (_I64, (), -1),
                "kind": (_I8, (), -1),
                "geom": (_I8, (), -1),
                "buffer": (_F64, (), 0.0),
                "radius": (_F64, (), 0.0),
                "circle": (_F64, (4,), 0.0),
                "shape": (_I64, (), -1),
                "sort_key": (_I64, (), -1),
                "group": (_I64, (), EVERYONE),
            }
        )
        self._schedules = ScheduleBook()
        self._slot_of: dict[int, int] = {}
        self._zone_at: dict[int, Zone] = {}
        self._listed_in: dict[int, set[int]] = {}  # rows listing each shared (non-subject) zone
        self._repairs: dict[int, tuple[str, ...]] = {}

        self._shapes = SlotTable(
            {
                "frame": (_F64, (FRAME_WIDTH,), 0.0),
                "grid": (_F64, (GRID_PARAMS,), 0.0),
                "edge_base": (_I64, (), 0),
                "n_edges": (_I64, (), 0),
                "cand_base": (_I64, (), 0),
                "n_cand": (_I64, (), 0),
                "cell_base": (_I64, (), 0),
                "n_cells": (_I64, (), 0),
                "refs": (_I64, (), 0),
                "gridded": (_I8, (), 0),
            }
        )
        self._shape_of_key: dict[bytes, int] = {}
        self._outline_of_shape: dict[int, Outline] = {}
        self._raw_cache: dict[bytes, tuple[bytes, tuple[str, ...], Mapping[str, Any]]] = {}
        self._raw_keys_of: dict[bytes, set[bytes]] = {}
        self._edges = RangePool(
            {"select": (_F32, (SELECT_WIDTH,)), "exact": (_F64, (4,)), "normals": (_F32, (4,))}
        )
        self._cands = RangePool({"edge": (_I32, ())})
        self._cells = RangePool({"start": (_I32, ())})

        self._subjects = SlotTable(
            {
                "subject_id": (_I64, (), -1),
                "tz": (_I64, (), 0),
                "list_start": (_I64, (), 0),
                "list_len": (_I64, (), 0),
                "list_cap": (_I64, (), 0),
            }
        )
        self._row_of: dict[int, int] = {}
        self._tz_names: list[str] = ["UTC"]
        self._tz_code: dict[str, int] = {"UTC": 0}
        self._groups_of: dict[int, frozenset[str]] = {}
        self._members: dict[str, set[int]] = {}
        self._group_code: dict[str, int] = {}
        self._lists = RangePool({"slot": (_I64, ())})

        self._always: dict[str | None, set[int]] = {}
        self._keepout_boxes: dict[int, list[tuple[float, ...]]] = {}
        self._keepout_cells: dict[int, set[int]] = {}

        self._lookup_dirty = True
        self._lookup_base = 0
        self._lookup_table: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self._lookup_sorted_ids: IntArray = np.zeros(0, dtype=np.int64)
        self._lookup_sorted_rows: IntArray = np.zeros(0, dtype=np.int64)
        self._keepout_dirty = True
        self._tree: shapely.STRtree | None = None
        self._tree_slots: IntArray = np.zeros(0, dtype=np.int64)
        self._cell_keys: IntArray = np.zeros(0, dtype=np.int64)
        self._cell_start: IntArray = np.zeros(1, dtype=np.int64)
        self._cell_slots: IntArray = np.zeros(0, dtype=np.int64)
        self._cell_dense: tuple[int, int, int, int, npt.NDArray[np.int32]] | None = None
        self._membership_dirty = True
        self._membership: IntArray = np.zeros(0, dtype=np.int64)

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        zones: Iterable[Zone],
        subjects: Iterable[tuple[int, str, Iterable[str]]] = (),
        *,
        repair: bool = False,
    ) -> ZoneIndex:
        """An index from (subject_id, timezone, groups) rows and zones."""
        index = cls()
        for subject_id, timezone, groups in subjects:
            index.set_subject(subject_id, timezone=timezone, groups=groups)
        for outcome in index.upsert_many(zones, repair=repair):
            if isinstance(outcome, ZoneValidationError):
                raise outcome
        return index

    def __getstate__(self) -> dict[str, Any]:
        """What a pickled index carries (a snapshot of ingest's catalogue): everything but the
        keep-out STRtree, a cache that the first batch after loading rebuilds from the boxes
        (in time proportional to the global zones), so that a snapshot depends on no Shapely
        pickle format."""
        state = dict(self.__dict__)
        state["_tree"] = None
        state["_keepout_dirty"] = True
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, zone_id: object) -> bool:
        return zone_id in self._slot_of

    def get(self, zone_id: int) -> Zone:
        return self._zone_at[self._slot_of[zone_id]]

    def zones(self) -> Iterator[Zone]:
        return iter(list(self._zone_at.values()))

    def repairs(self, zone_id: int) -> tuple[str, ...]:
        return self._repairs.get(self._slot_of[zone_id], ())

    @property
    def subject_count(self) -> int:
        return len(self._row_of)

    def nbytes(self) -> int:
        """Bytes held in the index's arrays (not the Python dictionaries beside them)."""
        tables = (self._zones, self._shapes, self._subjects)
        pools = (self._edges, self._cands, self._cells, self._lists)
        return (
            sum(t.nbytes for t in tables)
            + sum(p.nbytes for p in pools)
            + int(self._lookup_table.nbytes + self._membership.nbytes)
            + int(self._cell_keys.nbytes + self._cell_start.nbytes + self._cell_slots.nbytes)
        )

    # ------------------------------------------------------------------ subjects

    def set_subject(
        self, subject_id: int, *, timezone: str = "UTC", groups: Iterable[str] = ()
    ) -> None:
        """Register or update a subject: the time zone its schedules run in and its groups."""
        check_timezone(timezone)
        row = self._ensure_subject(int(subject_id))
        code = self._tz_code.get(timezone)
        if code is None:
            code = len(self._tz_names)
            self._tz_names.append(timezone)
            self._tz_code[timezone] = code
        self._subjects["tz"][row] = code
        new = frozenset(groups)
        old = self._groups_of.get(row, frozenset())
        for group in old - new:
            self._members[group].discard(row)
            for slot in self._always.get(group, ()):
                self._list_remove(row, slot)
                self._listed_in[slot].discard(row)
        for group in new - old:
            self._members.setdefault(group, set()).add(row)
            self._group_code.setdefault(group, len(self._group_code))
            for slot in self._always.get(group, ()):
                self._list_insert(row, slot)
                self._listed_in[slot].add(row)
        self._groups_of[row] = new
        if new != old:
            self._membership_dirty = True

    def remove_subject(self, subject_id: int) -> None:
        """Forget a subject and every zone it owns."""
        row = self._row_of.get(subject_id)
        if row is None:
            return
        owned = [z.zone_id for z in list(self._zone_at.values()) if z.subject_id == subject_id]
        for zone_id in owned:
            self.remove(zone_id)
        self.set_subject(subject_id, groups=())
        for slot in list(self._always.get(None, ())):
            self._list_remove(row, slot)
            self._listed_in[slot].discard(row)
        self._lists.free(int(self._subjects["list_cap"][row]))
        self._groups_of.pop(row, None)
        del self._row_of[subject_id]
        self._subjects.release(row)
        self._lookup_dirty = True

    def _ensure_subject(self, subject_id: int) -> int:
        row = self._row_of.get(subject_id)
        if row is not None:
            return row
        row = self._subjects.take()
        self._row_of[subject_id] = row
        self._subjects["subject_id"][row] = subject_id
        self._subjects["tz"][row] = 0
        self._subjects["list_start"][row] = self._lists.alloc(4)
        self._subjects["list_len"][row] = 0
        self._subjects["list_cap"][row] = 4
        for slot in self._always.get(None, ()):
            self._list_insert(row, slot)
            self._listed_in[slot].add(row)
        self._lookup_dirty = True
        return row

    def _list_insert(self, row: int, slot: int) -> None:
        """Insert ``slot`` in ``row``'s zone list, which is kept in sort-key order. A build adds a
        subject's zones mostly in that order, so the append is the short way (no list read)."""
        subjects = self._subjects.arrays
        start = int(subjects["list_start"][row])
        length = int(subjects["list_len"][row])
        cap = int(subjects["list_cap"][row])
        sort_key = self._zones.arrays["sort_key"]
        key = int(sort_key[slot])
        slots = self._lists.arrays["slot"]
        if length + 1 <= cap and (length == 0 or int(sort_key[slots[start + length - 1]]) < key):
            slots[start + length] = slot
            subjects["list_len"][row] = length + 1
            return
        current = slots[start : start + length].tolist()
        position = bisect.bisect_left(sort_key[current].tolist(), key)
        current.insert(position, slot)
        if length + 1 > cap:
            self._lists.free(cap)
            cap *= 2
            start = self._lists.alloc(cap)
            subjects["list_start"][row] = start
            subjects["list_cap"][row] = cap
            self._maybe_compact_lists()
            start = int(subjects["list_start"][row])
        self._lists.arrays["slot"][start : start + length + 1] = current
        subjects["list_len"][row] = length + 1

    def _list_remove(self, row: int, slot: int) -> None:
        subjects = self._subjects
        start = int(subjects["list_start"][row])
        length = int(subjects["list_len"][row])
        current = self._lists["slot"][start : start + length].tolist()
        if slot not in current:
            return
        current.remove(slot)
        self._lists["slot"][start : start + length - 1] = current
        subjects["list_len"][row] = length - 1

    def _list_insert_many(self, rows: IntArray, slots: IntArray) -> None:
        """_list_insert for many (row, slot) pairs at once: each row's list is merged with its
        new slots in sort-key order, in place where it has room, else moved to a new range with
        its capacity doubled as often as inserting one at a time would have. One sort for all
        the rows instead of a Python call per pair."""
        if rows.size == 0:
            return
        subjects = self._subjects.arrays
        sort_key = self._zones.arrays["sort_key"]
        touched, added = np.unique(rows, return_counts=True)
        start = subjects["list_start"][touched].astype(np.int64)
        length = subjects["list_len"][touched].astype(np.int64)
        cap = subjects["list_cap"][touched].astype(np.int64)
        old_total = int(length.sum())
        old_at = np.repeat(start - (np.cumsum(length) - length), length) + np.arange(old_total)
        everything = np.concatenate((self._lists.arrays["slot"][old_at], slots))
        owner = np.concatenate((np.repeat(touched, length), rows))
        order = np.lexsort((sort_key[everything], owner))
        everything = everything[order]
        new_length = length + added
        grow = new_length > cap
        if grow.any():
            new_cap = np.maximum(cap[grow], 1)
            while (short := new_cap < new_length[grow]).any():
                new_cap = np.where(short, 2 * new_cap, new_cap)
            self._lists.free(int(cap[grow].sum()))
            base = self._lists.alloc(int(new_cap.sum()))
            start[grow] = base + np.cumsum(new_cap) - new_cap
            cap[grow] = new_cap
            subjects["list_start"][touched] = start
            subjects["list_cap"][touched] = cap
        subjects["list_len"][touched] = new_length
        total = int(new_length.sum())
        at = np.repeat(start - (np.cumsum(new_length) - new_length), new_length) + np.arange(total)
        self._lists.arrays["slot"][at] = everything
        self._maybe_compact_lists()

    def _maybe_compact_lists(self) -> None:
        if not self._lists.wants_compaction():
            return
        rows = np.asarray(sorted(self._row_of.values()), dtype=np.int64)
        starts = self._subjects["list_start"][rows].astype(np.int64)
        caps = self._subjects["list_cap"][rows].astype(np.int64)
        self._subjects["list_start"][rows] = self._lists.compact(starts, caps)

    # ------------------------------------------------------------------ zones

    def upsert(self, zone: Zone, *, repair: bool = False) -> tuple[str, ...]:
        """Add a zone or replace the zone with the same id; returns the repairs made (see
        geofence.zones). Raises ZoneValidationError and leaves the index unchanged on a bad zone."""
        outcome = self._upsert_batch([zone], repair)[0]
        if isinstance(outcome, ZoneValidationError):
            raise outcome
        return outcome

    def upsert_many(
        self, zones: Iterable[Zone], *, repair: bool = False
    ) -> list[tuple[str, ...] | ZoneValidationError]:
        """upsert each zone in turn, with the same outcome, but checked, compiled and added in
        bulk: the common small polygons (a house plot, a school: one ring of a few vertices) are
        prepared together in a few array-wise NumPy and Shapely calls, and the zones go into the
        tables, the edge pools and the subjects' lists with array writes, not zone by zone.
        Returns per zone its repairs or, for a bad zone (which leaves the index unchanged), its
        ZoneValidationError."""
        batch = list(zones)
        # A bulk load makes hundreds of thousands of small objects that all survive: the cyclic
        # collector's repeated passes over the growing heap cost 10-15 % of a national build.
        # Paused for a large batch and restored after it; nothing here depends on it.
        pause = len(batch) >= GC_PAUSE_ZONES and gc.isenabled()
        if pause:
            gc.disable()
        try:
            return self._upsert_batch(batch, repair)
        finally:
            if pause:
                gc.enable()
            if len(batch) >= TRIM_ZONES:
                release_free_memory()

    def _upsert_batch(
        self, batch: list[Zone], repair: bool
    ) -> list[tuple[str, ...] | ZoneValidationError]:
        """Every zone is checked first (a bad one changes nothing; a check reads the index only
        as a cache of outlines already prepared), the new polygons are compiled together, then
        the batch is added run by run (_distinct_runs): the zones a run replaces are removed,
        then the whole run is added. Since no zone of a run replaces another, that is upserting
        the zones in turn."""
        ready = self._check_batch(batch, repair)
        compiled = self._compile_batch(ready)
        for run in _distinct_runs(batch):
            good = [c for c in (ready[i] for i in run) if isinstance(c, CheckedZone)]
            for checked in good:
                if checked.zone.zone_id in self._slot_of:
                    self.remove(checked.zone.zone_id)
            self._add_many(good, compiled)
        return [c.repairs if isinstance(c, CheckedZone) else c for c in ready]

    def _check_batch(
        self, batch: list[Zone], repair: bool
    ) -> list[CheckedZone | ZoneValidationError]:
        """check_zone's outcome for every zone: array-wise for the small polygons of a batch of
        BULK_MIN_ZONES or more (below that, a zone edited in the console, one by one is cheaper),
        then _check for the rest."""
        small = check_small_polygons(batch) if len(batch) >= BULK_MIN_ZONES else []
        seen: RawKeys = {}  # GeoJSON objects keyed in this batch (see _raw_key_of)
        pending: dict[bytes, Outline] = {}  # outlines prepared in this batch, not yet added
        ready: list[CheckedZone | ZoneValidationError] = []
        for i, zone in enumerate(batch):
            done = small[i] if small else None
            if done is None:
                try:
                    done = self._check(zone, repair, seen, pending)
                except ZoneValidationError as exc:
                    ready.append(exc)
                    continue
            ready.append(done)
        return ready

    def _compile_batch(
        self, ready: list[CheckedZone | ZoneValidationError]
    ) -> dict[bytes, CompiledPolygon]:
        """The small single-ring polygons of a batch that the index does not have yet, compiled
        together (compile_small_polygons) when there are BULK_MIN_ZONES or more of them, by key;
        _ref_shapes compiles any other new polygon itself (compile_polygon: the same arrays)."""
        fresh: dict[bytes, Outline] = {}
        for checked in ready:
            if isinstance(checked, CheckedZone) and checked.outline is not None:
                key = checked.outline.key
                if key not in self._shape_of_key:
                    fresh.setdefault(key, checked.outline)
        if len(fresh) < BULK_MIN_ZONES:
            return {}
        outlines = list(fresh.values())
        polygons = np.asarray([o.polygon for o in outlines], dtype=object)
        # compile_small_polygons takes single rings only, and hands back all or nothing when
        # given a part-less geometry: MultiPolygons go to compile_polygon.
        single = np.flatnonzero(shapely.get_type_id(polygons) == shapely.GeometryType.POLYGON)
        compiled: dict[bytes, CompiledPolygon] = {}
        for j, c in zip(single.tolist(), compile_small_polygons(polygons[single]), strict=True):
            if c is not None:
                compiled[outlines[j].key] = c
        return compiled

    def remove(self, zone_id: int) -> None:
        slot = self._slot_of.pop(zone_id, None)
        if slot is None:
            return
        zone = self._zone_at.pop(slot)
        if zone.subject_id is not None:
            self._list_remove(self._row_of[zone.subject_id], slot)
        for row in self._listed_in.pop(slot, set()):
            self._list_remove(row, slot)
        if zone.subject_id is None:
            self._always.get(zone.group, set()).discard(slot)
            boxes = self._keepout_boxes.pop(slot, None)
            if boxes is not None:
                for box in boxes:
                    for cell in _box_cells(box):
                        members = self._keepout_cells[cell]
                        members.discard(slot)
                        if not members:
                            del self._keepout_cells[cell]
                self._keepout_dirty = True
        shape = int(self._zones["shape"][slot])
        if shape >= 0:
            self._unref_shape(shape)
        self._repairs.pop(slot, None)
        self._schedules.clear(slot)
        self._zones.release(slot)

    def _check(
        self,
        zone: Zone,
        repair: bool,
        seen: RawKeys,
        pending: dict[bytes, Outline],
    ) -> CheckedZone:
        """Validate, reusing the prepared outline when the same geometry was seen before (a
        district shared by thousands of subjects is parsed and projected once), in the index or
        earlier in the run (``pending``). The zone then keeps the first copy of the GeoJSON
        too: zones read from the database each bring their own, and 100,000 copies of a
        240-vertex district are over a gigabyte."""
        geometry = zone.geometry
        if geometry is None or geometry.get("type") not in ("Polygon", "MultiPolygon"):
            return check_zone(zone, repair=repair)

        def known(key: bytes) -> Outline | None:
            return self._known_outline(key) or pending.get(key)

        raw = _raw_key_of(zone, repair, seen)
        cached = self._raw_cache.get(raw)
        outline = None if cached is None else known(cached[0])
        if cached is not None and outline is not None:
            # The store hands a district's copies as one object: nothing to swap then.
            shared = zone
            if cached[2] is not geometry:
                shared = dataclasses.replace(zone, geometry=cached[2])
            return check_zone(shared, repair=repair, prepared=(outline, cached[1]))
        checked = check_zone(zone, repair=repair, known=known)
        assert checked.outline is not None
        self._raw_cache[raw] = (checked.outline.key, checked.repairs, geometry)
        self._raw_keys_of.setdefault(checked.outline.key, set()).add(raw)
        pending.setdefault(checked.outline.key, checked.outline)
        return checked

    def _known_outline(self, key: bytes) -> Outline | None:
        shape = self._shape_of_key.get(key)
        return None if shape is None else self._outline_of_shape[shape]

    def _add_many(self, added: list[CheckedZone], compiled: dict[bytes, CompiledPolygon]) -> None:
        """Add checked zones with distinct ids not in the index: their rows in the zone table
        and their schedules, their polygons (_ref_shapes, with the batch's ``compiled`` ones),
        and their places in the subjects' lists (_list_insert_many) or among the keep-out
        zones."""
        n = len(added)
        if n == 0:
            return
        zones = [c.zone for c in added]
        # Every subject first, before anything is written: a new subject's list gets the shared
        # zones already there (_ensure_subject), and the rows of this run's shared zones below
        # include it.
        owner_rows = [
            -1 if z.subject_id is None else self._ensure_subject(z.subject_id) for z in zones
        ]
        slots = self._zones.take_many(n)
        at = np.asarray(slots, dtype=np.int64)
        table = self._zones.arrays
        ids = np.fromiter((z.zone_id for z in zones), dtype=np.int64, count=n)
        codes = np.fromiter((z.kind.code for z in zones), dtype=np.int64, count=n)
        table["zone_id"][at] = ids
        table["kind"][at] = codes
        table["sort_key"][at] = (codes << KIND_SHIFT) | ids
        table["buffer"][at] = [z.buffer_m or 0.0 for z in zones]
        table["radius"][at] = [z.radius_m or 0.0 for z in zones]
        self._slot_of.update(zip(ids.tolist(), slots, strict=True))
        self._zone_at.update(zip(slots, zones, strict=True))
        victims: list[int] = []
        circles: list[int] = []
        polygons: list[int] = []
        for i, checked in enumerate(added):
            if checked.repairs:
                self._repairs[slots[i]] = checked.repairs
            if checked.zone.kind is ZoneKind.VICTIM:
                victims.append(i)
            elif checked.circle is not None:
                circles.append(i)
            else:
                polygons.append(i)
        table["geom"][at[victims]] = VICTIM_CIRCLE
        if circles:
            centres = [c for c in (added[i].circle for i in circles) if c is not None]
            lon = np.fromiter((c.lon for c in centres), dtype=np.float64, count=len(centres))
            lat = np.fromiter((c.lat for c in centres), dtype=np.float64, count=len(centres))
            x, y, z = ecef(lon, lat)
            table["geom"][at[circles]] = CIRCLE
            table["circle"][at[circles]] = np.column_stack((x, y, z, 0.5 / mean_radius(lat)))
        if polygons:
            outlines = [o for o in (added[i].outline for i in polygons) if o is not None]
            assert len(outlines) == len(polygons)  # check_zone gives a polygon zone its outline
            table["geom"][at[polygons]] = POLYGON
            table["shape"][at[polygons]] = self._ref_shapes(outlines, compiled)
        for slot, zone in zip(slots, zones, strict=True):
            self._schedules.assign(slot, zone.schedule)

        rows: list[int] = []
        listed: list[int] = []
        shared: list[tuple[int, Zone]] = []
        for slot, checked, owner in zip(slots, added, owner_rows, strict=True):
            zone = checked.zone
            if owner >= 0:
                # Listed in its subject's row only, found by _row_of when it is removed: a set per
                # zone for that one row was 350,000 sets in a national build (45-110 MB of RSS).
                rows.append(owner)
                listed.append(slot)
            elif zone.kind in (ZoneKind.INCLUSION, ZoneKind.CURFEW):
                shared.append((slot, zone))
            else:
                self._add_keepout(slot, checked)
        for slot, zone in shared:
            self._always.setdefault(zone.group, set()).add(slot)
            members = (
                set(self._row_of.values())
                if zone.group is None
                else set(self._members.get(zone.group, ()))
            )
            self._listed_in[slot] = members
            rows.extend(members)
            listed.extend([slot] * len(members))
        self._list_insert_many(np.asarray(rows, dtype=np.int64), np.asarray(listed, dtype=np.int64))

    def _add_keepout(self, slot: int, checked: CheckedZone) -> None:
        zone = checked.zone
        if zone.group is not None:
            self._group_code.setdefault(zone.group, len(self._group_code))
            self._zones["group"][slot] = self._group_code[zone.group]
        metres = (zone.buffer_m or 0.0) + KEEPOUT_ALLOWANCE_M
        if checked.circle is not None:
            c = checked.circle
            boxes = reach_boxes(c.lon, c.lat, c.lon, c.lat, metres + c.radius_m)
        else:
            assert checked.outline is not None
            boxes = reach_boxes(*checked.outline.lonlat_bounds, metres)
        self._keepout_boxes[slot] = boxes
        for box in boxes:
            for cell in _box_cells(box):
                self._keepout_cells.setdefault(cell, set()).add(slot)
        self._keepout_dirty = True

    def _ref_shapes(
        self, outlines: list[Outline], compiled: dict[bytes, CompiledPolygon]
    ) -> IntArray:
        """The shape of each outline: a reference to the one already there with its key, else a
        new shape (one per key), taken from ``compiled`` or compiled here, and put into the pools
        in one allocation each."""
        shape_of = np.empty(len(outlines), dtype=np.int64)
        refs = self._shapes["refs"]
        fresh: dict[bytes, int] = {}  # key -> position among the new shapes
        new: list[Outline] = []
        uses: list[int] = []
        for j, outline in enumerate(outlines):
            shape = self._shape_of_key.get(outline.key)
            if shape is not None:
                refs[shape] += 1
                shape_of[j] = shape
                continue
            k = fresh.get(outline.key)
            if k is None:
                k = fresh[outline.key] = len(new)
                new.append(outline)
                uses.append(0)
            uses[k] += 1
            shape_of[j] = -1 - k
        if not new:
            return shape_of
        arrays = [compiled.get(o.key) for o in new]
        compiled_new = [
            c if c is not None else compile_polygon(o.polygon)
            for c, o in zip(arrays, new, strict=True)
        ]
        m = len(new)
        taken = np.asarray(self._shapes.take_many(m), dtype=np.int64)
        shapes = self._shapes
        shapes["refs"][taken] = uses
        shapes["frame"][taken] = np.stack([o.frame for o in new])
        shapes["grid"][taken] = [c.grid for c in compiled_new]
        shapes["edge_base"][taken] = self._edges.put_many(
            {
                "select": [c.select for c in compiled_new],
                "exact": [c.exact for c in compiled_new],
                "normals": [c.normals for c in compiled_new],
            }
        )
        shapes["n_edges"][taken] = [c.n_edges for c in compiled_new]
        shapes["cand_base"][taken] = self._cands.put_many({"edge": [c.cand for c in compiled_new]})
        shapes["n_cand"][taken] = [c.cand.size for c in compiled_new]
        shapes["cell_base"][taken] = self._cells.put_many(
            {"start": [c.cell_start for c in compiled_new]}
        )
        shapes["n_cells"][taken] = [c.cell_start.size for c in compiled_new]
        shapes["gridded"][taken] = [c.n_cells > 1 for c in compiled_new]
        for shape, outline in zip(taken.tolist(), new, strict=True):
            self._shape_of_key[outline.key] = shape
            self._outline_of_shape[shape] = outline
        pending = shape_of < 0
        shape_of[pending] = taken[-1 - shape_of[pending]]
        return shape_of

    def _unref_shape(self, shape: int) -> None:
        shapes = self._shapes
        shapes["refs"][shape] -= 1
        if shapes["refs"][shape] > 0:
            return
        outline = self._outline_of_shape.pop(shape)
        del self._shape_of_key[outline.key]
        for raw in self._raw_keys_of.pop(outline.key, ()):
            self._raw_cache.pop(raw, None)
        self._edges.free(int(shapes["n_edges"][shape]))
        self._cands.free(int(shapes["n_cand"][shape]))
        self._cells.free(int(shapes["n_cells"][shape]))
        shapes.release(shape)
        live = np.asarray(sorted(self._outline_of_shape), dtype=np.int64)
        for pool, base, length in (
            (self._edges, "edge_base", "n_edges"),
            (self._cands, "cand_base", "n_cand"),
            (self._cells, "cell_base", "n_cells"),
        ):
            if pool.wants_compaction():
                shapes[base][live] = pool.compact(
                    shapes[base][live].astype(np.int64), shapes[length][live].astype(np.int64)
                )

    # ------------------------------------------------------------------ what the classifier reads

    def subject_rows(self, subject_ids: npt.ArrayLike) -> IntArray:
        """Row of each subject id in the subject table, -1 for unknown subjects."""
        ids = np.asarray(subject_ids, dtype=np.int64)
        if self._lookup_dirty:
            self._compile_lookup()
        if self._lookup_table.size:
            offset = ids - self._lookup_base
            ok = (offset >= 0) & (offset < self._lookup_table.size)
            rows = self._lookup_table[np.where(ok, offset, 0)]
            return np.where(ok, rows, -1).astype(np.int64)
        if self._lookup_sorted_ids.size == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self._lookup_sorted_ids, ids)
        pos = np.minimum(pos, self._lookup_sorted_ids.size - 1)
        found = self._lookup_sorted_ids[pos] == ids
        return np.where(found, self._lookup_sorted_rows[pos], -1)

    def _compile_lookup(self) -> None:
        rows = np.fromiter(self._row_of.values(), dtype=np.int64, count=len(self._row_of))
        ids = np.fromiter(self._row_of.keys(), dtype=np.int64, count=len(self._row_of))
        self._lookup_table = np.zeros(0, dtype=np.int32)
        if ids.size:
            low, high = int(ids.min()), int(ids.max())
            # A direct table (4 bytes per id in the range) wherever the ids are not too sparse:
            # a gather from it is several times cheaper than a binary search through the sorted
            # ids, which was 9 % of classifying a national batch (ids 7 apart: bench geofence).
            if high - low < LOOKUP_TABLE_SPREAD * ids.size + 65_536:
                self._lookup_base = low
                self._lookup_table = np.full(high - low + 1, -1, dtype=np.int32)
                self._lookup_table[ids - low] = rows
        order = np.argsort(ids)
        self._lookup_sorted_ids = ids[order]
        self._lookup_sorted_rows = rows[order]
        self._lookup_dirty = False

    def keepout_tables(
        self,
    ) -> tuple[shapely.STRtree | None, IntArray, IntArray, IntArray, IntArray]:
        """For global and group exclusion zones: the STRtree of their reach boxes and the zone
        slot of each box; the grid cells their boxes touch (sorted keys), and per cell the zone
        slots (CSR: start offsets and slots, each cell's slots in output order)."""
        if self._keepout_dirty:
            slots: list[int] = []
            boxes: list[tuple[float, ...]] = []
            for slot, slot_boxes in self._keepout_boxes.items():
                for box in slot_boxes:
                    slots.append(slot)
                    boxes.append(box)
            if boxes:
                coords = np.asarray(boxes, dtype=np.float64)
                self._tree = shapely.STRtree(
                    shapely.box(coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3])
                )
            else:
                self._tree = None
            self._tree_slots = np.asarray(slots, dtype=np.int64)
            keys = sorted(self._keepout_cells)
            sort_key = self._zones["sort_key"]
            lists = [sorted(self._keepout_cells[k], key=lambda s: int(sort_key[s])) for k in keys]
            self._cell_keys = np.asarray(keys, dtype=np.int64)
            self._cell_start = np.zeros(len(keys) + 1, dtype=np.int64)
            np.cumsum([len(v) for v in lists], out=self._cell_start[1:])
            self._cell_slots = np.asarray([s for v in lists for s in v], dtype=np.int64)
            self._cell_dense = _dense_cells(self._cell_keys)
            self._keepout_dirty = False
        return self._tree, self._tree_slots, self._cell_keys, self._cell_start, self._cell_slots

    def keepout_dense(self) -> tuple[int, int, int, int, npt.NDArray[np.int32]] | None:
        """The keep-out cells as a dense table over their bounding block of prefilter cells (row
        and column of its corner, its rows and columns, and per cell the position in the sorted
        cell keys or -1), when that block is small enough; None otherwise."""
        self.keepout_tables()
        return self._cell_dense

    def membership(self) -> IntArray:
        """Sorted keys ``row << 20 | group code`` of every (subject, group) membership."""
        if self._membership_dirty:
            keys = [
                (row << 20) | self._group_code[group]
                for row, groups in self._groups_of.items()
                for group in groups
            ]
            self._membership = np.asarray(sorted(keys), dtype=np.int64)
            self._membership_dirty = False
        return self._membership

    def classify(
        self,
        fixes: FixBatch,
        victims: VictimPositions | None = None,
        *,
        reach_m: float = 0.0,
    ) -> Classification:
        """See geofence.classification.classify."""
        return classify(self.snapshot(), fixes, victims, reach_m=reach_m)

    def snapshot(self) -> IndexSnapshot:
        """The index as the classifier reads it: the arrays as they are now, read-only by
        contract (the classifier never writes them), and the lookups it needs as functions."""
        tree, tree_slots, cell_keys, cell_start, cell_slots = self.keepout_tables()
        return IndexSnapshot(
            zones=self._zones,
            zone_capacity=self._zones.capacity,
            slot_of=self._slot_of,
            shapes=self._shapes,
            edge_select=self._edges["select"],
            edge_exact=self._edges["exact"],
            edge_normals=self._edges["normals"],
            cand_edge=self._cands["edge"],
            cell_start=self._cells["start"],
            subjects=self._subjects,
            list_slots=self._lists["slot"],
            keepout_tree=tree,
            keepout_tree_slots=tree_slots,
            keepout_cell_keys=cell_keys,
            keepout_cell_start=cell_start,
            keepout_cell_slots=cell_slots,
            keepout_dense=self.keepout_dense(),
            membership=self.membership() if tree is not None else np.zeros(0, dtype=np.int64),
            schedules=self._schedules,
            tz_names=self._tz_names,
            subject_rows=self.subject_rows,
        )


__all__ = ["ZoneIndex", "ZoneValidationError"]
