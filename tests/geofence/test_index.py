"""The zone index changed one zone or subject at a time gives the same answers as one built once
from where those changes end up; and the benchmark runs."""

from __future__ import annotations

import io
import math
import time
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tagwatch.geofence import (
    Classification,
    FixBatch,
    Schedule,
    ScheduleException,
    VictimPositions,
    WeeklyWindow,
    Zone,
    ZoneIndex,
    ZoneKind,
    ZoneValidationError,
)
from tagwatch.geofence._pool import RangePool
from tests.geofence.strategies import GEOD, examples, star_ring

T0 = 1_795_000_000.0  # 2026-11-18
TOWNS = {"cape_town": (18.4241, -33.9249), "fiji": (179.95, -17.0)}
TIMEZONES = ["UTC", "Europe/London", "Australia/Sydney", "Africa/Johannesburg"]
SUBJECTS = (1, 2, 3, 4)
GROUPS = ("a", "b")
SCHEDULES: list[Schedule | None] = [
    None,
    Schedule(weekly=(WeeklyWindow("19:00", "07:00"),)),
    Schedule(
        weekly=(WeeklyWindow("20:00", "06:00", days=(0, 1, 2, 3, 4)),),
        exceptions=(ScheduleException("2026-11-19T21:00", "2026-11-19T23:00", active=False),),
    ),
    Schedule(exceptions=(ScheduleException("2026-11-20T08:00", "2026-11-21T08:00", active=True),)),
]
KINDS = [ZoneKind.EXCLUSION, ZoneKind.INCLUSION, ZoneKind.CURFEW, ZoneKind.VICTIM]


def _moved(lon: float, lat: float, azimuth: float, metres: float) -> tuple[float, float]:
    x, y, _ = GEOD.fwd(lon, lat, azimuth, metres)
    return float(x), float(y)


@lru_cache(maxsize=4)
def shapes(town: str) -> list[tuple[dict[str, Any] | None, float | None]]:
    """(geometry, radius_m) choices around a town: circles, a small polygon (twice, with equal
    coordinates: one shared outline), a polygon with a hole, a district with enough edges for the
    candidate grid, a multipolygon; and None for victim zones."""
    lon, lat = TOWNS[town]
    rng = np.random.default_rng(7)

    def ring(clon: float, clat: float, radius: float, n: int) -> list[list[float]]:
        return star_ring(
            clon,
            clat,
            radius,
            n,
            rng.uniform(0.3, 0.7, n).tolist(),
            rng.uniform(0.6, 1.0, n).tolist(),
        )

    small = ring(*_moved(lon, lat, 40.0, 1_500.0), 300.0, 7)
    hole_centre = _moved(lon, lat, 200.0, 2_500.0)
    far = _moved(lon, lat, 120.0, 4_000.0)
    return [
        ({"type": "Point", "coordinates": [lon, lat]}, 300.0),
        ({"type": "Point", "coordinates": list(_moved(lon, lat, 300.0, 2_000.0))}, 800.0),
        ({"type": "Polygon", "coordinates": [small]}, None),
        ({"type": "Polygon", "coordinates": [[list(p) for p in small]]}, None),
        (
            {
                "type": "Polygon",
                "coordinates": [ring(*hole_centre, 1_500.0, 9), ring(*hole_centre, 400.0, 6)[::-1]],
            },
            None,
        ),
        ({"type": "Polygon", "coordinates": [ring(lon, lat, 8_000.0, 48)]}, None),
        (
            {
                "type": "MultiPolygon",
                "coordinates": [
                    [ring(*far, 500.0, 8)],
                    [ring(*_moved(*far, 90.0, 2_000.0), 500.0, 5)],
                ],
            },
            None,
        ),
    ]


@dataclass(frozen=True)
class ZoneSpec:
    zone_id: int
    shape: int
    kind: int
    owner: str  # "s1".."s4", "g:a", "g:b", "everyone"
    schedule: int
    buffer: float | None

    def zone(self, town: str) -> Zone:
        kind = KINDS[self.kind]
        owner = self.owner
        if kind is ZoneKind.VICTIM and not owner.startswith("s"):
            owner = "s1"
        subject = int(owner[1:]) if owner.startswith("s") else None
        group = owner[2:] if owner.startswith("g:") else None
        schedule = SCHEDULES[self.schedule]
        if kind is ZoneKind.CURFEW and schedule is None:
            schedule = SCHEDULES[1]
        buffer = self.buffer if kind in (ZoneKind.EXCLUSION, ZoneKind.VICTIM) else None
        if kind is ZoneKind.VICTIM:
            return Zone(self.zone_id, kind, None, 200.0, buffer, subject, None, schedule)
        geometry, radius = shapes(town)[self.shape]
        return Zone(self.zone_id, kind, geometry, radius, buffer, subject, group, schedule)


