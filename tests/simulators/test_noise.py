"""The noise model's statistics hold within tolerance; offsets are metres on the ground."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from tagwatch.simulators.geo import distance_m, offset
from tagwatch.simulators.noise import (
    K68,
    PHONE_NOISE,
    TAG_NOISE,
    Conditions,
    Fallback,
    GpsReceiver,
    Sky,
    truncated_pareto,
)

TRUTH = (18.4722, -33.9379)


def _observe(profile, conditions, n, seed=7, every=60.0):
    receiver = GpsReceiver(profile, random.Random(seed))
    return [receiver.observe(k * every, *TRUTH, conditions) for k in range(n)]


def test_k68_holds_68_percent_of_a_2d_gaussian():
    assert 1.0 - math.exp(-(K68**2) / 2.0) == pytest.approx(0.68, abs=1e-12)


@pytest.mark.parametrize("profile", [TAG_NOISE, PHONE_NOISE], ids=["tag", "phone"])
def test_about_68_percent_of_open_sky_errors_fall_within_acc(profile):
    fixes = [f for f in _observe(profile, Conditions(), 20_000) if not f.multipath]
    share = sum(distance_m(TRUTH, (f.lon, f.lat)) <= f.acc_m for f in fixes) / len(fixes)
    assert share == pytest.approx(0.68, abs=0.015)


def test_correlated_errors_keep_the_68_percent_at_short_intervals():
    fixes = [f for f in _observe(TAG_NOISE, Conditions(), 20_000, every=15.0) if not f.multipath]
    share = sum(f.error_m <= f.acc_m for f in fixes) / len(fixes)
    assert share == pytest.approx(0.68, abs=0.03)  # fewer independent samples: wider tolerance


def test_reported_error_is_the_geodesic_distance_from_the_truth():
    for fix in _observe(TAG_NOISE, Conditions(sky=Sky.URBAN), 500):
        assert distance_m(TRUTH, (fix.lon, fix.lat)) == pytest.approx(fix.error_m, abs=0.01)


@pytest.mark.parametrize("lat", [-33.94, 0.0, 53.8, 69.6])
def test_metric_offsets_are_exact_at_any_latitude(lat):
    moved = offset(18.0, lat, 300.0, -400.0)
    assert distance_m((18.0, lat), moved) == pytest.approx(500.0, abs=1e-3)


def test_multipath_episodes_start_at_their_rate_and_last_one_to_three_fixes():
    rate = 0.02
    fixes = _observe(TAG_NOISE, Conditions(jump_probability=rate), 20_000, seed=11)
    eligible = sum(1 for f in fixes if not (f.multipath and not f.jump_started))
    starts = sum(f.jump_started for f in fixes)
    expected = rate * eligible
    assert abs(starts - expected) < 4 * math.sqrt(expected)  # binomial, 4 sigma
    durations: list[int] = []
    for fix in fixes:
        if fix.jump_started:
            durations.append(0)
        if fix.multipath:
            durations[-1] += 1
    assert set(durations) == {1, 2, 3}
    jumped = [f.error_m for f in fixes if f.multipath]
    assert min(jumped) > 60.0 and max(jumped) < 600.0  # 100–500 m ±10 %, plus the Gaussian
    assert statistics.median(jumped) < 200.0  # heavy-tailed towards small jumps


def test_truncated_pareto_stays_in_bounds_and_favours_small_jumps():
    rng = random.Random(3)
    draws = [truncated_pareto(rng, 100.0, 500.0, 1.5) for _ in range(10_000)]
    assert min(draws) >= 100.0 and max(draws) <= 500.0
    assert sum(d < 200.0 for d in draws) / len(draws) > 0.6


def test_indoors_accuracy_degrades_and_gnss_drops_out_to_wifi():
    fixes = _observe(TAG_NOISE, Conditions(sky=Sky.INDOOR, indoor_acc_m=80.0), 10_000)
    gnss = [f for f in fixes if f is not None and f.src == "gps"]
    wifi = [f for f in fixes if f is not None and f.src == "wifi"]
    missing = sum(f is None for f in fixes)
    assert all(40.0 <= f.acc_m <= 200.0 for f in gnss)
    assert statistics.median(f.acc_m for f in gnss) == pytest.approx(80.0, rel=0.1)
    dropout = (len(wifi) + missing) / len(fixes)
    assert dropout == pytest.approx(TAG_NOISE.indoor_dropout, abs=0.02)
    assert missing / (len(wifi) + missing) == pytest.approx(
        1 - TAG_NOISE.fallback_probability, abs=0.04
    )
    assert all(f.sats is None for f in wifi)


def test_urban_canyon_bias_makes_acc_optimistic():
    fixes = [f for f in _observe(TAG_NOISE, Conditions(sky=Sky.URBAN), 10_000) if not f.multipath]
    share = sum(f.error_m <= f.acc_m for f in fixes) / len(fixes)
    assert share < 0.6


def test_no_gnss_when_jammed_or_denied_only_the_fallback():
    jammed = _observe(TAG_NOISE, Conditions(sky=Sky.JAMMED, fallback=Fallback.CELL), 2_000)
    assert {f.src for f in jammed if f is not None} == {"cell"}
    assert all(300.0 <= f.acc_m <= 3000.0 for f in jammed if f is not None)
    denied = _observe(TAG_NOISE, Conditions(sky=Sky.DENIED, fallback=None), 100)
    assert all(f is None for f in denied)


def test_cold_start_after_a_long_outage_gives_large_shrinking_acc():
    receiver = GpsReceiver(TAG_NOISE, random.Random(5))
    for k in range(5):
        receiver.observe(k * 60.0, *TRUTH, Conditions())
    for k in range(5, 20):
        assert receiver.observe(k * 60.0, *TRUTH, Conditions(sky=Sky.DENIED, fallback=None)) is None
    first = [receiver.observe(k * 60.0, *TRUTH, Conditions()) for k in range(20, 26)]
    assert [f.cold for f in first] == [True, True, True, False, False, False]
    assert first[0].acc_m >= 150.0 and first[1].acc_m >= 75.0 and first[2].acc_m >= 37.5
    assert all(f.sats in (4, 5) for f in first[:3])


def test_same_seed_same_noise():
    assert _observe(TAG_NOISE, Conditions(), 200, seed=4) == _observe(
        TAG_NOISE, Conditions(), 200, seed=4
    )
