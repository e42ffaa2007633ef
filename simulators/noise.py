"""The GPS noise model: what a tag or a phone reports when the truth is a given point.

The platform is judged on how it copes with noise, so the noise must look like the field's and
its parameters must be stated with where they come from (docs/simulators.md has the table):

- **Gaussian error consistent with `acc`.** The contract defines `acc` as a 68 % radius. For a
  2-D isotropic Gaussian with per-axis sigma s, P(r < k·s) = 1 − exp(−k²/2); k = √(−2 ln 0.32)
  ≈ 1.5096 gives 68 %, so each fix's error has per-axis sigma = acc / 1.5096. The error is
  correlated in time (AR(1), time constant 30 s) as real receivers' errors are, without changing
  its distribution at any one fix.
- **Multipath jumps**: with a per-fix probability an episode starts that throws the position
  100–500 m away (truncated Pareto, heavy-tailed towards small jumps) for 1–3 fixes, while `acc`
  stays optimistic; FIELD.md, "Multipath near tall buildings gives jumps of 100–500 m that last
  one or a few fixes".
- **Indoors**: `acc` of tens to 150 m and dropouts (no GNSS fix); a tag then falls back to a
  Wi-Fi or cell position with accuracy of hundreds of metres to kilometres (FIELD.md, Devices).
- **Urban canyon**: a slowly varying bias (tens of metres, 5 min correlation) that `acc` does not
  cover, so the share of errors within `acc` drops below 68 %, as it does in city centres.
- **Cold start**: after GNSS was lost for more than 5 minutes (or after a restart) the first
  fixes have large, shrinking `acc` and few satellites.

Nothing here reads a clock or does I/O: time is passed in, randomness comes from the caller's
seeded `random.Random`, so a scenario replays bit for bit.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from tagwatch.simulators.geo import offset

K68 = math.sqrt(-2.0 * math.log(0.32))
"""Radius, in per-axis sigmas, that holds 68 % of a 2-D isotropic Gaussian (≈ 1.5096)."""


class Sky(StrEnum):
    """What stands between the receiver and the satellites."""

    OPEN = "open"
    URBAN = "urban"
    INDOOR = "indoor"
    DENIED = "denied"  # underground, a basement, a Faraday bag: no GNSS at all
    JAMMED = "jammed"  # a GNSS jammer nearby: no GNSS, cell still works


class Fallback(StrEnum):
    """The position a device reports when GNSS gives nothing."""

    WIFI = "wifi"
    CELL = "cell"


@dataclass(frozen=True)
class NoiseProfile:
    """Parameters of the noise model; see docs/simulators.md for the source of each."""

    open_acc_median_m: float = 8.0
    acc_spread: float = 0.35  # sigma of log(acc) around the median
    open_acc_range_m: tuple[float, float] = (3.0, 25.0)
    correlation_time_s: float = 30.0
    jump_probability_open: float = 0.005
    jump_probability_urban: float = 0.03
    jump_probability_indoor: float = 0.02
    jump_min_m: float = 100.0
    jump_max_m: float = 500.0
    jump_tail_alpha: float = 1.5
    jump_max_fixes: int = 3
    urban_bias_sigma_m: float = 10.0  # per axis
    urban_bias_time_s: float = 300.0
    urban_acc_factor: float = 1.3
    indoor_acc_median_m: float = 60.0
    indoor_dropout: float = 0.25
    fallback_probability: float = 0.8
    wifi_acc_median_m: float = 120.0
    wifi_acc_range_m: tuple[float, float] = (40.0, 400.0)
    cell_acc_median_m: float = 900.0
    cell_acc_range_m: tuple[float, float] = (300.0, 3000.0)
    cold_after_s: float = 300.0
    cold_start_fixes: int = 3
    cold_start_acc_m: float = 150.0


TAG_NOISE = NoiseProfile()
"""An ankle tag: ~10 m outdoors (NIJ 1004.00 benchmark), poor antenna at the ankle indoors."""

PHONE_NOISE = NoiseProfile(
    open_acc_median_m=12.0,
    open_acc_range_m=(5.0, 65.0),
    indoor_acc_median_m=35.0,
    indoor_dropout=0.5,
    fallback_probability=1.0,
    wifi_acc_median_m=40.0,
    wifi_acc_range_m=(15.0, 150.0),
)
"""A phone: 5–65 m outdoors (FIELD.md, Devices), Wi-Fi positioning indoors is its strength."""


@dataclass(frozen=True)
class Conditions:
    """The receiver's surroundings at one moment; the device model decides them."""

    sky: Sky = Sky.OPEN
    indoor_acc_m: float | None = None  # median reported accuracy indoors; None: the profile's
    jump_probability: float | None = None  # overrides the profile's for this sky
    fallback: Fallback | None = Fallback.WIFI


