"""Smoke test of `tagwatch bench store` at a small N: the figures are printed and every answer of
the API's statements (track, proximity, compliance report) agrees with the reference queries.
The targets are for 100M rows on the benchmark machine (docs/scaling.md), not for CI."""

from __future__ import annotations

import math

import pytest

from tagwatch.bench.store import run

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
    assert "Index Scan" in figures["plans"]["track"] or "Bitmap" in figures["plans"]["track"]
    if figures["timescale_skipped"]:  # plain PostgreSQL: proximity goes by the grid (0026)
        assert "fixes_cell_ts" in figures["plans"]["proximity"], figures["plans"]["proximity"]
