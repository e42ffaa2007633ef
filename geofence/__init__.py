"""The geofence core: pure, vectorized, no I/O.

Fixes (NumPy arrays) and a ZoneIndex in; for every (fix, applicable zone) pair the state by the
accuracy-circle rule, the warning band, the signed distance in metres and whether the zone's
schedule is active. See docs/geofence.md.
"""

from tagwatch.geofence._kernel import polygon_kernel
from tagwatch.geofence.batch import (
    INSIDE,
    OUTSIDE,
    UNCERTAIN,
    Classification,
    FixBatch,
    VictimPositions,
)
from tagwatch.geofence.classification import classify
from tagwatch.geofence.index import ZoneIndex
from tagwatch.geofence.schedule import Schedule, ScheduleError, ScheduleException, WeeklyWindow
from tagwatch.geofence.zones import KindCode, Zone, ZoneKind, ZoneValidationError, validate_zone


def warm_up() -> bool:
    """Compile the polygon kernel now (about a second, cached on disk after the first time), so
    that the first batch a process classifies does not pay for it. True when it is compiled;
    False when Numba is absent and the NumPy kernel is used."""
    return polygon_kernel() is not None


__all__ = [
    "INSIDE",
    "OUTSIDE",
    "UNCERTAIN",
    "Classification",
    "FixBatch",
    "KindCode",
    "Schedule",
    "ScheduleError",
    "ScheduleException",
    "VictimPositions",
    "WeeklyWindow",
    "Zone",
    "ZoneIndex",
    "ZoneKind",
    "ZoneValidationError",
    "classify",
    "validate_zone",
    "warm_up",
]
