"""A second, independent noise model: heavy tails, optimistic `acc` indoors, snapped fallbacks.

Issue 14: the scenario library was written with the same noise model (noise.py) and the same ideas
as the alert rules, so passing it proves little; played with traces from elsewhere the platform
raised false alerts. This model disagrees with noise.py on purpose where the field gives room to:

- **Heavy-tailed error.** The error is a bivariate Student-t (3 degrees of freedom) instead of a
  Gaussian: a Gaussian AR(1) direction (30 s) scaled by sqrt(ν / χ²_ν), the mixing factor held
  for a while (60 s time constant) so that a bad stretch lasts several fixes, as multipath and
  reflections do. Errors beyond 3 × `acc` are about 2.7 % of fixes (Gaussian: 0.004 %). There
  are no separate multipath episodes: the tail is the multipath.
- **`acc` understates the error when the sky is poor.** The true 68 % radius is `acc` outdoors,
  1.5 × `acc` in urban canyons and 2 × `acc` indoors; a receiver cannot see the reflections it
  is fooled by, so its own estimate is optimistic where they are common.
- **Wi-Fi fixes snap to an access point**: one fixed position per building, 30–60 m from the true
  position, kept while the device stays (reported `acc` 20–100 m, so often smaller than the
  error), instead of a fresh Gaussian draw around the truth each time.
- **Cell fixes snap to a tower-ish centroid** 200 m to 3 km away (median 600 m), kept while the
  device stays within a kilometre, with `acc` 500–3000 m.

docs/simulators.md has the parameter table with sources and the assumptions stated as such.
Like noise.py, nothing reads a clock or does I/O, and the caller's seeded `random.Random` is the
only randomness, so a scenario replays bit for bit under either model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from tagwatch.simulators.geo import distance_m, offset
from tagwatch.simulators.noise import (
    Conditions,
    Fallback,
    Observation,
    Sky,
    correlated_unit,
    truncated_pareto,
)


def t68_radius(dof: float) -> float:
    """Radius, in scale units, holding 68 % of a bivariate Student-t with `dof` degrees of
    freedom: P(R ≤ r) = 1 − (1 + r²/ν)^(−ν/2) for unit scale, solved for 0.68. The contract
    defines `acc` as a 68 % radius, so this is what maps an `acc` to the law's scale."""
    return math.sqrt(dof * (0.32 ** (-2.0 / dof) - 1.0))


def t_exceedance(dof: float, k: float) -> float:
    """P(error > k × the 68 % radius) for the bivariate Student-t; for tests and the docs."""
    r = k * t68_radius(dof)
    return float((1.0 + r * r / dof) ** (-dof / 2.0))


@dataclass(frozen=True)
class HeavyProfile:
    """Parameters of the heavy-tailed model; docs/simulators.md gives each one's source."""

    open_acc_median_m: float = 8.0
    acc_spread: float = 0.35  # sigma of log(acc) around the median
    open_acc_range_m: tuple[float, float] = (3.0, 25.0)
    dof: float = 3.0  # Student-t degrees of freedom
    correlation_time_s: float = 30.0  # direction of the error (AR(1))
    scale_time_s: float = 60.0  # how long the t mixing factor (a bad stretch) holds
    max_scale: float = 25.0  # cap on the mixing factor: no error beyond ~25 × the 68 % radius
    excursion_scale: float = 3.0  # a fix with a mixing factor above this counts as multipath
    urban_understatement: float = 1.5  # true 68 % radius / reported acc
    indoor_understatement: float = 2.0
    urban_acc_factor: float = 1.3
    indoor_acc_median_m: float = 60.0
    indoor_dropout: float = 0.25
    fallback_probability: float = 0.8
    wifi_ap_distance_m: tuple[float, float] = (30.0, 60.0)
    wifi_building_m: float = 50.0  # the same access point answers within this of where it did
    wifi_jitter_m: float = 3.0  # per axis
    wifi_acc_median_m: float = 50.0
    wifi_acc_range_m: tuple[float, float] = (20.0, 100.0)
    cell_distance_median_m: float = 600.0
    cell_distance_spread: float = 0.6
    cell_distance_range_m: tuple[float, float] = (200.0, 3000.0)
    cell_area_m: float = 1000.0  # the same centroid answers within this of where it did
    cell_jitter_m: float = 5.0  # per axis
    cell_acc_median_m: float = 1200.0
    cell_acc_range_m: tuple[float, float] = (500.0, 3000.0)
    jump_min_m: float = 100.0  # only for a scenario's explicit jump_probability
    jump_max_m: float = 500.0
    jump_tail_alpha: float = 1.5
    jump_max_fixes: int = 3
    cold_after_s: float = 300.0
    cold_start_fixes: int = 3
    cold_start_acc_m: float = 150.0