@dataclass(frozen=True)
class Observation:
    """One reported position, with the truth about its error for tests and documentation."""

    lon: float
    lat: float
    acc_m: float
    src: str  # gps, wifi or cell, as in the fix object's `src`
    sats: int | None
    error_m: float  # distance from the true position
    multipath: bool  # inside a multipath jump episode
    jump_started: bool  # this fix started the episode
    cold: bool  # a cold-start fix


class Receiver(Protocol):
    """What a device model needs from a noise model, so that a scenario can be played under
    more than one (issue 14: rules tuned against the model they were written with pass; played
    with traces from another model, they raised false alerts). Implementations: `GpsReceiver`
    here, `HeavyTailReceiver` in noise_heavy.py; `noise_models.NOISE_MODELS` names them."""

    def observe(
        self, t: float, lon: float, lat: float, conditions: Conditions
    ) -> Observation | None:
        """The position reported at time `t` for a true position, or None for no fix at all."""
        ...

    def restart(self) -> None:
        """A power cycle: the next fixes are cold-start fixes."""
        ...


def correlated_unit(
    unit: tuple[float, float], elapsed: float, time_constant_s: float, rng: random.Random
) -> tuple[float, float]:
    """One AR(1) step of a 2-D standard normal: correlated over ``time_constant_s`` as real
    receivers' errors are, yet standard normal at every step (both noise models use it)."""
    rho = math.exp(-elapsed / time_constant_s)
    spread = math.sqrt(1.0 - rho * rho)
    return (
        rho * unit[0] + spread * rng.gauss(0.0, 1.0),
        rho * unit[1] + spread * rng.gauss(0.0, 1.0),
    )


def _lognormal(rng: random.Random, median: float, spread: float, low: float, high: float) -> float:
    return min(high, max(low, median * math.exp(rng.gauss(0.0, spread))))


def truncated_pareto(rng: random.Random, low: float, high: float, alpha: float) -> float:
    """Inverse-CDF draw from a Pareto(alpha) law cut to [low, high]: small jumps are common,
    500 m ones rare, which is the shape multipath has in the field."""
    u = rng.random()
    tail = 1.0 - (low / high) ** alpha
    return float(low / (1.0 - u * tail) ** (1.0 / alpha))


