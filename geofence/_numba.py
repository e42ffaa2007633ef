"""Numba for the geofence core's compiled kernels, when it is installed and not switched off.

Numba is optional: without it (or with ``TAGWATCH_GEOFENCE_NUMBA=0``) the NumPy versions run,
which give the same results (geofence._kernel, geofence._grid_kernel, geofence._schedule_kernel).
It is imported only when a kernel is first needed, so importing the core stays cheap."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any


def numba_or_none() -> Any | None:
    """The numba module, or None when it is missing or TAGWATCH_GEOFENCE_NUMBA is 0."""
    if os.environ.get("TAGWATCH_GEOFENCE_NUMBA", "1") == "0":
        return None
    try:
        return importlib.import_module("numba")
    except ImportError:
        return None


def compile_kernel(numba: Any, signature: Any, function: Callable[..., Any]) -> Any:
    """``function`` compiled for ``signature`` as every kernel of the core is: without the
    interpreter lock (ingest's other threads run meanwhile), cached on disk (NUMBA_CACHE_DIR or
    next to the module), and without bounds checks (the callers hand it arrays it was written
    for; the NumPy versions are the reference)."""
    return numba.njit(signature, nogil=True, cache=True, boundscheck=False)(function)