HEAVY_TAG = HeavyProfile()
"""An ankle tag: the same reported accuracies as noise.TAG_NOISE, a different truth behind them."""

HEAVY_PHONE = HeavyProfile(
    open_acc_median_m=12.0,
    open_acc_range_m=(5.0, 65.0),
    indoor_acc_median_m=35.0,
    indoor_dropout=0.5,
    fallback_probability=1.0,
    wifi_acc_median_m=35.0,
)
"""A phone: 5–65 m outdoors (FIELD.md), Wi-Fi positioning whenever GNSS gives nothing."""


def _lognormal(rng: random.Random, median: float, spread: float, low: float, high: float) -> float:
    return min(high, max(low, median * math.exp(rng.gauss(0.0, spread))))


_MAX_ANCHORS = 256
"""Anchors remembered per device: enough for every building of a long scenario, bounded for a
device moving for hours on Wi-Fi alone."""


@dataclass
class _Anchor:
    """Where a snapped fallback answered from: the true position it was first seen at, and the
    position it reports."""

    true: tuple[float, float]
    reported: tuple[float, float]


class HeavyTailReceiver:
    """One device's error process under the heavy-tailed model (implements noise.Receiver)."""

    def __init__(self, profile: HeavyProfile, rng: random.Random) -> None:
        self.profile = profile
        self._rng = rng
        self._unit = (rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0))
        self._scale = 1.0
        self._last_t: float | None = None
        self._last_gnss_t: float | None = None
        self._cold_left = 0
        self._cold_index = 0
        self._jump_left = 0
        self._jump_vector = (0.0, 0.0)
        self._wifi: list[_Anchor] = []
        self._cell: list[_Anchor] = []

    def restart(self) -> None:
        """A power cycle: the next fixes are cold-start fixes."""
        self._cold_left = self.profile.cold_start_fixes
        self._cold_index = 0

    def observe(
        self, t: float, lon: float, lat: float, conditions: Conditions
    ) -> Observation | None:
        """The position reported at time `t` for a true position, or None for no fix at all."""
        rng, profile = self._rng, self.profile
        elapsed = math.inf if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t
        self._unit = correlated_unit(self._unit, elapsed, profile.correlation_time_s, rng)
        renewed = rng.random() >= math.exp(-elapsed / profile.scale_time_s)
        if renewed:
            chi2 = rng.gammavariate(profile.dof / 2.0, 2.0)
            self._scale = min(profile.max_scale, math.sqrt(profile.dof / max(chi2, 1e-12)))

        gnss = conditions.sky not in (Sky.DENIED, Sky.JAMMED)
        if gnss and conditions.sky is Sky.INDOOR and rng.random() < profile.indoor_dropout:
            gnss = False
        if not gnss:
            self._jump_left = 0
            return self._fallback(lon, lat, conditions)

        if self._last_gnss_t is not None and t - self._last_gnss_t > profile.cold_after_s:
            self.restart()
        self._last_gnss_t = t

        acc, understatement = self._accuracy(conditions)
        cold = self._cold_left > 0
        if cold:
            acc = max(acc, profile.cold_start_acc_m * 0.5**self._cold_index)
            self._cold_left -= 1
            self._cold_index += 1
        scale = understatement * acc / t68_radius(profile.dof) * self._scale
        east, north = scale * self._unit[0], scale * self._unit[1]

        excursion = self._scale > profile.excursion_scale
        started = excursion and renewed
        # A scenario that declares multipath at a place gets it under this model too.
        jump = conditions.jump_probability
        if self._jump_left == 0 and jump is not None and rng.random() < jump:
            started = True
            magnitude = truncated_pareto(
                rng, profile.jump_min_m, profile.jump_max_m, profile.jump_tail_alpha
            )
            angle = rng.uniform(0.0, 2.0 * math.pi)
            self._jump_vector = (magnitude * math.sin(angle), magnitude * math.cos(angle))
            self._jump_left = rng.randint(1, profile.jump_max_fixes)
        if self._jump_left > 0:
            self._jump_left -= 1
            excursion = True
            east += self._jump_vector[0]
            north += self._jump_vector[1]

        sats = self._satellites(conditions.sky, cold)
        lon2, lat2 = offset(lon, lat, east, north)
        return Observation(
            lon2, lat2, acc, "gps", sats, math.hypot(east, north), excursion, started, cold
        )

    def _accuracy(self, conditions: Conditions) -> tuple[float, float]:
        """The reported accuracy and how much the true 68 % radius exceeds it."""
        profile, rng = self.profile, self._rng
        if conditions.sky is Sky.INDOOR:
            median = conditions.indoor_acc_m or profile.indoor_acc_median_m
            acc = _lognormal(rng, median, profile.acc_spread, 0.5 * median, 2.5 * median)
            return acc, profile.indoor_understatement
        low, high = profile.open_acc_range_m
        acc = _lognormal(rng, profile.open_acc_median_m, profile.acc_spread, low, high)
        if conditions.sky is Sky.URBAN:
            return acc * profile.urban_acc_factor, profile.urban_understatement
        return acc, 1.0

    def _fallback(self, lon: float, lat: float, conditions: Conditions) -> Observation | None:
        profile, rng = self.profile, self._rng
        if conditions.fallback is None or rng.random() >= profile.fallback_probability:
            return None
        if conditions.fallback is Fallback.WIFI:
            low, high = profile.wifi_ap_distance_m
            anchor = self._anchor(
                self._wifi, lon, lat, profile.wifi_building_m, lambda: rng.uniform(low, high)
            )
            jitter = profile.wifi_jitter_m
            low, high = profile.wifi_acc_range_m
            acc = _lognormal(rng, profile.wifi_acc_median_m, profile.acc_spread, low, high)
        else:
            low, high = profile.cell_distance_range_m
            anchor = self._anchor(
                self._cell,
                lon,
                lat,
                profile.cell_area_m,
                lambda: _lognormal(
                    rng, profile.cell_distance_median_m, profile.cell_distance_spread, low, high
                ),
            )
            jitter = profile.cell_jitter_m
            low, high = profile.cell_acc_range_m
            acc = _lognormal(rng, profile.cell_acc_median_m, profile.acc_spread, low, high)
        lon2, lat2 = offset(*anchor.reported, rng.gauss(0.0, jitter), rng.gauss(0.0, jitter))
        return Observation(
            lon2,
            lat2,
            acc,
            str(conditions.fallback),
            None,
            distance_m((lon, lat), (lon2, lat2)),
            multipath=False,
            jump_started=False,
            cold=False,
        )

    def _anchor(
        self,
        anchors: list[_Anchor],
        lon: float,
        lat: float,
        reach_m: float,
        draw_distance: Callable[[], float],
    ) -> _Anchor:
        """The access point or cell that answers here: the one first met within `reach_m`, so
        it stays put while the device stays (and when it comes back), else a new one."""
        for anchor in anchors:
            if distance_m(anchor.true, (lon, lat)) <= reach_m:
                return anchor
        away = draw_distance()
        angle = self._rng.uniform(0.0, 2.0 * math.pi)
        reported = offset(lon, lat, away * math.sin(angle), away * math.cos(angle))
        anchor = _Anchor((lon, lat), reported)
        anchors.append(anchor)
        if len(anchors) > _MAX_ANCHORS:
            del anchors[0]
        return anchor

    def _satellites(self, sky: Sky, cold: bool) -> int:
        if cold:
            return self._rng.randint(4, 5)
        low, high = {Sky.URBAN: (5, 9), Sky.INDOOR: (3, 6)}.get(sky, (7, 12))
        return self._rng.randint(low, high)
