"""The zone model and its validation: what a zone is, and what we refuse to guess.

A zone's boundary is a legal line drawn by a supervisor or taken from a court order, so the core
never silently changes it. Validation either accepts a geometry as drawn (after normalizations that
do not move the boundary: orientation, repeated vertices, parts that merely touch - for example the
two halves of a zone split at the antimeridian - merged into one) or refuses it with reasons a
person can act on. Repairing an invalid polygon (a bow-tie, a hole outside its shell, overlapping
parts) changes what it means, so it happens only when the caller asks for it (``repair=True``, for
example after showing the repaired shape to the person who drew it), and the repairs are reported.

Edges are straight lines in longitude/latitude, as RFC 7946 defines them, and a ring's consecutive
vertices are joined the short way round, so a ring may cross the antimeridian without being split.
Zones must lie within +-85 deg latitude and reach at most 75 km from their centre (a district, a
city; see docs/geofence.md for why and how to express larger areas); buffers are at most 10 km.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

from tagwatch.geofence._edges import SMALL_BATCH, rings_of
from tagwatch.geofence._projection import FRAME_WIDTH, frame_params, lonlat_to_frame
from tagwatch.geofence.schedule import Schedule, ScheduleError

FloatArray = npt.NDArray[np.float64]

MAX_LATITUDE = 85.0
MAX_ZONE_REACH_M = 75_000.0
MAX_BUFFER_M = 10_000.0
MIN_RADIUS_M = 1.0
MIN_AREA_M2 = 1.0
DENSIFY_TOLERANCE_M = 0.02
MAX_ZONE_ID = (1 << 60) - 1


class ZoneKind(StrEnum):
    EXCLUSION = "exclusion"
    INCLUSION = "inclusion"
    CURFEW = "curfew"
    VICTIM = "victim"

    @property
    def code(self) -> int:
        return _KIND_CODE[self]  # a dict, not an enum lookup: read once per zone added


class KindCode(IntEnum):
    """Kinds as they appear in result arrays; the value is also the order of overlapping zones
    for one fix (a victim at risk first, a curfew last)."""

    VICTIM = 0
    EXCLUSION = 1
    INCLUSION = 2
    CURFEW = 3


_KIND_CODE = {kind: int(KindCode[kind.name]) for kind in ZoneKind}


class ZoneValidationError(ValueError):
    """A zone that cannot be used as given; ``reasons`` are sentences for the person who drew it."""

    def __init__(self, reasons: Sequence[str], zone_id: int | None = None) -> None:
        self.reasons = list(reasons)
        self.zone_id = zone_id
        prefix = f"zone {zone_id}: " if zone_id is not None else ""
        super().__init__(prefix + "; ".join(self.reasons))


@dataclass(frozen=True, slots=True, eq=False)
class Zone:
    """A zone as the rest of tagwatch stores it.

    ``geometry`` is GeoJSON: a ``Polygon`` or ``MultiPolygon`` (holes allowed), or a ``Point`` with
    ``radius_m``. A ``victim`` zone has no geometry: it is a circle of ``radius_m`` around the
    victim's latest fix, which the caller passes with each batch. ``buffer_m`` is the warning band
    outside an exclusion or victim zone. The owner is one subject (``subject_id``), a group
    (``group``), or, with neither, every subject.
    """

    zone_id: int
    kind: ZoneKind
    geometry: Mapping[str, Any] | None = None
    radius_m: float | None = None
    buffer_m: float | None = None
    subject_id: int | None = None
    group: str | None = None
    schedule: Schedule | None = None

    @property
    def is_global(self) -> bool:
        return self.subject_id is None

    @property
    def is_circle(self) -> bool:
        return self.kind is ZoneKind.VICTIM or (
            self.geometry is not None and self.geometry.get("type") == "Point"
        )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Zone:
        """The API's JSON shape: the dataclass fields, ``kind`` as a string, ``schedule`` as
        Schedule.from_json takes it."""
        try:
            schedule = obj.get("schedule")
            return cls(
                zone_id=int(obj["zone_id"]),
                kind=ZoneKind(obj["kind"]),
                geometry=obj.get("geometry"),
                radius_m=None if obj.get("radius_m") is None else float(obj["radius_m"]),
                buffer_m=None if obj.get("buffer_m") is None else float(obj["buffer_m"]),
                subject_id=None if obj.get("subject_id") is None else int(obj["subject_id"]),
                group=obj.get("group"),
                schedule=None if schedule is None else Schedule.from_json(schedule),
            )
        except ScheduleError as exc:
            raise ZoneValidationError([f"schedule: {exc}"], obj.get("zone_id")) from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise ZoneValidationError([f"malformed zone: {exc}"], obj.get("zone_id")) from exc


@dataclass(frozen=True, slots=True)
class Circle:
    lon: float
    lat: float
    radius_m: float


@dataclass(frozen=True, slots=True)
class Outline:
    """A polygon zone in its own local frame, ready for the classifier."""

    key: bytes  # identity of the normalized geometry, shared by identical zones
    frame: FloatArray  # one frame parameter row (see _projection)
    polygon: BaseGeometry  # Polygon or MultiPolygon in frame metres, exterior rings CCW
    lonlat_bounds: tuple[float, float, float, float]  # unwrapped: lon may leave [-180, 180]
    reach_m: float  # farthest vertex from the frame centre


@dataclass(frozen=True, slots=True)
class CheckedZone:
    zone: Zone
    circle: Circle | None = None
    outline: Outline | None = None
    repairs: tuple[str, ...] = field(default_factory=tuple)


def check_zone(
    zone: Zone,
    *,
    repair: bool = False,
    known: Callable[[bytes], Outline | None] | None = None,
    prepared: tuple[Outline, tuple[str, ...]] | None = None,
) -> CheckedZone:
    """Validate a zone and prepare its geometry; raise ZoneValidationError with every reason.

    ``known`` looks up the prepared outline of an identical normalized geometry; ``prepared`` is
    the outline (and repairs) of this very geometry, already checked: only the attributes are.
    """
    reasons = _check_attributes(zone)
    if reasons:
        raise ZoneValidationError(reasons, zone.zone_id)
    if zone.kind is ZoneKind.VICTIM:
        return CheckedZone(zone)
    if prepared is not None:
        return CheckedZone(zone, outline=prepared[0], repairs=prepared[1])
    geometry = zone.geometry
    if not isinstance(geometry, Mapping):
        raise ZoneValidationError(["geometry is missing"], zone.zone_id)
    kind = geometry.get("type")
    try:
        if kind == "Point":
            return CheckedZone(zone, circle=_check_circle(zone, geometry))
        if kind in ("Polygon", "MultiPolygon"):
            parts = _parse_polygons(geometry)
            lonlat, repairs = _normalize(parts, repair)
            key = hashlib.blake2b(shapely.to_wkb(lonlat), digest_size=16).digest()
            outline = known(key) if known is not None else None
            if outline is None:
                outline = _outline(lonlat, key)
            return CheckedZone(zone, outline=outline, repairs=tuple(repairs))
    except _Invalid as exc:
        raise ZoneValidationError(exc.reasons, zone.zone_id) from None
    raise ZoneValidationError(
        [f"geometry type {kind!r} is not Polygon, MultiPolygon or Point"], zone.zone_id
    )


def validate_zone(zone: Zone, *, repair: bool = False) -> tuple[str, ...]:
    """For the API: raise ZoneValidationError, or return the repairs made (empty if none)."""
    return check_zone(zone, repair=repair).repairs


def check_area(geometry: object, *, repair: bool = False) -> tuple[BaseGeometry, tuple[str, ...]]:
    """A Polygon or MultiPolygon of any size, checked by the rules of a zone's boundary.

    For areas that are not zones (a region's demarcation, an office's service area): the same
    parsing, ring and validity rules and the same reasons, but no 75 km reach limit, since a
    region spans hundreds of kilometres and the classifier's metric frame is never built for it.
    Returns the normalized geometry in lon/lat (longitudes unwrapped: a ring that crosses the
    antimeridian may leave -180..180) and the repairs made. Raises ZoneValidationError.
    """
    if not isinstance(geometry, Mapping):
        raise ZoneValidationError(["geometry must be a GeoJSON object"])
    kind = geometry.get("type")
    if kind not in ("Polygon", "MultiPolygon"):
        raise ZoneValidationError([f"geometry type {kind!r} is not Polygon or MultiPolygon"])
    try:
        lonlat, repairs = _normalize(_parse_polygons(geometry), repair)
    except _Invalid as exc:
        raise ZoneValidationError(exc.reasons) from None
    return lonlat, tuple(repairs)


class _Invalid(Exception):
    def __init__(self, *reasons: str) -> None:
        self.reasons = list(reasons)


def _positive(value: float | None, name: str, limit: float, reasons: list[str]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        reasons.append(f"{name} must be a finite number of metres")
    elif value <= 0:
        reasons.append(f"{name} must be positive (got {value:g})")
    elif value > limit:
        reasons.append(f"{name} of {value:g} m is larger than the {limit:g} m limit")


def _check_attributes(zone: Zone) -> list[str]:
    reasons: list[str] = []
    if isinstance(zone.zone_id, bool) or not isinstance(zone.zone_id, int):
        reasons.append("zone_id must be an integer")
    elif not 0 <= zone.zone_id <= MAX_ZONE_ID:
        reasons.append("zone_id must be between 0 and 2**60 - 1")
    if not isinstance(zone.kind, ZoneKind):
        reasons.append(f"kind {zone.kind!r} is not one of {[k.value for k in ZoneKind]}")
        return reasons
    if zone.subject_id is not None and (
        isinstance(zone.subject_id, bool)
        or not isinstance(zone.subject_id, int)
        or not -(2**63) <= zone.subject_id < 2**63
    ):
        reasons.append("subject_id must be a 64-bit integer")
    if zone.subject_id is not None and zone.group is not None:
        reasons.append("a zone belongs to one subject or to a group, not both")
    if zone.group is not None and (not isinstance(zone.group, str) or not zone.group):
        reasons.append("group must be a non-empty string")
    _positive(zone.buffer_m, "buffer_m", MAX_BUFFER_M, reasons)
    if zone.buffer_m is not None and zone.kind not in (ZoneKind.EXCLUSION, ZoneKind.VICTIM):
        reasons.append(
            f"buffer_m is a warning band outside exclusion and victim zones, not {zone.kind}"
        )
    if zone.kind is ZoneKind.CURFEW and zone.schedule is None:
        reasons.append("a curfew zone needs a schedule")
    if zone.schedule is not None and not isinstance(zone.schedule, Schedule):
        reasons.append("schedule must be a Schedule")
    if zone.kind is ZoneKind.VICTIM:
        if zone.subject_id is None:
            reasons.append("a victim zone belongs to the subject it protects the victim from")
        if zone.geometry is not None:
            reasons.append("a victim zone has no geometry: it follows the victim's phone")
        if zone.radius_m is None:
            reasons.append("a victim zone needs radius_m")
    elif zone.geometry is not None and zone.geometry.get("type") == "Point":
        if zone.radius_m is None:
            reasons.append("a Point zone needs radius_m")
    elif zone.radius_m is not None:
        reasons.append("radius_m belongs to Point and victim zones only")
    _positive(zone.radius_m, "radius_m", MAX_ZONE_REACH_M, reasons)
    if zone.radius_m is not None and 0 < zone.radius_m < MIN_RADIUS_M:
        reasons.append(f"radius_m of {zone.radius_m:g} m is smaller than {MIN_RADIUS_M:g} m")
    return reasons


def _position(value: object, where: str) -> tuple[float, float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) not in (2, 3):
        raise _Invalid(f"{where}: a position is [lon, lat] (optionally with altitude)")
    lon, lat = value[0], value[1]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lon, lat)):
        raise _Invalid(f"{where}: coordinates must be numbers")
    lon_f, lat_f = float(lon), float(lat)
    if not (math.isfinite(lon_f) and math.isfinite(lat_f)):
        raise _Invalid(f"{where}: coordinates must be finite")
    if not -180.0 <= lon_f <= 180.0:
        raise _Invalid(f"{where}: longitude {lon_f:g} is outside -180..180")
    if not -90.0 <= lat_f <= 90.0:
        raise _Invalid(f"{where}: latitude {lat_f:g} is outside -90..90")
    if abs(lat_f) > MAX_LATITUDE:
        raise _Invalid(
            f"{where}: latitude {lat_f:g} is beyond +-{MAX_LATITUDE:g}, where zones are unsupported"
        )
    return lon_f, lat_f


def _positions(ring: Sequence[Any], where: str) -> FloatArray:
    """Positions of a ring as an (n, 2) array; vectorized, with the slow per-position checks
    (which name the offending value) only when something is wrong."""
    try:
        raw = np.asarray(ring)
    except (TypeError, ValueError):
        raw = np.zeros((0, 0))
    # Only numbers take the fast path: NumPy would read "18.4" as 18.4, JSON does not.
    points = raw.astype(np.float64) if raw.dtype.kind in "iuf" else np.zeros((0, 0))
    if points.ndim == 2 and points.shape[1] in (2, 3):
        lon = points[:, 0]
        lat = points[:, 1]
        if (
            np.isfinite(points[:, :2]).all()
            and (np.abs(lon) <= 180.0).all()
            and (np.abs(lat) <= MAX_LATITUDE).all()
        ):
            return np.ascontiguousarray(points[:, :2])
    return np.array([_position(v, where) for v in ring], dtype=np.float64)


def _check_circle(zone: Zone, geometry: Mapping[str, Any]) -> Circle:
    lon, lat = _position(geometry.get("coordinates"), "Point")
    assert zone.radius_m is not None  # _check_attributes made sure
    return Circle(lon, lat, float(zone.radius_m))


def _wrap(delta: FloatArray) -> FloatArray:
    return np.asarray((delta + 180.0) % 360.0 - 180.0, dtype=np.float64)


def _parse_polygons(geometry: Mapping[str, Any]) -> list[list[FloatArray]]:
    """GeoJSON to rings of unwrapped [lon, lat] arrays (closed), per polygon part."""
    coordinates = geometry.get("coordinates")
    if not isinstance(coordinates, Sequence) or isinstance(coordinates, str) or not coordinates:
        raise _Invalid("the geometry has no coordinates")
    polygons = [coordinates] if geometry.get("type") == "Polygon" else coordinates
    if not isinstance(polygons, Sequence) or not polygons:
        raise _Invalid("the geometry has no coordinates")
    reference: float | None = None
    parts: list[list[FloatArray]] = []
    for p, rings in enumerate(polygons):
        if not isinstance(rings, Sequence) or not rings:
            raise _Invalid(f"polygon {p} has no rings")
        parsed: list[FloatArray] = []
        for r, ring in enumerate(rings):
            where = f"polygon {p} ring {r}" if len(polygons) > 1 else f"ring {r}"
            if not isinstance(ring, Sequence) or len(ring) < 4:
                raise _Invalid(f"{where}: a ring needs at least 4 positions (closed)")
            points = _positions(ring, where)
            if not np.array_equal(points[0], points[-1]):
                raise _Invalid(f"{where}: the ring is not closed (first and last positions differ)")
            lon = points[:, 0]
            drift = lon[0] + np.concatenate(([0.0], np.cumsum(_wrap(np.diff(lon))))) - lon
            turns = np.round(drift / 360.0)  # whole turns added to each vertex, kept exact
            if turns[-1] != turns[0]:
                raise _Invalid(f"{where}: the ring goes round the globe")
            if reference is None:
                reference = float(lon[0])
            first = float(lon[0] + 360.0 * turns[0])
            turns += round(
                (reference + float(_wrap(np.array([first - reference]))[0]) - first) / 360.0
            )
            points[:, 0] = lon + 360.0 * turns
            distinct = np.unique(points[:-1], axis=0)
            if len(distinct) < 3:
                raise _Invalid(f"{where}: the ring is empty (fewer than 3 distinct positions)")
            parsed.append(points)
        parts.append(parsed)
    return parts


def _normalize(parts: list[list[FloatArray]], repair: bool) -> tuple[BaseGeometry, list[str]]:
    polygons = [shapely.Polygon(rings[0], rings[1:]) for rings in parts]
    repairs: list[str] = []
    problems = [
        (i, shapely.is_valid_reason(g)) for i, g in enumerate(polygons) if not shapely.is_valid(g)
    ]
    if len(polygons) > 1:
        total = sum(float(shapely.area(g)) for g in polygons)
        merged = shapely.union_all(polygons)
        if not problems and abs(float(shapely.area(merged)) - total) > 1e-9 * max(total, 1e-12):
            problems.append((-1, "parts of the MultiPolygon overlap"))
        geometry = merged
    else:
        geometry = polygons[0]
    if problems:
        described = [
            reason if i < 0 else (f"polygon {i}: {reason}" if len(polygons) > 1 else reason)
            for i, reason in problems
        ]
        if not repair:
            raise _Invalid(
                *(f"invalid polygon ({d})" for d in described),
                "pass repair=True to accept the repaired shape instead",
            )
        fixed = shapely.make_valid(
            shapely.MultiPolygon(polygons) if len(polygons) > 1 else polygons[0],
            method="structure",
            keep_collapsed=False,
        )
        fixed = shapely.union_all(_polygonal_parts(fixed))
        before = sum(float(shapely.area(g)) for g in polygons)
        repairs.extend(f"repaired {d}" for d in described)
        repairs.append(
            f"area in square degrees changed from {before:.6g} to {float(shapely.area(fixed)):.6g}"
        )
        geometry = fixed
    geometry = shapely.normalize(shapely.remove_repeated_points(geometry))
    if geometry.is_empty or float(shapely.area(geometry)) <= 0.0:
        raise _Invalid("the polygon is empty (no area)")
    return geometry, repairs


def _polygonal_parts(geometry: BaseGeometry) -> list[BaseGeometry]:
    parts = shapely.get_parts(geometry)
    out: list[BaseGeometry] = []
    for part in parts:
        if isinstance(part, shapely.Polygon | shapely.MultiPolygon):
            out.append(part)
        elif isinstance(part, shapely.GeometryCollection):
            out.extend(_polygonal_parts(part))
    return out


def densify_ring(lonlat: FloatArray, frame: FloatArray, tolerance: float) -> FloatArray:
    """Subdivide edges (straight in lon/lat) until, in the frame, each piece stays within
    ``tolerance`` metres of the curve it stands for. Returns closed frame coordinates."""
    lon, lat = lonlat[:, 0], lonlat[:, 1]
    for _ in range(40):
        x, y = lonlat_to_frame(lon, lat, frame)
        mid_lon = 0.5 * (lon[:-1] + lon[1:])
        mid_lat = 0.5 * (lat[:-1] + lat[1:])
        mx, my = lonlat_to_frame(mid_lon, mid_lat, frame)
        # Distance of the curve's midpoint from the chord's line (the sag).
        cx = x[1:] - x[:-1]
        cy = y[1:] - y[:-1]
        chord = np.hypot(cx, cy)
        cross = np.abs(cx * (my - y[:-1]) - cy * (mx - x[:-1]))
        sag = np.divide(cross, chord, out=np.zeros_like(cross), where=chord > 0)
        split = np.flatnonzero(sag > tolerance)
        if split.size == 0:
            return np.column_stack((x, y))
        lon = np.insert(lon, split + 1, mid_lon[split])
        lat = np.insert(lat, split + 1, mid_lat[split])
    msg = "densification did not converge"
    raise _Invalid(msg)


def _outline(lonlat: BaseGeometry, key: bytes) -> Outline:
    min_lon, min_lat, max_lon, max_lat = (float(v) for v in shapely.bounds(lonlat))
    frame = frame_params(0.5 * (min_lon + max_lon), 0.5 * (min_lat + max_lat))
    polygons = []
    reach = 0.0
    for part in shapely.get_parts(lonlat):
        rings = rings_of(part)
        projected = [
            densify_ring(np.asarray(shapely.get_coordinates(r)), frame, DENSIFY_TOLERANCE_M)
            for r in rings
        ]
        reach = max(reach, *(float(np.hypot(c[:, 0], c[:, 1]).max()) for c in projected))
        polygons.append(shapely.Polygon(projected[0], projected[1:]))
    if reach > MAX_ZONE_REACH_M:
        raise _Invalid(
            f"the zone reaches {reach / 1000:.1f} km from its centre; the limit is "
            f"{MAX_ZONE_REACH_M / 1000:g} km (draw large areas as several zones)"
        )
    polygon = shapely.union_all(polygons) if len(polygons) > 1 else polygons[0]
    if not shapely.is_valid(polygon):
        polygon = shapely.union_all(_polygonal_parts(shapely.make_valid(polygon)))
    polygon = shapely.orient_polygons(polygon, exterior_cw=False)
    area = float(shapely.area(polygon))
    if area < MIN_AREA_M2:
        raise _Invalid(f"the zone's area is {area:.3g} m², under the {MIN_AREA_M2:g} m² minimum")
    assert frame.shape == (1, FRAME_WIDTH)
    return Outline(
        key=key,
        frame=frame[0],
        polygon=polygon,
        lonlat_bounds=(min_lon, min_lat, max_lon, max_lat),
        reach_m=reach,
    )


SMALL_RING_POSITIONS = 25  # closed positions of a ring the bulk path takes (24 edges at most)


@dataclass(frozen=True, slots=True)
class _Rings:
    """Rings of many zones concatenated: ``xy`` (n, 2), ring ``start`` offsets (m + 1)."""

    xy: FloatArray
    start: npt.NDArray[np.int64]

    @property
    def count(self) -> npt.NDArray[np.int64]:
        return np.diff(self.start)

    def owner(self) -> npt.NDArray[np.int64]:
        return np.repeat(np.arange(self.count.size), self.count)

    def next_in_ring(self) -> npt.NDArray[np.bool_]:
        """For each position but the last: whether the next position is in the same ring."""
        same = np.ones(max(self.xy.shape[0] - 1, 0), dtype=np.bool_)
        same[self.start[1:-1] - 1] = False
        return same


def _ring_all(flags: npt.NDArray[np.bool_], start: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Per ring: whether every position's flag is set (rings are never empty)."""
    owner = np.repeat(np.arange(start.size - 1), np.diff(start))
    return np.asarray(np.bincount(owner[~flags], minlength=start.size - 1) == 0, dtype=np.bool_)


