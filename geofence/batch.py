"""What goes into the classifier and what comes out: a columnar batch of fixes, the victims'
latest positions, and one row per (fix, applicable zone) pair. Types only, so that the index,
the classifier and the engine can all name them without importing one another."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Int8Array = npt.NDArray[np.int8]

OUTSIDE = 0
INSIDE = 1
UNCERTAIN = 2


def _column(values: npt.ArrayLike, dtype: type[np.generic], name: str) -> npt.NDArray[np.generic]:
    array = np.ascontiguousarray(values, dtype=dtype)
    if array.ndim != 1:
        msg = f"{name} must be one-dimensional"
        raise ValueError(msg)
    return array


@dataclass(frozen=True, slots=True)
class FixBatch:
    """A batch of fixes as aligned arrays: subject id (the database key), WGS84 degrees, 68 %
    accuracy radius in metres, fix time in UTC epoch seconds."""

    subject_id: IntArray
    lon: FloatArray
    lat: FloatArray
    acc: FloatArray
    time: FloatArray

    def __post_init__(self) -> None:
        for name, dtype in (
            ("subject_id", np.int64),
            ("lon", np.float64),
            ("lat", np.float64),
            ("acc", np.float64),
            ("time", np.float64),
        ):
            object.__setattr__(self, name, _column(getattr(self, name), dtype, name))
        n = self.subject_id.size
        if any(getattr(self, a).size != n for a in ("lon", "lat", "acc", "time")):
            msg = "FixBatch arrays must have the same length"
            raise ValueError(msg)
        stacked = (self.lon, self.lat, self.acc, self.time)
        if not all(np.isfinite(a).all() for a in stacked):
            msg = "FixBatch holds NaN or infinite values (ingest dead-letters those)"
            raise ValueError(msg)
        if (np.abs(self.lat) > 90.0).any() or (np.abs(self.lon) > 180.0).any():
            msg = "FixBatch holds coordinates out of range"
            raise ValueError(msg)
        if (self.acc < 0.0).any():
            msg = "FixBatch holds a negative accuracy"
            raise ValueError(msg)

    def __len__(self) -> int:
        return int(self.subject_id.size)


@dataclass(frozen=True, slots=True)
class VictimPositions:
    """The latest position of each victim zone's victim: zone id, WGS84 degrees, fix time (UTC
    epoch seconds), accuracy (metres). ``max_age_s`` (one value or one per row) is how far apart the
    victim's and the offender's fix times may be before the victim position is stale."""

    zone_id: IntArray
    lon: FloatArray
    lat: FloatArray
    time: FloatArray
    acc: FloatArray
    max_age_s: FloatArray | float = 300.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone_id", _column(self.zone_id, np.int64, "zone_id"))
        for name in ("lon", "lat", "time", "acc"):
            object.__setattr__(self, name, _column(getattr(self, name), np.float64, name))
        n = self.zone_id.size
        if any(getattr(self, a).size != n for a in ("lon", "lat", "time", "acc")):
            msg = "VictimPositions arrays must have the same length"
            raise ValueError(msg)
        age = np.broadcast_to(np.asarray(self.max_age_s, dtype=np.float64), (n,))
        object.__setattr__(self, "max_age_s", np.ascontiguousarray(age))


_EMPTY_I64 = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Classification:
    """One row per (fix, applicable zone) pair, ordered by (fix_index, kind priority, zone_id).

    Rows: every zone of the fix's subject (its own, and the inclusion and curfew zones it gets
    from its groups or from everyone) - whether or not their schedule is active (``active`` says)
    - and every global or group exclusion zone the fix comes within ``buffer_m + acc + reach_m``
    of. A global or group exclusion zone without a row is confidently outside, out of its band.
    ``kind`` holds geofence.KindCode values (victim 0, exclusion 1, inclusion 2, curfew 3).
    """

    fix_index: IntArray
    zone_id: IntArray
    kind: Int8Array
    state: Int8Array
    in_band: BoolArray
    distance_m: FloatArray
    active: BoolArray
    victim_stale: BoolArray
    unknown_subject_ids: IntArray = field(default_factory=lambda: _EMPTY_I64)

    def __len__(self) -> int:
        return int(self.fix_index.size)

    def fix_offsets(self, fix_count: int) -> IntArray:
        """Row offsets per fix: the rows of fix ``i`` are ``offsets[i]:offsets[i + 1]``."""
        return np.searchsorted(self.fix_index, np.arange(fix_count + 1)).astype(np.int64)


__all__ = [
    "INSIDE",
    "OUTSIDE",
    "UNCERTAIN",
    "Classification",
    "FixBatch",
    "VictimPositions",
]
