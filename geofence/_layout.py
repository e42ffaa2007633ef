"""The zone index's table layout: what the index writes and the classifier reads.

Both `index` (the writer) and `classification` (the reader) import these; neither imports the
other's internals, so the classifier depends on a read-only `IndexSnapshot`, never on ZoneIndex.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

CIRCLE, POLYGON, VICTIM_CIRCLE = 0, 1, 2
EVERYONE = -1
KIND_SHIFT = 60
# Fixes whose accuracy plus reach is under this are screened by their position alone.
KEEPOUT_ALLOWANCE_M = 500.0
PREFILTER_CELLS_PER_DEGREE = 64
# Conservative metres per degree (fewer than anywhere on the ellipsoid), for reach boxes.
METRES_PER_DEGREE_LOW = 110_000.0
_F64 = np.dtype(np.float64)
_F32 = np.dtype(np.float32)
_I64 = np.dtype(np.int64)
_I32 = np.dtype(np.int32)
_I8 = np.dtype(np.int8)


def reach_box_arrays(
    lon_lo: FloatArray,
    lat_lo: FloatArray,
    lon_hi: FloatArray,
    lat_hi: FloatArray,
    metres: FloatArray,
) -> tuple[IntArray, FloatArray]:
    """Longitude/latitude boxes holding every point within ``metres`` of each given box, split
    at the antimeridian: (owner of each box, boxes as rows lon_lo, lat_lo, lon_hi, lat_hi)."""
    dlat = metres / METRES_PER_DEGREE_LOW
    south = np.maximum(lat_lo - dlat, -90.0)
    north = np.minimum(lat_hi + dlat, 90.0)
    cos_lat = np.cos(np.radians(np.maximum(np.abs(south), np.abs(north))))
    dlon = np.divide(
        metres,
        METRES_PER_DEGREE_LOW * cos_lat,
        out=np.full(cos_lat.shape, 360.0),
        where=cos_lat > 1e-6,
    )
    west = lon_lo - dlon
    east = lon_hi + dlon
    whole = east - west >= 360.0
    shift = np.floor((west + 180.0) / 360.0) * 360.0
    west = np.where(whole, -180.0, west - shift)
    east = np.where(whole, 180.0, east - shift)
    split = east > 180.0
    n = west.size
    owner = np.concatenate((np.arange(n), np.flatnonzero(split)))
    boxes = np.empty((owner.size, 4), dtype=np.float64)
    boxes[:n, 0] = west
    boxes[:n, 1] = south
    boxes[:n, 2] = np.minimum(east, 180.0)
    boxes[:n, 3] = north
    boxes[n:, 0] = -180.0
    boxes[n:, 1] = south[split]
    boxes[n:, 2] = east[split] - 360.0
    boxes[n:, 3] = north[split]
    return owner.astype(np.int64), boxes


def reach_boxes(
    lon_lo: float, lat_lo: float, lon_hi: float, lat_hi: float, metres: float
) -> list[tuple[float, ...]]:
    _, boxes = reach_box_arrays(
        np.array([lon_lo]),
        np.array([lat_lo]),
        np.array([lon_hi]),
        np.array([lat_hi]),
        np.array([metres]),
    )
    return [tuple(float(v) for v in box) for box in boxes]


def prefilter_keys(lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]) -> IntArray:
    per = PREFILTER_CELLS_PER_DEGREE
    row = np.clip(np.floor((lat + 90.0) * per), 0, 180 * per - 1).astype(np.int64)
    col = np.clip(np.floor((lon + 180.0) * per), 0, 360 * per - 1).astype(np.int64)
    return row * (360 * per) + col
