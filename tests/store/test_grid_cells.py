"""Proximity's way in at national size (migration 0026): the grid cells Python computes for a
search box (store/fixes.grid_cells) must hold PostgreSQL's fix_cell of every position in the box,
or the search would silently miss a fix. Checked against the real database for boxes anywhere,
including at the antimeridian and the poles, with positions on the box's very edges; and the
planner must then read the (cell, ts) index, not the window's pages."""

from __future__ import annotations

import math

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from tagwatch.api.routes.proximity import bounding_box
from tagwatch.store.fixes import FIX_CELL, MAX_GRID_CELLS, grid_cells

pytestmark = pytest.mark.integration


def _edges(low: float, high: float) -> list[float]:
    """The box's limits and the numbers next to them: where a floor could slip."""
    return [low, math.nextafter(low, math.inf), high, math.nextafter(high, -math.inf)]


@pytest.fixture(scope="module")
def conn(settings):
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        yield connection


@examples(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    radius=st.floats(1, 5_000),
    u=st.lists(st.floats(0, 1), min_size=8, max_size=8),
)
def test_every_position_in_the_box_has_a_cell_of_the_box(conn, lat, lon, radius, u) -> None:
    box = bounding_box(lat, lon, radius)
    cells = grid_cells(box)
    if cells is None:  # unbounded in longitude, or too many cells: the BRIN path, not this one
        return
    assert len(cells) <= MAX_GRID_CELLS
    lats = _edges(box["lat_min"], box["lat_max"])
    lats += [box["lat_min"] + f * (box["lat_max"] - box["lat_min"]) for f in u[:4]]
    lons: list[float] = []
    for low, high in ((box["lon_min"], box["lon_max"]), (box["lon_min2"], box["lon_max2"])):
        if low <= high:
            lons += _edges(low, high) + [low + f * (high - low) for f in u[4:]]
    points = [(a, b) for a in lats for b in lons if -90 <= a <= 90 and -180 <= b <= 180]
    rows = conn.execute(
        "SELECT fix_cell(p.lat, p.lon) FROM unnest(%s::float8[], %s::float8[]) AS p(lat, lon)",
        ([p[0] for p in points], [p[1] for p in points]),
    ).fetchall()
    allowed = set(cells)
    missing = [(p, r[0]) for p, r in zip(points, rows, strict=True) if r[0] not in allowed]
    assert not missing, missing[:5]


def test_a_position_out_of_range_has_no_cell_instead_of_an_error(conn) -> None:
    """fix_cell never raises: a NaN or out-of-range position (which ingest refuses before it
    gets here) would otherwise fail the whole insert of its batch on the index."""
    rows = conn.execute(
        "SELECT fix_cell(lat, lon) FROM (VALUES ('NaN'::float8, 0::float8), (0, 'Infinity'),"
        " (91, 0), (0, -180.5), (90, 180), (-90, -180)) AS p(lat, lon)"
    ).fetchall()
    assert [r[0] for r in rows[:4]] == [None, None, None, None]
    assert rows[4][0] == 18000 * 36001 + 36000 and rows[5][0] == 0


def test_the_index_serves_the_cells_the_search_asks_for(conn) -> None:
    """The planner matches the search's fix_cell(...) to the index's expression (both inline the
    function the same way): with other ways in switched off, it reads fixes_cell_ts. Whether it
    prefers it on a real store is tests/test_bench_store.py's question (200,000 fixes)."""
    cells = grid_cells(bounding_box(53.0, -1.5, 500.0))
    assert cells is not None and len(cells) <= 6
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        # A hypertable (TimescaleDB) without chunks plans to nothing at all: one fix makes a
        # chunk, whose copy of the index is named _hyper_…_fixes_cell_ts. Rolled back below.
        conn.execute(
            "INSERT INTO fixes (device_id, ts, lat, lon) VALUES ('grid-plan', now(), 53.0, -1.5)"
        )
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                f"EXPLAIN SELECT ts FROM fixes f WHERE {FIX_CELL} = ANY(%s::integer[])",
                (cells,),
            )
        )
        raise psycopg.Rollback()
    assert "fixes_cell_ts" in plan, plan