def check_small_polygons(zones: Sequence[Zone]) -> list[CheckedZone | None]:
    """check_zone for many zones at once, for the common case only: a valid single-ring Polygon
    of at most SMALL_RING_POSITIONS positions, away from the antimeridian, whose edges need no
    densification. Each such zone gets exactly what check_zone returns for it (the same arithmetic,
    element by element, on concatenated arrays); every other zone (holes, MultiPolygon, circles,
    invalid, too large, anything check_zone would refuse or repair) gets None: call check_zone.

    SMALL_BATCH zones at a time: the arrays of a whole national set (a million positions) made
    every temporary tens of megabytes, each one fresh memory from the kernel, and the page faults
    were a fifth of the check; a few hundred kilobytes are reused from the heap and stay in cache.
    """
    out: list[CheckedZone | None] = []
    for first in range(0, len(zones), SMALL_BATCH):
        out.extend(_check_small_polygons(zones[first : first + SMALL_BATCH]))
    return out


def _check_small_polygons(zones: Sequence[Zone]) -> list[CheckedZone | None]:
    out: list[CheckedZone | None] = [None] * len(zones)
    picked: list[int] = []
    arrays: list[npt.NDArray[Any]] = []
    for i, zone in enumerate(zones):
        geometry = zone.geometry
        if not isinstance(geometry, Mapping) or geometry.get("type") != "Polygon":
            continue
        coordinates = geometry.get("coordinates")
        if not isinstance(coordinates, list) or len(coordinates) != 1:
            continue
        ring = coordinates[0]
        if not isinstance(ring, list) or not 4 <= len(ring) <= SMALL_RING_POSITIONS:
            continue
        if _check_attributes(zone):
            continue
        try:
            raw = np.asarray(ring)
        except (TypeError, ValueError):
            continue
        # As _positions: only numbers (NumPy reads "18.4" as 18.4, JSON does not).
        if raw.dtype.kind not in "iuf" or raw.ndim != 2 or raw.shape[1] != 2:
            continue
        picked.append(i)
        arrays.append(raw.astype(np.float64))
    if not picked:
        return out
    counts = np.fromiter((a.shape[0] for a in arrays), dtype=np.int64, count=len(arrays))
    start = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=start[1:])
    rings = _Rings(np.concatenate(arrays), start)
    ok = _parse_ok(rings)
    keep = np.flatnonzero(ok)
    rings = _select(rings, keep)
    rings.xy[:, 0] += 0.0  # _parse_polygons adds 360 * 0 turns: -0.0 becomes 0.0
    picked_ok = [picked[k] for k in keep.tolist()]
    if not picked_ok:
        return out
    shells = shapely.polygons(shapely.linearrings(rings.xy, indices=rings.owner()))
    ok = shapely.is_valid(shells)
    lonlat = shapely.normalize(shapely.remove_repeated_points(shells))
    ok &= ~shapely.is_empty(lonlat)
    ok &= shapely.get_type_id(lonlat) == shapely.GeometryType.POLYGON
    ok &= shapely.get_num_interior_rings(lonlat) == 0
    ok &= shapely.area(lonlat) > 0.0
    keep = np.flatnonzero(ok)
    lonlat = lonlat[keep]
    picked_ok = [picked_ok[k] for k in keep.tolist()]
    if not picked_ok:
        return out
    outlines = _small_outlines(lonlat)
    for i, outline in zip(picked_ok, outlines, strict=True):
        if outline is not None:
            out[i] = CheckedZone(zones[i], outline=outline)
    return out


