"""The one check every new zone passes (store.zones.zone_problems), whoever writes it: the API,
the scenario runner, the demo simulator, the benchmarks (issue 13: their own INSERTs skipped it)."""

from __future__ import annotations

import math
from dataclasses import fields

import psycopg
import pytest

from tagwatch.store.zones import (
    FIELDS,
    InvalidZone,
    ZoneDraft,
    create_zone,
    zone_problems,
    zone_warnings,
)

POINT = {"type": "Point", "coordinates": [18.42, -33.92]}


def test_a_draft_has_exactly_the_written_columns() -> None:
    assert tuple(f.name for f in fields(ZoneDraft)) == FIELDS


def test_a_sound_zone_passes() -> None:
    assert zone_problems(ZoneDraft(name="z", kind="exclusion", geometry=POINT, radius_m=200)) == []


@pytest.mark.parametrize(
    ("draft", "says"),
    [
        (ZoneDraft(name="z", kind="exclusion", geometry=POINT), "radius"),
        (ZoneDraft(name="z", kind="exclusion", geometry=POINT, radius_m=-5), "positive"),
        (ZoneDraft(name="z", kind="exclusion", geometry=POINT, radius_m=math.nan), "finite"),
        (ZoneDraft(name="z", kind="victim", radius_m=500), "victim_subject_id"),
        (ZoneDraft(name="z", kind="curfew", geometry=POINT, radius_m=100), "schedule"),
        (
            ZoneDraft(
                name="z",
                kind="exclusion",
                geometry=POINT,
                radius_m=100,
                subject_id=1,
                group_name="g",
            ),
            "not both",
        ),
        (
            ZoneDraft(
                name="z",
                kind="exclusion",
                geometry=POINT,
                radius_m=100,
                thresholds={"no_such_threshold": 1},
            ),
            "thresholds",
        ),
        (ZoneDraft(name="z", kind="exclusion", geometry={"type": "Nonsense"}), ""),
    ],
)
def test_what_the_api_refuses_is_refused(draft: ZoneDraft, says: str) -> None:
    reasons = zone_problems(draft)
    assert reasons
    assert says in "; ".join(reasons)


@pytest.mark.integration
def test_create_zone_refuses_before_writing(settings) -> None:
    with psycopg.connect(settings.database_url) as conn:
        before = conn.execute("SELECT count(*) FROM zones").fetchone()
        with pytest.raises(InvalidZone) as refused:
            create_zone(conn, ZoneDraft(name="bad", kind="exclusion", geometry=POINT))
        assert refused.value.reasons
        assert conn.execute("SELECT count(*) FROM zones").fetchone() == before
        zone_id = create_zone(
            conn, ZoneDraft(name="good", kind="exclusion", geometry=POINT, radius_m=50)
        )
        row = conn.execute("SELECT geometry, thresholds FROM zones WHERE id = %s", (zone_id,))
        assert row.fetchone() == (POINT, {})
        conn.rollback()


NIGHT = {"weekly": [{"start": "19:00", "end": "07:00"}]}


def _box(width_m: float, height_m: float) -> dict[str, object]:
    lon, lat = 18.4722, -33.9379
    dx = width_m / 2 / (111_320 * math.cos(math.radians(lat)))
    dy = height_m / 2 / 110_540
    ring = [[lon - dx, lat - dy], [lon + dx, lat - dy], [lon + dx, lat + dy], [lon - dx, lat + dy]]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


@pytest.mark.parametrize(
    ("geometry", "radius_m", "warned"),
    [
        (_box(20, 20), None, True),  # the small plot of issue 14
        (_box(40, 30), None, True),  # the library's homes
        (_box(200, 50), None, True),  # long but narrow: no 60 m circle fits
        (_box(100, 80), None, False),
        (POINT, 25, True),
        (POINT, 30, False),
    ],
)
def test_a_curfew_zone_too_small_for_indoor_accuracy_is_warned_not_refused(
    geometry: dict[str, object], radius_m: float | None, warned: bool
) -> None:
    draft = ZoneDraft(
        name="home", kind="curfew", geometry=geometry, radius_m=radius_m, schedule=NIGHT
    )
    assert zone_problems(draft) == []
    warnings = zone_warnings(draft)
    assert bool(warnings) is warned
    if warned:
        assert "60 m" in warnings[0]


def test_only_curfew_zones_are_warned_about_their_size() -> None:
    assert zone_warnings(ZoneDraft(name="z", kind="exclusion", geometry=POINT, radius_m=5)) == []
