"""Zone bodies: GeoJSON geometry (lon, lat) as the geofence core takes it, validated there.

Pydantic only checks the shape of the JSON here (types, lengths); whether a zone means one thing
(a closed, simple ring; coordinates in range; a positive radius; a schedule that parses) is the
geofence core's decision, and its reasons come back as a 422 from the route.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from tagwatch.api.schemas import REGION_PATTERN

ZoneKindName = Literal["exclusion", "inclusion", "curfew", "victim"]

SCHEDULE_EXAMPLE = {
    "weekly": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "19:00", "end": "07:00"}],
    "exceptions": [{"start": "2026-12-24T19:00", "end": "2026-12-24T23:00", "active": False}],
}


class ZoneCreate(BaseModel):
    """A zone as drawn. The owner is one subject (``subject_id``), or, without one, a global zone
    for a group (``group_name``) or for everyone; ``region_id`` says which region a global zone
    belongs to (a subject's zone is always in its subject's region)."""

    name: str = Field(default="", max_length=200)
    kind: ZoneKindName
    geometry: dict[str, Any] | None = Field(
        default=None,
        description="GeoJSON Polygon, MultiPolygon, or Point (with radius_m); positions are "
        "[lon, lat]. Victim zones have none: they follow the victim's phone.",
        examples=[{"type": "Point", "coordinates": [18.42, -33.92]}],
    )
    radius_m: float | None = Field(default=None, description="Point and victim zones, metres")
    buffer_m: float | None = Field(
        default=None, description="warning band outside exclusion and victim zones, metres"
    )
    subject_id: int | None = Field(default=None, description="the owner; none for a global zone")
    group_name: str | None = Field(default=None, min_length=1, max_length=100)
    region_id: str | None = Field(default=None, pattern=REGION_PATTERN)
    victim_subject_id: int | None = Field(
        default=None, description="victim zones: the victim whose phone the zone follows"
    )
    protects_subject_id: int | None = Field(
        default=None,
        description="exclusion zones: the victim this zone protects (their home, work, "
        "school); the zone is then readable by supervisors and admins only, as victim zones are",
    )
    schedule: dict[str, Any] | None = Field(
        default=None,
        description="weekly windows and dated exceptions on the subject's wall clock; the zone "
        "is inactive outside them (curfew zones need one)",
        examples=[SCHEDULE_EXAMPLE],
    )
    thresholds: dict[str, Any] = Field(
        default_factory=dict, description="per-zone alert threshold overrides"
    )


class ZonePatch(BaseModel):
    """Only the fields given change; ``null`` clears an optional field. The merged zone is
    validated as a whole."""

    name: str | None = Field(default=None, max_length=200)
    kind: ZoneKindName | None = None
    geometry: dict[str, Any] | None = None
    radius_m: float | None = None
    buffer_m: float | None = None
    subject_id: int | None = None
    group_name: str | None = Field(default=None, min_length=1, max_length=100)
    region_id: str | None = Field(default=None, pattern=REGION_PATTERN)
    victim_subject_id: int | None = None
    protects_subject_id: int | None = None
    schedule: dict[str, Any] | None = None
    thresholds: dict[str, Any] | None = None


class ZonePublic(BaseModel):
    """A zone. One that protects a victim (a victim zone, or an exclusion zone with
    ``protects_subject_id``) is shown whole to supervisors and admins only, and audited; to
    operators and tracers it is ``redacted``: it exists, with its kind, owner, region and
    thresholds (its alerts name it by id), but ``name``, ``geometry``, ``radius_m``,
    ``buffer_m``, ``schedule``, ``victim_subject_id`` and ``protects_subject_id`` are withheld
    (empty name, nulls): they would tell where the victim lives, works or is."""

    id: int
    name: str
    kind: ZoneKindName
    geometry: dict[str, Any] | None
    radius_m: float | None
    buffer_m: float | None
    subject_id: int | None
    group_name: str | None
    region_id: str | None = Field(
        description="a global zone's region; for a subject's zone, its subject's region"
    )
    victim_subject_id: int | None
    protects_subject_id: int | None = None
    schedule: dict[str, Any] | None
    thresholds: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    revision: int = Field(description="grows on every change; the alert engine syncs by it")
    warnings: list[str] = Field(
        default_factory=list,
        description="on a write's answer: what is worth knowing about the zone as drawn, without"
        " refusing it (a curfew zone too small for GPS to verify presence indoors)",
    )
    protects_victim: bool = Field(
        default=False, description="a victim zone, or an exclusion zone protecting a victim"
    )
    redacted: bool = Field(
        default=False,
        description="the victim's whereabouts were withheld (name, geometry, radius_m, "
        "buffer_m, schedule, victim and protected subject ids): the caller is not a "
        "supervisor or admin",
    )