zone_specs = st.builds(
    ZoneSpec,
    zone_id=st.integers(1, 24),
    shape=st.integers(0, 6),
    kind=st.integers(0, 3),
    owner=st.sampled_from([*(f"s{s}" for s in SUBJECTS), "g:a", "g:b", "g:a", "g:b", "everyone"]),
    schedule=st.integers(0, len(SCHEDULES) - 1),
    buffer=st.one_of(st.none(), st.sampled_from([50.0, 400.0, 2_500.0])),
)

set_subject = st.tuples(
    st.just("set_subject"),
    st.sampled_from(SUBJECTS),
    st.sampled_from(TIMEZONES),
    st.lists(st.sampled_from(GROUPS), unique=True, max_size=2),
)
operations = st.one_of(
    st.tuples(st.just("upsert"), zone_specs),
    st.tuples(st.just("upsert"), zone_specs),
    st.tuples(st.just("upsert"), zone_specs),
    st.tuples(st.just("remove"), st.integers(1, 24)),
    set_subject,
    set_subject,
    st.tuples(st.just("remove_subject"), st.sampled_from(SUBJECTS)),
)


@dataclass
class Model:
    """Where a sequence of changes ends up: the zones and the subject table, plainly."""

    town: str
    zones: dict[int, Zone] = field(default_factory=dict)
    subjects: dict[int, tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    def apply(self, index: ZoneIndex, op: tuple[Any, ...]) -> None:
        match op:
            case ("upsert", ZoneSpec() as spec):
                zone = spec.zone(self.town)
                index.upsert(zone)
                self.zones[zone.zone_id] = zone
                if zone.subject_id is not None:
                    self.subjects.setdefault(zone.subject_id, ("UTC", ()))
            case ("remove", int(zone_id)):
                index.remove(zone_id)
                self.zones.pop(zone_id, None)
            case ("set_subject", int(subject), str(timezone), list(groups)):
                index.set_subject(subject, timezone=timezone, groups=groups)
                self.subjects[subject] = (timezone, tuple(groups))
            case ("remove_subject", int(subject)):
                index.remove_subject(subject)
                self.subjects.pop(subject, None)
                self.zones = {k: z for k, z in self.zones.items() if z.subject_id != subject}
            case _:
                raise AssertionError(op)

    def build(self) -> ZoneIndex:
        rows = [(s, tz, groups) for s, (tz, groups) in sorted(self.subjects.items())]
        return ZoneIndex.build(sorted(self.zones.values(), key=lambda z: z.zone_id), rows)


@lru_cache(maxsize=4)
def fixes_for(town: str) -> FixBatch:
    """Fixes of every subject (and of one never registered) near every shape, at distances from a
    few metres to 12 km, a few with wide accuracy circles, over a week of times."""
    rng = np.random.default_rng(11)
    centres = []
    for geometry, _ in shapes(town):
        assert geometry is not None
        coords = np.asarray(
            geometry["coordinates"]
            if geometry["type"] == "Point"
            else [p for part in _parts(geometry) for p in part[0]],
            dtype=np.float64,
        ).reshape(-1, 2)
        centres.append(coords.mean(axis=0))
    n = 400
    which = rng.integers(0, len(centres), n)
    base = np.asarray(centres)[which]
    distance = np.concatenate((rng.uniform(0, 1_500, n - 80), rng.uniform(1_500, 12_000, 80)))
    lon, lat, _ = GEOD.fwd(base[:, 0], base[:, 1], rng.uniform(0, 360, n), distance)
    acc = np.exp(rng.normal(np.log(10.0), 1.0, n))
    acc[rng.random(n) < 0.05] = 3_000.0
    subject = rng.integers(1, 6, n)
    when = T0 + rng.uniform(0, 7 * 86_400, n)
    return FixBatch(subject, lon, lat, acc, when)


def _parts(geometry: dict[str, Any]) -> list[Any]:
    return [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]


def victims_for(town: str) -> VictimPositions:
    lon, lat = TOWNS[town]
    ids = np.arange(1, 25)
    return VictimPositions(
        ids, np.full(24, lon), np.full(24, lat), T0 + ids * 3_600.0, np.full(24, 10.0), 2 * 86_400.0
    )


def assert_same(a: Classification, b: Classification) -> None:
    for name in ("fix_index", "zone_id", "kind", "state", "in_band", "active", "victim_stale"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.array_equal(a.distance_m, b.distance_m, equal_nan=True)
    assert np.array_equal(a.unknown_subject_ids, b.unknown_subject_ids)


def classify_both(index: ZoneIndex, model: Model) -> tuple[Classification, Classification]:
    fixes = fixes_for(model.town)
    victims = victims_for(model.town)
    return index.classify(fixes, victims, reach_m=100.0), model.build().classify(
        fixes, victims, reach_m=100.0
    )


@examples(150)
@given(
    town=st.sampled_from(sorted(TOWNS)),
    ops=st.lists(operations, min_size=1, max_size=50),
    check_every=st.sampled_from([0, 1, 1, 4]),
)
def test_incremental_changes_equal_a_fresh_build(
    town: str, ops: list[tuple[Any, ...]], check_every: int
) -> None:
    """``check_every`` > 0 also classifies between changes, so the lazily compiled tables are
    compiled, then changed, then compiled again."""
    index = ZoneIndex()
    model = Model(town)
    for step, op in enumerate(ops):
        model.apply(index, op)
        if check_every and step % check_every == 0:
            assert_same(*classify_both(index, model))
    assert len(index) == len(model.zones)
    assert index.subject_count == len(model.subjects)
    assert {z.zone_id for z in index.zones()} == set(model.zones)
    assert_same(*classify_both(index, model))


def test_many_changes_compact_the_pools_and_still_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Enough churn that the edge pools compact (garbage > 4096 rows and more than half of them),
    with lists growing past their first capacity."""
    compactions: list[int] = []
    original = RangePool.compact

    def counting(self: RangePool, starts: Any, lengths: Any) -> Any:
        compactions.append(self.used)
        return original(self, starts, lengths)

    monkeypatch.setattr(RangePool, "compact", counting)
    town = "cape_town"
    index = ZoneIndex()
    model = Model(town)
    rng = np.random.default_rng(5)
    lon, lat = TOWNS[town]
    zone_id = 100
    for round_ in range(4):
        for subject in range(1, 31):
            model.apply(
                index,
                ("set_subject", subject, TIMEZONES[subject % 4], ["a"] if subject % 3 else []),
            )
        added = []
        for subject in range(1, 31):
            for _ in range(5):
                n = int(rng.integers(30, 60))
                centre = _moved(lon, lat, float(rng.uniform(0, 360)), float(rng.uniform(0, 5_000)))
                ring = star_ring(*centre, 600.0, n, [0.5] * n, rng.uniform(0.6, 1.0, n).tolist())
                zone = Zone(
                    zone_id,
                    ZoneKind.EXCLUSION if zone_id % 2 else ZoneKind.INCLUSION,
                    {"type": "Polygon", "coordinates": [ring]},
                    subject_id=subject,
                    schedule=SCHEDULES[zone_id % 4],
                )
                index.upsert(zone)
                model.zones[zone_id] = zone
                added.append(zone_id)
                zone_id += 1
        for gone in rng.choice(added, size=len(added) * 3 // 4, replace=False).tolist():
            model.apply(index, ("remove", gone))
        if round_ % 2:
            model.apply(index, ("remove_subject", int(rng.integers(1, 31))))
    assert compactions, "the pools never compacted"
    fixes = FixBatch(
        np.arange(2_000) % 45 + 1,
        *GEOD.fwd(
            np.full(2_000, lon),
            np.full(2_000, lat),
            rng.uniform(0, 360, 2_000),
            rng.uniform(0, 6_000, 2_000),
        )[:2],
        np.full(2_000, 15.0),
        T0 + rng.uniform(0, 7 * 86_400, 2_000),
    )
    assert_same(index.classify(fixes), model.build().classify(fixes))


def test_replacing_a_zone_changes_only_that_zone() -> None:
    town = "cape_town"
    index = ZoneIndex()
    model = Model(town)
    for op in [
        ("set_subject", 1, "Africa/Johannesburg", ["a"]),
        ("upsert", ZoneSpec(1, 2, 0, "s1", 0, 50.0)),
        ("upsert", ZoneSpec(2, 3, 1, "g:a", 0, None)),  # same coordinates as shape 2
        ("upsert", ZoneSpec(3, 0, 0, "everyone", 1, 400.0)),
    ]:
        model.apply(index, op)
    shared = index._shapes.size - len(index._shapes._free)
    assert shared == 1  # one outline for two zones with equal coordinates
    before = index.classify(fixes_for(town))
    model.apply(index, ("upsert", ZoneSpec(1, 5, 0, "s1", 0, 50.0)))  # a new geometry for zone 1
    after, fresh = classify_both(index, model)
    assert_same(after, fresh)
    keep = before.zone_id != 1
    again = index.classify(fixes_for(town))
    assert np.array_equal(again.distance_m[again.zone_id != 1], before.distance_m[keep])


def test_scheduled_zones_added_after_a_batch_was_classified() -> None:
    """Regression: the schedule tables were compiled for the slots that existed at the first
    batch; a scheduled zone in a slot added later made the next batch fail with an IndexError."""
    town = "cape_town"
    index = ZoneIndex()
    model = Model(town)
    model.apply(index, ("upsert", ZoneSpec(1, 0, 2, "s1", 2, None)))  # curfew with an exception
    assert_same(*classify_both(index, model))
    for zone_id in range(2, 60):
        model.apply(
            index, ("upsert", ZoneSpec(zone_id, zone_id % 7, 1, f"s{zone_id % 4 + 1}", 1, None))
        )
    assert_same(*classify_both(index, model))


# ------------------------------------------------------------------ the benchmark, small


def test_bench_geofence_runs_small_and_reports_its_figures() -> None:
    from tagwatch.bench import geofence as bench_geofence

    out = io.StringIO()
    started = time.perf_counter()
    with redirect_stdout(out):
        figures = bench_geofence.run(
            subjects=30, global_zones=10, fixes=2_000, seed=3, naive_sample=200
        )
    elapsed = time.perf_counter() - started
    assert elapsed < 10.0
    for key in (
        "fixes_per_s",
        "naive_fixes_per_s",
        "ratio",
        "index_mb",
        "build_s",
        "build_cpu_s",
        "pairs_per_fix",
    ):
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    text = out.getvalue()
    assert "national set: 30 subjects" in text
    assert "fixes/s" in text and "naive loop" in text and "MB" in text


def test_bench_geofence_main_parses_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    from tagwatch.bench import geofence as bench_geofence

    bench_geofence.main(
        ["--subjects", "20", "--global-zones", "5", "--fixes", "1000", "--naive-sample", "100"]
    )
    printed = capsys.readouterr().out
    assert "national set: 20 subjects" in printed and "vectorized:" in printed


def test_zones_with_equal_geojson_share_one_copy_of_it() -> None:
    """Zones read from the database bring one GeoJSON object each; a district shared by many
    subjects is kept once, whatever the order of the zones, and a different geometry is not
    taken for it (strings and booleans are judged by check_zone, not packed as numbers)."""
    ring = [[18.40, -33.90], [18.43, -33.90], [18.43, -33.92], [18.40, -33.92], [18.40, -33.90]]
    index = ZoneIndex()
    for subject in (1, 2, 3):
        index.set_subject(subject, timezone="Africa/Johannesburg")
        geometry = {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}
        index.upsert(Zone(subject, ZoneKind.INCLUSION, geometry, subject_id=subject))
    first = index.get(1).geometry
    assert index.get(2).geometry is first and index.get(3).geometry is first
    moved = [[p[0] + 0.01, p[1]] for p in ring]
    index.upsert(
        Zone(4, ZoneKind.INCLUSION, {"type": "Polygon", "coordinates": [moved]}, subject_id=1)
    )
    assert index.get(4).geometry is not first
    as_text = [[str(p[0]), str(p[1])] for p in ring]
    with pytest.raises(ZoneValidationError):
        index.upsert(
            Zone(5, ZoneKind.INCLUSION, {"type": "Polygon", "coordinates": [as_text]}, subject_id=1)
        )
