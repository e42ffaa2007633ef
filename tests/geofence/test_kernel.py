"""The compiled kernels (geofence._kernel, with Numba) against the NumPy path: the same
classification, bit for bit, for fixes inside, outside and far from large (gridded) and small
polygons and circles (the compiled path projects the fixes itself). Skipped without Numba."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

import tagwatch.geofence._kernel as kernel_module
from tagwatch.geofence import FixBatch, Zone, ZoneIndex, ZoneKind

pytest.importorskip("numba")
pytestmark = pytest.mark.skipif(
    os.environ.get("TAGWATCH_GEOFENCE_NUMBA") == "0", reason="compiled kernel disabled"
)


def _ring(lon: float, lat: float, radius_deg: float, n: int, rng: np.random.Generator) -> list:
    angles = np.sort(rng.uniform(0.0, 2 * np.pi, n))
    radii = radius_deg * rng.uniform(0.6, 1.0, n)
    ring = np.column_stack((lon + radii * np.cos(angles), lat + radii * np.sin(angles) * 0.9))
    ring[:, 0] = (ring[:, 0] + 180.0) % 360.0 - 180.0
    coords = ring.round(7).tolist()
    return [*coords, coords[0]]


@pytest.fixture
def use_kernel() -> Iterator[None]:
    saved = kernel_module._KERNEL, kernel_module._TRIED
    yield
    kernel_module._KERNEL, kernel_module._TRIED = saved


def _classify(index: ZoneIndex, fixes: FixBatch, compiled: bool) -> dict[str, np.ndarray]:
    kernel_module._TRIED = False
    kernel_module._KERNEL = None
    if not compiled:
        kernel_module._TRIED = True
    result = index.classify(fixes)
    return {
        name: getattr(result, name)
        for name in ("fix_index", "zone_id", "kind", "state", "in_band", "distance_m", "active")
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.usefixtures("use_kernel")
def test_compiled_kernel_matches_numpy_kernel(seed: int) -> None:
    rng = np.random.default_rng(seed)
    other = np.random.default_rng(seed + 100)  # the circles': the polygons' draws stay as they were
    index = ZoneIndex()
    zone_id = 1
    centres = rng.uniform((-70.0, -60.0), (170.0, 60.0), (3, 2))
    centres[0] = (179.95, 10.0)  # a district across the antimeridian
    for subject in range(1, 31):
        lon, lat = centres[subject % 3]
        index.set_subject(subject)
        district = {"type": "Polygon", "coordinates": [_ring(lon, lat, 0.2, 200, rng)]}
        index.upsert(Zone(zone_id, ZoneKind.INCLUSION, district, subject_id=subject))
        zone_id += 1
        for _ in range(2):
            c = (lon + rng.normal() * 0.05, lat + rng.normal() * 0.05)
            small = {"type": "Polygon", "coordinates": [_ring(*c, 0.002, 8, rng)]}
            index.upsert(
                Zone(zone_id, ZoneKind.EXCLUSION, small, buffer_m=300.0, subject_id=subject)
            )
            zone_id += 1
        # A circle (a victim's home, a school) beside the polygons: the compiled circle path.
        c = (lon + other.normal() * 0.05, lat + other.normal() * 0.05)
        index.upsert(
            Zone(
                zone_id,
                ZoneKind.EXCLUSION,
                {"type": "Point", "coordinates": [(c[0] + 180.0) % 360.0 - 180.0, c[1]]},
                radius_m=float(other.uniform(50.0, 2_000.0)),
                buffer_m=500.0,
                subject_id=subject,
            )
        )
        zone_id += 1
    n = 20_000
    who = rng.integers(1, 31, n)
    spread = rng.choice([0.001, 0.05, 0.2, 0.5], n)
    lon = centres[who % 3, 0] + rng.normal(size=n) * spread
    lat = centres[who % 3, 1] + rng.normal(size=n) * spread
    lon = (lon + 180.0) % 360.0 - 180.0
    fixes = FixBatch(who, lon, lat, rng.uniform(1.0, 50.0, n), np.full(n, 1.8e9))
    compiled = _classify(index, fixes, compiled=True)
    assert kernel_module._KERNEL is not None
    reference = _classify(index, fixes, compiled=False)
    for name, values in reference.items():
        np.testing.assert_array_equal(compiled[name], values, err_msg=name)
