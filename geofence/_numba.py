"""Numba for the geofence core's compiled kernels, when it is installed and not switched off.

Numba is optional: without it (or with ``TAGWATCH_GEOFENCE_NUMBA=0``) the NumPy versions run,
which give the same results (geofence._kernel, geofence._grid_kernel). It is imported only when a
kernel is first needed, so importing the core stays cheap."""

from __future__ import annotations

import importlib
import os
from typing import Any


def numba_or_none() -> Any | None:
    """The numba module, or None when it is missing or TAGWATCH_GEOFENCE_NUMBA is 0."""
    if os.environ.get("TAGWATCH_GEOFENCE_NUMBA", "1") == "0":
        return None
    try:
        return importlib.import_module("numba")
    except ImportError:
        return None
