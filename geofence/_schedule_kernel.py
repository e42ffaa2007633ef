"""Schedule activity of (zone, fix) pairs, compiled with Numba when it is installed.

`ScheduleBook.active` answers with a dozen NumPy passes over the pairs (the slot's pattern, the
scheduled pairs' clocks, their week seconds, the search in the patterns' boundaries, the same
again for exceptions), each writing a temporary as long as the batch: a tenth of classifying a
national batch. This walks the pairs once, with the same integer arithmetic and the same binary
searches (``side="right"``), so the answers are the NumPy path's exactly; the NumPy path stays
the reference, and runs without Numba or with ``TAGWATCH_GEOFENCE_NUMBA=0``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from tagwatch.geofence._numba import compile_kernel, numba_or_none

IntArray = npt.NDArray[np.int64]

_COMPILED: Callable[..., None] | None = None
_TRIED = False


def _active_pairs(
    slots: IntArray,
    pair_fix: IntArray,
    clock: IntArray,
    pattern_of_slot: IntArray,
    pattern_keys: IntArray,
    table_of_slot: IntArray,
    exception_keys: IntArray,
    exception_values: npt.NDArray[np.int8],
    week: int,
    week_shift: int,
    span: int,
    out: npt.NDArray[np.bool_],
) -> None:  # pragma: no cover - runs compiled; tests compare it with the NumPy path
    """``out[i]``: whether slot ``slots[i]``'s schedule is active at ``clock[pair_fix[i]]``.
    An empty ``table_of_slot`` means no slot has exceptions."""
    n_slots = pattern_of_slot.size
    n_tables = table_of_slot.size
    for i in range(slots.size):
        s = slots[i]
        if s < 0 or s >= n_slots:
            raise IndexError("zone slot outside the schedule book")
        pattern = pattern_of_slot[s]
        if pattern < 0:
            out[i] = True
            continue
        wall = clock[pair_fix[i]]
        key = pattern * week + (wall + week_shift) % week
        active = (np.searchsorted(pattern_keys, key, side="right") & 1) == 1
        if n_tables:
            if s >= n_tables:
                raise IndexError("zone slot outside the exception tables")
            table = table_of_slot[s]
            if table >= 0:
                when = min(max(wall, 1), span - 1)
                at = np.searchsorted(exception_keys, table * span + when, side="right") - 1
                value = exception_values[at]
                if value >= 0:
                    active = value == 1
        out[i] = active


def compiled_active() -> Callable[..., None] | None:
    """The compiled pass, or None without Numba (or with TAGWATCH_GEOFENCE_NUMBA=0)."""
    global _COMPILED, _TRIED  # noqa: PLW0603 - compiled once per process
    if _TRIED:
        return _COMPILED
    _TRIED = True
    numba = numba_or_none()
    if numba is None:
        return None
    i64 = numba.int64[::1]
    signature = numba.void(
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        numba.int8[::1],
        numba.int64,
        numba.int64,
        numba.int64,
        numba.boolean[::1],
    )
    _COMPILED = compile_kernel(numba, signature, _active_pairs)
    return _COMPILED