def _select(rings: _Rings, keep: npt.NDArray[np.int64]) -> _Rings:
    count = rings.count[keep]
    start = np.zeros(count.size + 1, dtype=np.int64)
    np.cumsum(count, out=start[1:])
    rows = np.repeat(rings.start[keep] - start[:-1], count) + np.arange(int(start[-1]))
    return _Rings(np.ascontiguousarray(rings.xy[rows]), start)


def _parse_ok(rings: _Rings) -> npt.NDArray[np.bool_]:
    """Per ring: _parse_polygons accepts it and adds no turns (no edge spans 90 deg of
    longitude, so no ring comes near the antimeridian's wrap)."""
    xy = rings.xy
    lon = xy[:, 0]
    lat = xy[:, 1]
    first = rings.start[:-1]
    last = rings.start[1:] - 1
    good = np.isfinite(xy).all(axis=1) & (np.abs(lon) <= 180.0) & (np.abs(lat) <= MAX_LATITUDE)
    ok = _ring_all(good, rings.start)
    ok &= (xy[first] == xy[last]).all(axis=1)
    same = rings.next_in_ring()
    with np.errstate(invalid="ignore"):
        step = np.abs(np.diff(lon)) <= 90.0
    flags = np.ones(xy.shape[0], dtype=np.bool_)
    flags[:-1] = step | ~same
    ok &= _ring_all(flags, rings.start)
    # At least 3 distinct positions among all but the closing one.
    owner = rings.owner()
    body = np.ones(xy.shape[0], dtype=np.bool_)
    body[last] = False
    rows = np.flatnonzero(body)
    order = rows[np.lexsort((lat[rows], lon[rows], owner[rows]))]
    fresh = np.ones(order.size, dtype=np.bool_)
    fresh[1:] = (owner[order][1:] != owner[order][:-1]) | (xy[order][1:] != xy[order][:-1]).any(
        axis=1
    )
    distinct = np.bincount(owner[order][fresh], minlength=first.size)
    ok &= distinct >= 3
    return np.asarray(ok, dtype=np.bool_)


