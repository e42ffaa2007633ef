"""The heavy-tailed noise model keeps its stated statistics, replays under a seed, and adding it
left the Gaussian model's output exactly as it was (issue 14)."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import statistics

import pytest

from tagwatch.cli.simulation import Noise, manifest_for, noise_models
from tagwatch.simulators.geo import distance_m, offset
from tagwatch.simulators.noise import TAG_NOISE, Conditions, Fallback, GpsReceiver, Sky
from tagwatch.simulators.noise_heavy import (
    HEAVY_PHONE,
    HEAVY_TAG,
    HeavyTailReceiver,
    t68_radius,
    t_exceedance,
)
from tagwatch.simulators.noise_models import NOISE_MODELS, make_receiver
from tagwatch.simulators.runner import Manifest
from tagwatch.simulators.scenario import build_timeline
from tagwatch.simulators.scoring import format_by_model, naive_alerts, score_run

TRUTH = (18.4722, -33.9379)
INDOOR = Conditions(sky=Sky.INDOOR)
CELL = Conditions(sky=Sky.JAMMED, fallback=Fallback.CELL)
WIFI = Conditions(sky=Sky.DENIED, fallback=Fallback.WIFI)


def _observe(receiver, conditions, n, every=60.0, at=TRUTH):
    fixes = [receiver.observe(k * every, *at, conditions) for k in range(n)]
    return [f for f in fixes if f is not None]


def _heavy(seed=7, profile=HEAVY_TAG):
    return HeavyTailReceiver(profile, random.Random(seed))


def test_the_68_percent_radius_of_the_student_t_is_where_acc_puts_it():
    for dof in (2.5, 3.0, 5.0):
        assert t_exceedance(dof, 1.0) == pytest.approx(0.32, abs=1e-12)
    assert t68_radius(3.0) == pytest.approx(1.847, abs=1e-3)


@pytest.mark.parametrize("profile", [HEAVY_TAG, HEAVY_PHONE], ids=["tag", "phone"])
def test_outdoors_acc_is_still_a_68_percent_radius(profile):
    fixes = _observe(_heavy(profile=profile), Conditions(), 20_000, every=600.0)
    share = sum(f.error_m <= f.acc_m for f in fixes) / len(fixes)
    assert share == pytest.approx(0.68, abs=0.015)


def test_the_tail_is_far_heavier_than_the_gaussian_core():
    heavy = _observe(_heavy(), Conditions(), 20_000, every=600.0)
    gauss = _observe(GpsReceiver(TAG_NOISE, random.Random(7)), Conditions(), 20_000, 600.0)
    core = [f for f in gauss if not f.multipath]
    heavy_share = sum(f.error_m > 3 * f.acc_m for f in heavy) / len(heavy)
    core_share = sum(f.error_m > 3 * f.acc_m for f in core) / len(core)
    assert heavy_share == pytest.approx(t_exceedance(3.0, 3.0), abs=0.006)  # ≈ 2.7 %
    assert core_share < 0.001  # a Gaussian: 0.004 %
    # even with the Gaussian model's multipath jumps counted, the heavy model has more beyond 3×
    gauss_share = sum(f.error_m > 3 * f.acc_m for f in gauss) / len(gauss)
    assert heavy_share > 1.8 * gauss_share


def test_bad_stretches_last_several_fixes():
    """The tail is correlated in time: a fix beyond 3 × acc is far more often followed by another
    one than chance would have it, as multipath near a building lasts a few fixes."""
    fixes = _observe(_heavy(), Conditions(), 20_000, every=15.0)
    bad = [f.error_m > 3 * f.acc_m for f in fixes]
    rate = sum(bad) / len(bad)
    follow = sum(a and b for a, b in itertools.pairwise(bad)) / max(1, sum(bad[:-1]))
    assert follow > 10 * rate


def test_indoors_acc_understates_the_error_by_the_stated_factor():
    fixes = [f for f in _observe(_heavy(), INDOOR, 20_000, every=600.0) if f.src == "gps"]
    ratios = [f.error_m / f.acc_m for f in fixes]
    q68 = statistics.quantiles(ratios, n=100)[67]
    assert q68 == pytest.approx(HEAVY_TAG.indoor_understatement, rel=0.08)
    assert sum(r <= 1.0 for r in ratios) / len(ratios) < 0.45  # acc holds far fewer than 68 %


def test_wifi_fixes_snap_to_one_access_point_while_the_device_stays():
    fixes = _observe(_heavy(3), WIFI, 300)
    assert fixes and all(f.src == "wifi" for f in fixes)
    centre = (statistics.fmean(f.lon for f in fixes), statistics.fmean(f.lat for f in fixes))
    assert max(distance_m(centre, (f.lon, f.lat)) for f in fixes) < 15.0  # jitter only
    low, high = HEAVY_TAG.wifi_ap_distance_m
    assert low - 12.0 <= distance_m(TRUTH, centre) <= high + 12.0
    assert all(20.0 <= f.acc_m <= 100.0 for f in fixes)


def test_another_building_has_another_access_point_and_coming_back_finds_the_first():
    receiver = _heavy(3)
    elsewhere = offset(*TRUTH, 800.0, 0.0)
    first = _observe(receiver, WIFI, 20)
    away = [receiver.observe(2000.0 + k * 60, *elsewhere, WIFI) for k in range(20)]
    back = [receiver.observe(4000.0 + k * 60, *TRUTH, WIFI) for k in range(20)]
    away_fixes = [f for f in away if f is not None]
    back_fixes = [f for f in back if f is not None]
    assert all(distance_m(elsewhere, (f.lon, f.lat)) < 75.0 for f in away_fixes)
    assert distance_m((first[0].lon, first[0].lat), (back_fixes[0].lon, back_fixes[0].lat)) < 15


def test_cell_fixes_are_far_away_with_a_large_acc():
    errors, accs = [], []
    for seed in range(40):
        fixes = _observe(_heavy(seed), CELL, 30)
        assert all(f.src == "cell" for f in fixes)
        spread = max(distance_m((fixes[0].lon, fixes[0].lat), (f.lon, f.lat)) for f in fixes)
        assert spread < 40.0  # the same centroid while the device stays
        errors.append(fixes[0].error_m)
        accs += [f.acc_m for f in fixes]
    assert min(errors) >= 190.0 and max(errors) <= 3020.0
    assert 300.0 < statistics.median(errors) < 1200.0
    assert min(accs) >= 500.0 and max(accs) <= 3000.0


def test_a_seed_replays_bit_for_bit_and_another_seed_does_not():
    plan = [Conditions(), Conditions(sky=Sky.URBAN), INDOOR, WIFI, CELL] * 40

    def run(seed):
        receiver = _heavy(seed)
        return [receiver.observe(k * 47.0, *TRUTH, c) for k, c in enumerate(plan)]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_the_registry_names_both_models_and_refuses_others():
    assert set(NOISE_MODELS) == {"gaussian", "heavy"}
    assert isinstance(make_receiver("heavy", True, None, random.Random(1)), HeavyTailReceiver)
    assert isinstance(make_receiver("gaussian", False, None, random.Random(1)), GpsReceiver)
    with pytest.raises(ValueError, match="gaussian"):
        make_receiver("laplace", True, None, random.Random(1))


GAUSSIAN_DIGEST = "9d2c0ce4b80c2238041026bc1e32dc58fde8cbeb674271b6bf574abf8f5fe643"
"""The Gaussian receiver's output for seed 11 over open, urban, indoor and denied skies, taken
from the code before the heavy model existed: adding a model must not move a single draw."""


def test_the_gaussian_model_is_unchanged():
    receiver = GpsReceiver(TAG_NOISE, random.Random(11))
    skies = [Conditions(), Conditions(sky=Sky.URBAN), INDOOR, CELL]
    digest = hashlib.sha256()
    for k in range(2000):
        digest.update(repr(receiver.observe(k * 37.0, *TRUTH, skies[(k // 100) % 4])).encode())
    assert digest.hexdigest() == GAUSSIAN_DIGEST


def test_the_default_timeline_is_the_gaussian_one(library):
    scenario = next(s for s in library if s.name == "curfew-breach")
    default = build_timeline(scenario, "t1")
    assert build_timeline(scenario, "t1", noise_model="gaussian").publications == (
        default.publications
    )
    heavy = build_timeline(scenario, "t1", noise_model="heavy")
    assert heavy.publications != default.publications
    assert heavy.publications == build_timeline(scenario, "t1", noise_model="heavy").publications
    assert heavy.truth.keys() == default.truth.keys()


def test_the_scorer_prints_one_card_and_one_summary_line_per_model(library_runs):
    run = library_runs["curfew-breach"]
    cards, naive = [score_run(run, [])], [score_run(run, naive_alerts(run))]
    text = format_by_model({"gaussian": (cards, naive), "heavy": (cards, naive)})
    lines = text.splitlines()
    assert lines[0] == "noise model: gaussian"
    assert "noise model: heavy" in lines
    assert lines[-2].startswith("gaussian  expected 1  matched 0  missed 1  false 0  | naive")
    assert lines[-1].startswith("heavy     expected 1")


def test_another_model_s_pipeline_run_is_recorded_beside_the_gaussian_one(tmp_path):
    path = tmp_path / "run.json"
    assert manifest_for(path, "gaussian") == path
    assert manifest_for(path, "heavy") == tmp_path / "run-heavy.json"
    assert noise_models(Noise.BOTH) == ["gaussian", "heavy"]
    assert noise_models(Noise.HEAVY) == ["heavy"]


def test_a_manifest_from_before_the_heavy_model_loads_as_gaussian(tmp_path):
    manifest = Manifest("abc", "2026-11-02", 720.0, 0.0, 0.0, 1.0, ["jamming"])
    path = tmp_path / "run.json"
    manifest.save(path)
    document = json.loads(path.read_text())
    del document["noise_model"]
    path.write_text(json.dumps(document))
    assert Manifest.load(path).noise_model == "gaussian"
