"""`tagwatch bench geofence`: fixes per second through the geofence core, beside a naive loop.

The set is national and realistic in size and shape (a South-Africa-sized country, one time zone):

* districts: a 20 x 20 grid over the country, each a ragged polygon of about 240 vertices
  (simplified municipal boundaries), shared by every subject who lives there;
* per subject: a home curfew zone (a 30-100 m circle, or a house-plot polygon of 4-8 vertices)
  with a 19:00-07:00 schedule (some with weekday variants and dated exceptions), one or two
  exclusion zones 2-15 km from home (a 500 m circle around a victim's home, or a school/park
  polygon of 5-15 vertices and 100-400 m across, with a 200-500 m warning band), and the
  inclusion district of the home;
* 1,000 global exclusion zones (schools, courts) near cities, a quarter of them for one group;
* homes cluster around 20 cities; fixes are near home (60 %), near an exclusion zone (20 %),
  wandering within 10 km (15 %) or near a global zone (5 %), with GPS-like accuracy (lognormal
  around 8 m, a tail of Wi-Fi/cell fixes up to 2 km) over a week of times.

Measured in the same run: the vectorized classifier on one core (batches of BATCH fixes), and a
naive per-fix loop over each subject's zones the way a simple tracking server does it (pyproj per
fix, Shapely per zone, zoneinfo per schedule) on a sample of fixes.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import resource
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyproj
import shapely

from tagwatch.geofence import (
    FixBatch,
    Schedule,
    ScheduleException,
    WeeklyWindow,
    Zone,
    ZoneIndex,
    ZoneKind,
    ZoneValidationError,
)
from tagwatch.ingest.collector import DEFAULT_YOUNG_THRESHOLD, settle
from tagwatch.store.engine_repository import shared_json

TIMEZONE = "Africa/Johannesburg"
LON_RANGE = (17.0, 32.0)
LAT_RANGE = (-34.0, -23.0)
DISTRICT_GRID = 20
BATCH = 65_536
NAIVE_SAMPLE = 3_000
GEOD = pyproj.Geod(ellps="WGS84")
START = datetime(2026, 11, 23, tzinfo=UTC).timestamp()

CURFEW = Schedule(weekly=(WeeklyWindow("19:00", "07:00"),))
CURFEW_WEEKDAYS = Schedule(
    weekly=(
        WeeklyWindow("20:00", "06:00", days=(0, 1, 2, 3, 6)),
        WeeklyWindow("22:00", "06:00", days=(4, 5)),
    )
)


def _ring(lon: float, lat: float, radii: np.ndarray, rng: np.random.Generator) -> list[list[float]]:
    """A star-shaped ring around (lon, lat) with the given radii (metres), at jittered but well
    separated angles so that rounding cannot fold it."""
    n = radii.size
    angles = (np.arange(n) + rng.uniform(0.2, 0.8, n)) * (360.0 / n)
    lons, lats, _ = GEOD.fwd(np.full(n, lon), np.full(n, lat), angles, radii)
    ring = np.column_stack((lons, lats)).round(7).tolist()
    return [*ring, ring[0]]


def _district(col: int, row: int, rng: np.random.Generator) -> dict[str, Any]:
    lon0, lon1 = LON_RANGE
    lat0, lat1 = LAT_RANGE
    w = (lon1 - lon0) / DISTRICT_GRID
    h = (lat1 - lat0) / DISTRICT_GRID
    x0, y0 = lon0 + col * w, lat0 + row * h
    per_side = 60
    t = np.linspace(0.0, 1.0, per_side, endpoint=False)
    sides = [
        (x0 + t * w, np.full(per_side, y0)),
        (np.full(per_side, x0 + w), y0 + t * h),
        (x0 + w - t * w, np.full(per_side, y0 + h)),
        (np.full(per_side, x0), y0 + h - t * h),
    ]
    lons = np.concatenate([s[0] for s in sides])
    lats = np.concatenate([s[1] for s in sides])
    # Ragged edges: a smooth random wobble of a few kilometres towards and away from the centre.
    cx, cy = x0 + w / 2, y0 + h / 2
    wobble = 1.0 + 0.12 * np.convolve(rng.normal(size=lons.size + 8), np.ones(9) / 3, "valid")
    lons = cx + (lons - cx) * wobble
    lats = cy + (lats - cy) * wobble
    ring = np.column_stack((lons, lats)).round(6).tolist()
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def _district_of(lon: float, lat: float) -> tuple[int, int]:
    col = int((lon - LON_RANGE[0]) / (LON_RANGE[1] - LON_RANGE[0]) * DISTRICT_GRID)
    row = int((lat - LAT_RANGE[0]) / (LAT_RANGE[1] - LAT_RANGE[0]) * DISTRICT_GRID)
    return min(max(col, 0), DISTRICT_GRID - 1), min(max(row, 0), DISTRICT_GRID - 1)


class NationalSet:
    """The zones, subjects and fixes of the benchmark, reproducible from a seed."""

    def __init__(self, subjects: int, global_zones: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.subject_ids = np.arange(1, subjects + 1, dtype=np.int64) * 7 + 1000
        cities = np.column_stack(
            (
                rng.uniform(*LON_RANGE, 20) * 0.8 + 0.2 * np.mean(LON_RANGE),
                rng.uniform(*LAT_RANGE, 20) * 0.8 + 0.2 * np.mean(LAT_RANGE),
            )
        )
        self.cities = cities
        city = rng.integers(0, cities.shape[0], subjects)
        rural = rng.random(subjects) < 0.2
        spread = rng.normal(size=(subjects, 2)) * 0.1
        homes = cities[city] + spread
        self.city = np.where(rural, -1, city)
        homes[rural, 0] = rng.uniform(*LON_RANGE, int(rural.sum()))
        homes[rural, 1] = rng.uniform(*LAT_RANGE, int(rural.sum()))
        homes[:, 0] = np.clip(homes[:, 0], LON_RANGE[0] + 0.05, LON_RANGE[1] - 0.05)
        homes[:, 1] = np.clip(homes[:, 1], LAT_RANGE[0] + 0.05, LAT_RANGE[1] - 0.05)
        self.homes = homes
        self.districts = {
            (c, r): _district(c, r, rng) for c in range(DISTRICT_GRID) for r in range(DISTRICT_GRID)
        }
        self.zones: list[Zone] = []
        self.zones_of: dict[int, list[Zone]] = {}
        self.exclusion_centres: list[tuple[int, float, float]] = []
        self.groups: dict[int, tuple[str, ...]] = {}
        zone_id = 1
        for i, subject in enumerate(self.subject_ids.tolist()):
            lon, lat = float(homes[i, 0]), float(homes[i, 1])
            own: list[Zone] = []
            schedule = CURFEW
            roll = rng.random()
            if roll < 0.15:
                schedule = CURFEW_WEEKDAYS
            elif roll < 0.2:
                schedule = Schedule(
                    weekly=CURFEW.weekly,
                    exceptions=(
                        ScheduleException("2026-11-25T19:00", "2026-11-25T23:00", active=False),
                    ),
                )
            if rng.random() < 0.7:
                geometry: dict[str, Any] = {"type": "Point", "coordinates": [lon, lat]}
                own.append(
                    Zone(
                        zone_id,
                        ZoneKind.CURFEW,
                        geometry,
                        radius_m=float(rng.uniform(30, 100)),
                        subject_id=subject,
                        schedule=schedule,
                    )
                )
            else:
                radii = rng.uniform(15.0, 40.0, int(rng.integers(4, 9)))
                geometry = {"type": "Polygon", "coordinates": [_ring(lon, lat, radii, rng)]}
                own.append(
                    Zone(zone_id, ZoneKind.CURFEW, geometry, subject_id=subject, schedule=schedule)
                )
            zone_id += 1
            for _ in range(int(rng.integers(1, 3))):
                lon_e, lat_e, _ = GEOD.fwd(lon, lat, rng.uniform(0, 360), rng.uniform(2e3, 15e3))
                buffer = float(rng.uniform(200, 500))
                if rng.random() < 0.5:
                    geometry = {"type": "Point", "coordinates": [lon_e, lat_e]}
                    zone = Zone(
                        zone_id,
                        ZoneKind.EXCLUSION,
                        geometry,
                        radius_m=500.0,
                        buffer_m=buffer,
                        subject_id=subject,
                    )
                else:
                    size = rng.uniform(50.0, 200.0)
                    radii = size * rng.uniform(0.6, 1.0, int(rng.integers(5, 16)))
                    geometry = {"type": "Polygon", "coordinates": [_ring(lon_e, lat_e, radii, rng)]}
                    zone = Zone(
                        zone_id, ZoneKind.EXCLUSION, geometry, buffer_m=buffer, subject_id=subject
                    )
                own.append(zone)
                self.exclusion_centres.append((i, lon_e, lat_e))
                zone_id += 1
            own.append(
                Zone(
                    zone_id,
                    ZoneKind.INCLUSION,
                    self.districts[_district_of(lon, lat)],
                    subject_id=subject,
                )
            )
            zone_id += 1
            self.zones.extend(own)
            self.zones_of[subject] = own
            self.groups[subject] = ("sex_offence",) if rng.random() < 0.1 else ()
        self.global_centres = np.empty((global_zones, 2))
        self.global_city = rng.integers(0, cities.shape[0], global_zones)
        self.global_zones: list[Zone] = []
        for g in range(global_zones):
            c = cities[int(self.global_city[g])] + rng.normal(size=2) * 0.12
            lon, lat = float(c[0]), float(c[1])
            self.global_centres[g] = (lon, lat)
            group = "sex_offence" if g % 4 == 0 else None
            if rng.random() < 0.5:
                geometry = {"type": "Point", "coordinates": [lon, lat]}
                zone = Zone(
                    zone_id,
                    ZoneKind.EXCLUSION,
                    geometry,
                    radius_m=float(rng.uniform(100, 400)),
                    buffer_m=200.0,
                    group=group,
                )
            else:
                radii = rng.uniform(80.0, 250.0, int(rng.integers(5, 16)))
                geometry = {"type": "Polygon", "coordinates": [_ring(lon, lat, radii, rng)]}
                zone = Zone(zone_id, ZoneKind.EXCLUSION, geometry, buffer_m=200.0, group=group)
            self.global_zones.append(zone)
            zone_id += 1
        self.zones.extend(self.global_zones)

    def fixes(self, n: int) -> FixBatch:
        rng = self.rng
        who = rng.integers(0, self.subject_ids.size, n)
        kind = rng.random(n)
        lon = self.homes[who, 0].copy()
        lat = self.homes[who, 1].copy()
        distance = np.abs(rng.normal(size=n)) * 80.0
        near_exclusion = kind >= 0.6
        near_exclusion &= kind < 0.8
        centres = np.asarray([(c[1], c[2]) for c in self.exclusion_centres])
        owner = np.asarray([c[0] for c in self.exclusion_centres])
        first_of = np.searchsorted(owner, who)
        pick = np.minimum(first_of, owner.size - 1)
        lon[near_exclusion] = centres[pick[near_exclusion], 0]
        lat[near_exclusion] = centres[pick[near_exclusion], 1]
        distance[near_exclusion] = rng.uniform(0, 1500, int(near_exclusion.sum()))
        wander = (kind >= 0.8) & (kind < 0.95)
        distance[wander] = rng.uniform(0, 10_000, int(wander.sum()))
        # Near a global zone of the subject's own city (rural subjects stay near home).
        near_global = (kind >= 0.95) & (self.city[who] >= 0)
        by_city = np.argsort(self.global_city, kind="stable")
        city_start = np.searchsorted(self.global_city[by_city], np.arange(self.cities.shape[0]))
        city_count = np.bincount(self.global_city, minlength=self.cities.shape[0])
        their_city = self.city[who[near_global]]
        has_zone = city_count[their_city] > 0
        offset = (rng.random(their_city.size) * np.maximum(city_count[their_city], 1)).astype(int)
        g = by_city[np.minimum(city_start[their_city] + offset, by_city.size - 1)]
        chosen = np.flatnonzero(near_global)[has_zone]
        lon[chosen] = self.global_centres[g[has_zone], 0]
        lat[chosen] = self.global_centres[g[has_zone], 1]
        distance[chosen] = rng.uniform(0, 800, chosen.size)
        lon, lat, _ = GEOD.fwd(lon, lat, rng.uniform(0, 360, n), distance)
        acc = np.exp(rng.normal(np.log(8.0), 0.6, n))
        tail = rng.random(n) < 0.03
        acc[tail] = rng.uniform(30, 2000, int(tail.sum()))
        when = START + rng.uniform(0, 7 * 86_400, n)
        return FixBatch(self.subject_ids[who], lon, lat, acc, when)


class NaiveTracker:
    """Per fix, per zone: what a simple tracking server does. Polygons are kept projected to the
    UTM zone of their centre (one cached pyproj Transformer per UTM zone); each fix is projected
    with a scalar pyproj call per zone, then Shapely answers contains and distance; circles use
    pyproj.Geod; schedules are read with zoneinfo per fix. Global zones come from an STRtree query
    per fix."""

    def __init__(self, zones_of: dict[int, list[Zone]], global_zones: list[Zone]) -> None:
        self._transformers: dict[int, pyproj.Transformer] = {}
        self.zones_of = {s: [self._prepare(z) for z in zones] for s, zones in zones_of.items()}
        self.global_zones = [self._prepare(z) for z in global_zones]
        boxes = [shapely.box(*shapely.bounds(g[5]).tolist()) for g in self.global_zones]
        self.tree = shapely.STRtree(boxes)
        self.zone_info = ZoneInfo(TIMEZONE)

    def _transformer(self, lon: float, lat: float) -> tuple[int, pyproj.Transformer]:
        epsg = (32600 if lat >= 0 else 32700) + int((lon + 180) // 6) + 1
        if epsg not in self._transformers:
            self._transformers[epsg] = pyproj.Transformer.from_crs(4326, epsg, always_xy=True)
        return epsg, self._transformers[epsg]

    def _prepare(self, zone: Zone) -> tuple[Any, ...]:
        geometry = zone.geometry or {}
        if geometry.get("type") == "Point":
            lon, lat = geometry["coordinates"]
            reach = (zone.radius_m or 0) + (zone.buffer_m or 0) + 2000
            bbox = shapely.Point(lon, lat).buffer(reach / 100_000)
            return (zone, "circle", lon, lat, None, bbox)
        ring = geometry["coordinates"][0]
        lonlat = shapely.Polygon(ring)
        centroid = lonlat.centroid
        _, transformer = self._transformer(centroid.x, centroid.y)
        xs, ys = transformer.transform(*np.asarray(ring).T)
        projected = shapely.Polygon(np.column_stack((xs, ys)))
        shapely.prepare(projected)
        reach = (zone.buffer_m or 0) + 2000
        return (
            zone,
            "polygon",
            transformer,
            projected,
            projected.exterior,
            lonlat.buffer(reach / 100_000),
        )

    def _active(self, zone: Zone, when: float) -> bool:
        schedule = zone.schedule
        if schedule is None:
            return True
        local = datetime.fromtimestamp(when, self.zone_info)
        minute = local.hour * 60 + local.minute
        for window in schedule.weekly:
            start = int(window.start[:2]) * 60 + int(window.start[3:5])
            end = int(window.end[:2]) * 60 + int(window.end[3:5])
            today = local.weekday() in window.days
            yesterday = (local.weekday() - 1) % 7 in window.days
            if end > start and today and start <= minute < end:
                return True
            if end <= start and ((today and minute >= start) or (yesterday and minute < end)):
                return True
        return False

    def _measure(
        self, prepared: tuple[Any, ...], lon: float, lat: float, acc: float
    ) -> tuple[int, float]:
        zone, kind = prepared[0], prepared[1]
        if kind == "circle":
            _, _, d = GEOD.inv(lon, lat, prepared[2], prepared[3])
            signed = d - (zone.radius_m or 0.0)
        else:
            x, y = prepared[2].transform(lon, lat)
            point = shapely.Point(x, y)
            d = prepared[4].distance(point)
            signed = -d if prepared[3].contains(point) else d
        state = 1 if signed < -acc else 0 if signed > acc else 2
        return state, signed

    def classify(self, fixes: FixBatch) -> list[tuple[int, int, int, float, bool]]:
        out = []
        for i in range(len(fixes)):
            subject = int(fixes.subject_id[i])
            lon, lat = float(fixes.lon[i]), float(fixes.lat[i])
            acc, when = float(fixes.acc[i]), float(fixes.time[i])
            for prepared in self.zones_of.get(subject, ()):
                state, signed = self._measure(prepared, lon, lat, acc)
                out.append((i, prepared[0].zone_id, state, signed, self._active(prepared[0], when)))
            for g in self.tree.query(shapely.Point(lon, lat)):
                prepared = self.global_zones[int(g)]
                state, signed = self._measure(prepared, lon, lat, acc)
                if signed <= acc + (prepared[0].buffer_m or 0.0):
                    out.append((i, prepared[0].zone_id, state, signed, True))
        return out


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_now_mb() -> float:
    """Resident memory now (Linux), after the build's inputs are gone: what ingest keeps."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return float("nan")


