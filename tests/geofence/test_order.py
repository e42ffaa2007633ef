"""A large batch is measured in subject order and put back in fix order: the same rows, in the
same order, as classifying it in batches too small to be reordered; and the same again when it
is measured in many chunks."""

from __future__ import annotations

import numpy as np
import pytest

from tagwatch.geofence import (
    FixBatch,
    Schedule,
    WeeklyWindow,
    Zone,
    ZoneIndex,
    ZoneKind,
    classification,
)
from tagwatch.geofence.classification import SORT_MIN_FIXES


def _index_and_fixes() -> tuple[ZoneIndex, FixBatch, np.random.Generator]:
    """200 subjects with a curfew circle and an exclusion square, one global exclusion circle
    (a keep-out zone: its rows are merged among the subjects' own), 3 unknown subjects."""
    rng = np.random.default_rng(7)
    index = ZoneIndex()
    curfew = Schedule(weekly=(WeeklyWindow("19:00", "07:00"),))
    zone_id = 1
    homes = rng.uniform((18.0, -34.0), (19.0, -33.0), (200, 2))
    for subject in range(1, 201):
        lon, lat = homes[subject - 1]
        index.set_subject(subject, timezone="Africa/Johannesburg")
        point = {"type": "Point", "coordinates": [lon, lat]}
        index.upsert(
            Zone(
                zone_id, ZoneKind.CURFEW, point, radius_m=50.0, subject_id=subject, schedule=curfew
            )
        )
        zone_id += 1
        d = 0.001
        square = [[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d]]
        index.upsert(
            Zone(
                zone_id,
                ZoneKind.EXCLUSION,
                {"type": "Polygon", "coordinates": [[*square, square[0]]]},
                buffer_m=200.0,
                subject_id=subject,
            )
        )
        zone_id += 1
    index.upsert(
        Zone(
            zone_id,
            ZoneKind.EXCLUSION,
            {"type": "Point", "coordinates": [18.5, -33.5]},
            radius_m=20_000.0,
            buffer_m=500.0,
        )
    )
    n = 3 * SORT_MIN_FIXES
    who = rng.integers(0, 203, n)  # subjects 201..203 are unknown
    base = homes[np.minimum(who, 199)]
    lon = base[:, 0] + rng.normal(size=n) * 0.002
    lat = base[:, 1] + rng.normal(size=n) * 0.002
    fixes = FixBatch(who + 1, lon, lat, rng.uniform(1, 100, n), 1.8e9 + rng.uniform(0, 86_400, n))
    return index, fixes, rng


def test_reordered_batch_matches_small_batches() -> None:
    index, fixes, _ = _index_and_fixes()
    who, lon, lat, n = fixes.subject_id - 1, fixes.lon, fixes.lat, len(fixes)
    whole = index.classify(fixes)
    parts = []
    step = SORT_MIN_FIXES // 2
    for start in range(0, n, step):
        sl = slice(start, start + step)
        part = index.classify(
            FixBatch(who[sl] + 1, lon[sl], lat[sl], fixes.acc[sl], fixes.time[sl])
        )
        parts.append((start, part))
    for name in ("fix_index", "zone_id", "kind", "state", "in_band", "distance_m", "active"):
        expected = np.concatenate(
            [getattr(p, name) + (start if name == "fix_index" else 0) for start, p in parts]
        )
        np.testing.assert_array_equal(getattr(whole, name), expected, err_msg=name)
    assert set(whole.unknown_subject_ids.tolist()) == {201, 202, 203}


NAMES = ("fix_index", "zone_id", "kind", "state", "in_band", "distance_m", "active", "victim_stale")


def test_a_batch_in_many_chunks_matches_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks' rows are concatenated, their keep-out rows merged and the whole put back in fix
    order with one gather per column (classification.classify): the same rows as one chunk."""
    index, fixes, _ = _index_and_fixes()
    assert len(fixes) <= classification.CHUNK_FIXES
    whole = index.classify(fixes)
    monkeypatch.setattr(classification, "CHUNK_FIXES", 1_000)
    chunked = index.classify(fixes)
    for name in NAMES:
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name), err_msg=name)
