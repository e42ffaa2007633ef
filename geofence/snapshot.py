"""The zone index as the classifier reads it.

`ZoneIndex` owns its tables and changes them as zones and subjects come and go; the classifier
only reads them. Handing it this snapshot (references to the arrays as they are at the start of a
batch, and the subject lookup as a function) instead of the index itself keeps the dependency one
way: `index` imports `classification`, never the reverse, and the classifier reaches no private
attribute. Building one costs a few attribute reads per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import shapely

from tagwatch.geofence.schedule import ScheduleBook

IntArray = npt.NDArray[np.int64]


class Columns(Protocol):
    """A table of named columns (the index's slot tables)."""

    def __getitem__(self, name: str) -> npt.NDArray[Any]: ...


@dataclass(frozen=True, slots=True)
class IndexSnapshot:
    zones: Columns  # per zone slot: zone_id, kind, geom, buffer, radius, circle, shape, ...
    zone_capacity: int
    slot_of: Mapping[int, int]  # zone id -> slot
    shapes: Columns  # per shape: frame, grid, edge/cand/cell bases, n_edges, gridded
    edge_select: npt.NDArray[Any]
    edge_exact: npt.NDArray[Any]
    edge_normals: npt.NDArray[Any]
    cand_edge: npt.NDArray[Any]
    cell_start: npt.NDArray[Any]
    subjects: Columns  # per subject row: list_start, list_len, tz
    list_slots: IntArray
    keepout_tree: shapely.STRtree | None  # reach boxes of global and group exclusion zones
    keepout_tree_slots: IntArray
    keepout_cell_keys: IntArray
    keepout_cell_start: IntArray
    keepout_cell_slots: IntArray
    keepout_dense: tuple[int, int, int, int, npt.NDArray[np.int32]] | None
    membership: IntArray  # sorted row << 20 | group code (empty without keep-out zones)
    schedules: ScheduleBook
    tz_names: list[str]
    subject_rows: Callable[[npt.ArrayLike], IntArray]  # subject ids -> rows, -1 when unknown