def _as_read(zone: Zone, decoded: dict[str, Any]) -> Zone:
    """The zone as ingest reads it from the database: its GeoJSON decoded from the text the
    database sends, once per distinct text, as store.engine_repository.zones_since does (the
    generator shares one object per district between subjects; the database does not, and the
    store's sharing is what the index's build relies on)."""
    if zone.geometry is None:
        return zone
    return dataclasses.replace(zone, geometry=shared_json(json.dumps(zone.geometry), decoded))


def run(
    subjects: int = 100_000,
    global_zones: int = 1_000,
    fixes: int = 1_000_000,
    seed: int = 1,
    echo: Callable[[str], Any] = print,
    *,
    naive_sample: int = NAIVE_SAMPLE,
) -> dict[str, float]:
    """Build the national set, measure, print the figures and return them. The process runs on
    one core while it measures (its CPU affinity is restored afterwards)."""
    pinned = hasattr(os, "sched_setaffinity")
    if pinned:
        cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(cores)})  # one core, honestly
    try:
        return _measure(subjects, global_zones, fixes, seed, echo, naive_sample)
    finally:
        if pinned:
            os.sched_setaffinity(0, cores)


def _measure(
    subjects: int,
    global_zones: int,
    fixes: int,
    seed: int,
    echo: Callable[[str], Any],
    naive_sample: int,
) -> dict[str, float]:
    t0 = time.perf_counter()
    national = NationalSet(subjects, global_zones, seed)
    generated = time.perf_counter() - t0
    echo(
        f"national set: {subjects:,} subjects, {len(national.zones):,} zones "
        f"({global_zones:,} global), generated in {generated:.1f} s"
    )
    # As ingest reads them: a GeoJSON object per distinct geometry text the database sends.
    decoded: dict[str, Any] = {}
    as_read = [_as_read(zone, decoded) for zone in national.zones]
    del decoded
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    index = ZoneIndex()
    for subject in national.subject_ids.tolist():
        index.set_subject(subject, timezone=TIMEZONE, groups=national.groups[subject])
    refused = [r for r in index.upsert_many(as_read) if isinstance(r, ZoneValidationError)]
    if refused:
        raise refused[0]
    build_s = time.perf_counter() - t0
    build_cpu_s = time.process_time() - cpu0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    build_sys_s = usage1.ru_stime - usage0.ru_stime
    index_mb = index.nbytes() / 1e6
    del as_read
    echo(
        f"index: built in {build_s:.1f} s ({build_cpu_s:.1f} s of CPU, {build_sys_s:.1f} of it in "
        f"the kernel: {usage1.ru_minflt - usage0.ru_minflt:,} page faults), {index_mb:.0f} MB "
        f"of arrays "
        f"(peak RSS grew by {_rss_mb() - rss_before:.0f} MB; RSS now {_rss_now_mb():.0f} MB)"
    )

    batches = [national.fixes(min(BATCH, fixes - start)) for start in range(0, fixes, BATCH)]
    # As an ingest worker does once its catalogue is loaded (ingest/collector.py): freeze what is
    # alive and raise the young threshold. With Python's defaults a full collection walked the
    # national set's millions of objects every couple of million fixes, 1.2 s each time.
    # The process's own settings come back afterwards (a test may run this in its process).
    before = gc.get_threshold()
    thresholds = settle(DEFAULT_YOUNG_THRESHOLD)
    echo(f"collector: settled as an ingest worker's (thresholds {thresholds})")
    try:
        index.classify(batches[0])  # compile lazy tables, warm caches
        rows = 0
        t0 = time.perf_counter()
        for batch in batches:
            rows += len(index.classify(batch))
        vectorized_s = time.perf_counter() - t0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    vectorized = fixes / vectorized_s
    echo(
        f"vectorized: {fixes:,} fixes in {vectorized_s:.2f} s = {vectorized:,.0f} fixes/s "
        f"on one core ({rows / fixes:.2f} zone pairs per fix, batches of {BATCH:,})"
    )

    sample = national.fixes(naive_sample)
    # Only the sampled subjects' zones are prepared (untimed, as a server would have them ready):
    # preparing all 351,031 took three minutes of the benchmark's wall time for nothing.
    sampled = set(sample.subject_id.tolist())
    naive = NaiveTracker(
        {s: zones for s, zones in national.zones_of.items() if s in sampled},
        national.global_zones,
    )
    t0 = time.perf_counter()
    naive.classify(sample)
    naive_s = time.perf_counter() - t0
    naive_rate = naive_sample / naive_s
    ratio = vectorized / naive_rate
    echo(
        f"naive loop: {naive_sample:,} fixes in {naive_s:.2f} s = {naive_rate:,.0f} fixes/s "
        f"-> vectorized is {ratio:.0f}x faster"
    )
    target = 1_000_000
    if vectorized >= target and ratio >= 8:
        echo("targets met: >= 1,000,000 fixes/s on one core and >= 8x the naive loop")
    else:
        echo(
            f"targets: {vectorized / target:.0%} of 1,000,000 fixes/s, "
            f"{ratio:.1f}x of the 8x over the naive loop (see docs/geofence.md)"
        )
    return {
        "fixes_per_s": vectorized,
        "naive_fixes_per_s": naive_rate,
        "ratio": ratio,
        "index_mb": index_mb,
        "build_s": build_s,
        "build_cpu_s": build_cpu_s,
        "build_sys_s": build_sys_s,
        "pairs_per_fix": rows / fixes,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--global-zones", type=int, default=1_000)
    parser.add_argument("--fixes", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--naive-sample", type=int, default=NAIVE_SAMPLE, help="fixes timed through the naive loop"
    )
    args = parser.parse_args(argv)
    run(args.subjects, args.global_zones, args.fixes, args.seed, naive_sample=args.naive_sample)


if __name__ == "__main__":
    main()


__all__ = ["NaiveTracker", "NationalSet", "run"]
