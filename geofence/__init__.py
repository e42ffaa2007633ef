"""The geofence core: pure, vectorized, no I/O.

Fixes (NumPy arrays) and a ZoneIndex in; for every (fix, applicable zone) pair the state by the
accuracy-circle rule, the warning band, the signed distance in metres and whether the zone's
schedule is active. See docs/geofence.md.
"""

from geofence.classification import (
    INSIDE,
    OUTSIDE,
    UNCERTAIN,
    Classification,
    FixBatch,
    VictimPositions,
    classify,
)
from geofence.index import ZoneIndex
from geofence.schedule import Schedule, ScheduleError, ScheduleException, WeeklyWindow
from geofence.zones import KindCode, Zone, ZoneKind, ZoneValidationError, validate_zone

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
]