def _small_outlines(lonlat: npt.NDArray[Any]) -> list[Outline | None]:
    """_outline for many single-ring polygons at once; None where it would need densification,
    repair or refusal (check_zone then decides)."""
    keys = [hashlib.blake2b(w, digest_size=16).digest() for w in shapely.to_wkb(lonlat)]
    bounds = shapely.bounds(lonlat)
    frames = frame_params(0.5 * (bounds[:, 0] + bounds[:, 2]), 0.5 * (bounds[:, 1] + bounds[:, 3]))
    coords, owner_raw = shapely.get_coordinates(
        shapely.get_exterior_ring(lonlat), return_index=True
    )
    owner = np.asarray(owner_raw, dtype=np.int64)
    count = np.bincount(owner, minlength=len(lonlat))
    start = np.zeros(count.size + 1, dtype=np.int64)
    np.cumsum(count, out=start[1:])
    rings = _Rings(np.ascontiguousarray(coords, dtype=np.float64), start)
    lon, lat = rings.xy[:, 0], rings.xy[:, 1]
    rows = frames[owner]
    x, y = lonlat_to_frame(lon, lat, rows)
    # densify_ring's first pass, on every edge of every ring; any split sends the zone back.
    same = rings.next_in_ring()
    mid_lon = 0.5 * (lon[:-1] + lon[1:])
    mid_lat = 0.5 * (lat[:-1] + lat[1:])
    mx, my = lonlat_to_frame(mid_lon, mid_lat, rows[:-1])
    cx = x[1:] - x[:-1]
    cy = y[1:] - y[:-1]
    chord = np.hypot(cx, cy)
    cross = np.abs(cx * (my - y[:-1]) - cy * (mx - x[:-1]))
    sag = np.divide(cross, chord, out=np.zeros_like(cross), where=chord > 0)
    flags = np.ones(lon.size, dtype=np.bool_)
    flags[:-1] = ~((sag > DENSIFY_TOLERANCE_M) & same)
    ok = _ring_all(flags, start)
    reach = np.maximum.reduceat(np.hypot(x, y), start[:-1])
    ok &= reach <= MAX_ZONE_REACH_M
    polygons = shapely.polygons(shapely.linearrings(np.column_stack((x, y)), indices=owner))
    ok &= shapely.is_valid(polygons)
    polygons = shapely.orient_polygons(polygons, exterior_cw=False)
    ok &= shapely.area(polygons) >= MIN_AREA_M2
    out: list[Outline | None] = []
    for j in range(len(lonlat)):
        if not ok[j]:
            out.append(None)
            continue
        b = bounds[j]
        out.append(
            Outline(
                key=keys[j],
                frame=frames[j],
                polygon=polygons[j],
                lonlat_bounds=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                reach_m=float(reach[j]),
            )
        )
    return out
