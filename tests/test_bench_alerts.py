"""Smoke test of `tagwatch bench alerts --quick`: every figure is there and sane (not the targets:
the benchmark itself proves performance, a timed test on a shared CI machine cannot)."""

from __future__ import annotations

import math

import pytest

from tagwatch.bench.alerts import STATS, run_benchmark

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("workers", "pin"), [(1, False), (2, False), (2, True)])
def test_the_quick_benchmark_alerts_delivers_and_times_every_probe(workers: int, pin: bool):
    # With two workers on Mosquitto's round robin a probe's fixes alternate between them and are
    # evaluated out of order. Before the late path was mended (tests/alerts/
    # test_two_workers_order.py; docs/scaling.md, "A defect with two workers on Mosquitto") one
    # quick run in a clean-clone suite left 1 of 10 loaded probes without its alert; every probe
    # must now raise exactly one, however the broker splits its fixes.
    lines: list[str] = []
    figures = run_benchmark(quick=True, workers=workers, echo=lines.append, pin=pin)
    out = "\n".join(lines)
    assert figures["ingest_workers"] == workers, out
    assert figures["ingest_pinned"] == pin, out  # each worker's threads on a CPU of its own
    for phase in ("idle", "loaded"):
        probes = figures[f"{phase}_probes"]
        assert probes >= 5, out
        assert figures[f"{phase}_alerted"] == probes, out
        assert figures[f"{phase}_delivered"] == probes, out
        assert figures[f"{phase}_wrong_fix"] == 0, out
        assert figures[f"{phase}_duplicated"] == 0, out
        for measure in ("fix", "raised", "alert", "webhook"):
            assert figures[f"{phase}_{measure}_n"] == probes, out
            values = [figures[f"{phase}_{measure}_{s}_ms"] for s in STATS]
            assert all(math.isfinite(v) and 0 < v < 30_000 for v in values), (measure, out)
            assert values == sorted(values), (measure, out)
        # the alert is committed with its proving fix, after its transaction began
        assert figures[f"{phase}_alert_p50_ms"] >= figures[f"{phase}_raised_p50_ms"], out
    assert figures["bad_signatures"] == 0, out
    assert figures["background_published"] > 0, out
    assert figures["background_stored"] == figures["background_published"], out
    assert figures["background_fix_n"] > 0, out
    assert 0 < figures["loaded_machine_busy"] <= 1, out
    assert "publish → alert committed" in out
    assert "publish → webhook delivered" in out
