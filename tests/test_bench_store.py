"""Smoke test of `tagwatch bench store` at a small N: the figures are printed and every answer of
the API's statements (track, proximity, compliance report) agrees with the reference queries.
The targets are for 100M rows on the benchmark machine (docs/scaling.md), not for CI."""

from __future__ import annotations

import math

import psycopg
import pytest

from tagwatch.bench.store import run
from tagwatch.store.bench_store import _EXACT

pytestmark = pytest.mark.integration


def test_a_small_store_answers_correctly_and_prints_every_figure(service_env):
    lines: list[str] = []
    figures = run(
        200_000,
        days=2,
        samples=5,
        database_url=service_env["TAGWATCH_DATABASE_URL"],
        echo=lines.append,
    )
    out = "\n".join(lines)
    assert figures["mismatches"] == 0, out
    assert figures["samples"] == 5, out
    assert abs(figures["rows"] - 200_000) < 1_000, out
    # a whole day of a tag (1,440 fixes) and of a phone for one subject in five
    assert 1_440 <= figures["track_fixes_mean"] <= 1_440 + 288, out
    assert figures["proximity_subjects_mean"] >= 1, out  # the subject who was there, at least
    for name in ("track", "proximity", "compliance"):
        p50, p99 = figures[f"{name}_p50_ms"], figures[f"{name}_p99_ms"]
        assert math.isfinite(p50) and 0 < p50 <= p99 < 10_000, (name, out)
    assert 60 < figures["bytes_per_fix"] < 400, out
    # a hypertable's size comes from TimescaleDB summed over its chunks, not index by index
    indexes = "fixes_ts_brin" if figures["timescale_skipped"] else "all indexes"
    assert indexes in figures["index_bytes_per_fix"], out
    for label in ("track, one subject's 24 h", "proximity, 500 m x 1 h", "bytes per fix"):
        assert label in out
    assert "p99 <= 50 ms" in out and "p99 <= 200 ms" in out and "<= 120 / <= 15" in out
    if figures["timescale_skipped"]:
        assert "skipped: TimescaleDB not installed" in out
    else:
        assert figures["compressed_bytes_per_fix"] < figures["bytes_per_fix"], out
        # the report aggregate is materialized first, as its policy keeps it in service
        assert figures["aggregate_refresh_s"] > 0, out
        assert "TimescaleDB, uncompressed" in out
        # the row-model diagnostic: every layout on the same devices, the bench's values
        # (a tag's 7 decimals, 0.1 m, 0.01 m/s, 0.1 degree) stored exactly by each
        models = figures["row_models"]
        assert len(models) == 4, out
        assert all(m["inexact"] == 0 and m["bytes_per_fix"] > 0 for m in models.values()), out
        stored, *_, integers = models.values()
        assert integers["bytes_per_fix"] < stored["bytes_per_fix"], out
    assert "Index Scan" in figures["plans"]["track"] or "Bitmap" in figures["plans"]["track"]
    if figures["timescale_skipped"]:  # plain PostgreSQL: proximity goes by the grid (0026)
        assert "fixes_cell_ts" in figures["plans"]["proximity"], figures["plans"]["proximity"]


@pytest.mark.parametrize(
    ("column", "value", "exact"),
    [
        ("lat", "-33.9249123", True),  # a tag's 7 decimals: the integer gives the double back
        ("lat", "89.9999999", True),
        ("lon", "-179.9999999", True),
        ("lon", "18.42410001", False),  # an 8th decimal would be lost
        ("lat", "51.123456789012", False),  # a phone's full double
        ("acc", "7.5", True),
        ("acc", "4.3", True),  # as a real: the nearest real to 4.30 comes back
        ("spd", "2.7777777", False),  # 10 km/h in m/s
        ("hdg", "359.9", True),
    ],
)
def test_the_row_model_diagnostic_finds_what_an_integer_would_not_store_exactly(
    service_env, column: str, value: str, exact: bool
) -> None:
    """The diagnostic's exactness condition (store.bench_store._EXACT) run by PostgreSQL on
    values as they arrive: it must call a value exact only when the scaled integer gives it back."""
    kind = "float8" if column in ("lat", "lon") else "real"
    with psycopg.connect(service_env["TAGWATCH_DATABASE_URL"]) as conn:
        row = conn.execute(
            f"SELECT {_EXACT[column]} FROM (SELECT %s::{kind} AS {column}) v",
            (value,),
        ).fetchone()
    assert row == (exact,)