class GpsReceiver:
    """One device's error process: correlation, urban bias, jump episodes, cold starts."""

    def __init__(self, profile: NoiseProfile, rng: random.Random) -> None:
        self.profile = profile
        self._rng = rng
        self._unit = (rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0))
        self._last_t: float | None = None
        self._bias: tuple[float, float] | None = None
        self._jump_left = 0
        self._jump_vector = (0.0, 0.0)
        self._last_gnss_t: float | None = None
        self._cold_left = 0
        self._cold_index = 0

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
        self._update_bias(elapsed, conditions.sky)

        gnss = conditions.sky not in (Sky.DENIED, Sky.JAMMED)
        if gnss and conditions.sky is Sky.INDOOR and rng.random() < profile.indoor_dropout:
            gnss = False
        if not gnss:
            self._jump_left = 0
            return self._fallback(lon, lat, conditions)

        if self._last_gnss_t is not None and t - self._last_gnss_t > profile.cold_after_s:
            self.restart()
        self._last_gnss_t = t

        acc = self._gnss_accuracy(conditions)
        cold = self._cold_left > 0
        if cold:
            acc = max(acc, profile.cold_start_acc_m * 0.5**self._cold_index)
            self._cold_left -= 1
            self._cold_index += 1
        sigma = acc / K68
        east, north = sigma * self._unit[0], sigma * self._unit[1]
        if self._bias is not None:
            east, north = east + self._bias[0], north + self._bias[1]

        started = False
        if self._jump_left == 0:
            probability = conditions.jump_probability
            if probability is None:
                probability = {
                    Sky.URBAN: profile.jump_probability_urban,
                    Sky.INDOOR: profile.jump_probability_indoor,
                }.get(conditions.sky, profile.jump_probability_open)
            if rng.random() < probability:
                started = True
                magnitude = truncated_pareto(
                    rng, profile.jump_min_m, profile.jump_max_m, profile.jump_tail_alpha
                )
                angle = rng.uniform(0.0, 2.0 * math.pi)
                self._jump_vector = (magnitude * math.sin(angle), magnitude * math.cos(angle))
                self._jump_left = rng.randint(1, profile.jump_max_fixes)
        multipath = self._jump_left > 0
        if multipath:
            self._jump_left -= 1
            wobble = rng.uniform(0.9, 1.1)
            east += wobble * self._jump_vector[0]
            north += wobble * self._jump_vector[1]

        sats = self._satellites(conditions.sky, cold)
        lon2, lat2 = offset(lon, lat, east, north)
        return Observation(
            lon2, lat2, acc, "gps", sats, math.hypot(east, north), multipath, started, cold
        )

    def _update_bias(self, elapsed: float, sky: Sky) -> None:
        sigma = self.profile.urban_bias_sigma_m
        if sky is not Sky.URBAN:
            self._bias = None
            return
        if self._bias is None:
            self._bias = (self._rng.gauss(0.0, sigma), self._rng.gauss(0.0, sigma))
            return
        rho = math.exp(-elapsed / self.profile.urban_bias_time_s)
        spread = math.sqrt(1.0 - rho * rho)
        self._bias = (
            rho * self._bias[0] + spread * self._rng.gauss(0.0, sigma),
            rho * self._bias[1] + spread * self._rng.gauss(0.0, sigma),
        )

    def _gnss_accuracy(self, conditions: Conditions) -> float:
        profile, rng = self.profile, self._rng
        if conditions.sky is Sky.INDOOR:
            median = conditions.indoor_acc_m or profile.indoor_acc_median_m
            return _lognormal(rng, median, profile.acc_spread, 0.5 * median, 2.5 * median)
        low, high = profile.open_acc_range_m
        acc = _lognormal(rng, profile.open_acc_median_m, profile.acc_spread, low, high)
        if conditions.sky is Sky.URBAN:
            acc *= profile.urban_acc_factor
        return acc

    def _fallback(self, lon: float, lat: float, conditions: Conditions) -> Observation | None:
        profile, rng = self.profile, self._rng
        if conditions.fallback is None or rng.random() >= profile.fallback_probability:
            return None
        if conditions.fallback is Fallback.WIFI:
            low, high = profile.wifi_acc_range_m
            acc = _lognormal(rng, profile.wifi_acc_median_m, profile.acc_spread, low, high)
        else:
            low, high = profile.cell_acc_range_m
            acc = _lognormal(rng, profile.cell_acc_median_m, profile.acc_spread, low, high)
        sigma = acc / K68
        east, north = rng.gauss(0.0, sigma), rng.gauss(0.0, sigma)
        lon2, lat2 = offset(lon, lat, east, north)
        return Observation(
            lon2,
            lat2,
            acc,
            str(conditions.fallback),
            None,
            math.hypot(east, north),
            multipath=False,
            jump_started=False,
            cold=False,
        )

    def _satellites(self, sky: Sky, cold: bool) -> int:
        if cold:
            return self._rng.randint(4, 5)
        low, high = {Sky.URBAN: (5, 9), Sky.INDOOR: (3, 6)}.get(sky, (7, 12))
        return self._rng.randint(low, high)
