"""Alert thresholds: defaults a monitoring centre would choose, overridable globally, per subject
and per zone (the most specific wins).

Why these defaults (see docs/alerts.md for the full table):

* GPS multipath throws a fix 100-500 m away for one to three fixes (FIELD.md). Zone episodes
  therefore need four consecutive confident fixes, or two or more spanning a time no three-fix
  jump at the tag's 60 s rate can span (three minutes for zones, two for the band), before they
  open (150 s for exclusion and victim zones, three minutes for curfew and inclusion). In pursuit
  (15 s) that is under a minute; at 60 s, three minutes: inside NIJ 1004's four-minute budget for
  active tracking.
* An episode closes after three confident fixes on the right side spanning two minutes, so a
  subject walking along a boundary does not flap enter/exit.
* A confident fix is only evidence for opening an episode when it is beyond the boundary by at
  least twice its accuracy (`acc` is a 68 % radius: one fix in three lies outside it, so indoor
  drift would otherwise pile up "confident" fixes all night); an uncertain fix breaks the run.
* Curfew presence is asymmetric. Away needs the evidence above (beyond twice the accuracy, for
  the curfew dwell); home needs only an accuracy circle that overlaps the home, because a tag
  indoors reports 40-150 m of accuracy (tens to hundreds of metres indoors, FIELD.md) and a
  home plot is often smaller: no fix there is ever wholly inside. A circle wider than
  ``presence_max_acc_m`` (500 m: Wi-Fi and cell fallbacks, "hundreds of metres to kilometres",
  FIELD.md) overlaps any home nearby and says nothing. Silence during curfew is a communication
  problem, not a breach, unless the subject was established away before going silent.
  Away evidence also needs an outdoor-quality fix: ``acc`` at most ``away_max_acc_m`` (25 m:
  outdoor GNSS is about 10 m, NIJ 1004.00, and a tag's outdoor accuracy stays within 3-25 m).
  Indoors the reported accuracy is itself unreliable (it understates the true error, and
  errors are heavy-tailed), so an indoor-class fix two "accuracies" outside a small home is
  not evidence that anyone left it; a person who really left is outdoors, where fixes are good.
* Silence is judged per device: three reporting intervals plus a minute, where the interval is
  the device's own or the 5-minute heartbeat a tag keeps while it has no GPS, whichever is
  longer (16 minutes for a tag, 46 for a phone that reports every 15), not one global timeout.
* Phones (OwnTracks): battery low at 20 %, critical at 10 % (the apps' own and the phones'
  usual low-power warnings), cleared when charging or 5 points above the threshold; a phone
  whose last report said it was online and in move mode (which reports every few minutes)
  and has then been silent for 15 minutes raises phone_monitoring_degraded; fixes without an
  accuracy for an hour (and none with one) raise position_accuracy_unknown.
* A strap tamper unresolved for 15 minutes, an hour of silence, or half an hour outside the
  jurisdiction makes an absconder.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

INDOOR_ACCURACY_SPAN_M: Final = 60.0
"""A curfew (home) zone narrower than this across cannot hold a typical indoor fix's accuracy
circle: NIJ 1004.00's indoor accuracy benchmark is about 30 m (FIELD.md), a 60 m circle. GPS can
then show presence as consistent, never verified; the zone check warns (store.zones)."""


class ThresholdError(ValueError):
    """A threshold override that cannot be used; the message says which key and why."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    entry_fixes: int = 4
    entry_s: float = 150.0
    warning_fixes: int = 3
    warning_s: float = 150.0
    exit_fixes: int = 4
    exit_s: float = 180.0
    curfew_fixes: int = 4
    curfew_s: float = 180.0
    victim_fixes: int = 3
    victim_s: float = 120.0
    clear_fixes: int = 3
    clear_s: float = 120.0
    pending_gap_s: float = 900.0
    evidence_acc_multiple: float = 2.0
    presence_max_acc_m: float = 500.0
    away_max_acc_m: float = 25.0
    no_communication_intervals: float = 3.0
    no_communication_grace_s: float = 60.0
    heartbeat_s: float = 300.0
    gps_lost_after_s: float = 600.0
    late_after_s: float = 300.0
    victim_max_age_s: float = 1200.0
    absconder_tamper_s: float = 900.0
    absconder_silence_s: float = 3600.0
    absconder_exit_s: float = 1800.0
    phone_battery_low_pct: float = 20.0
    phone_battery_critical_pct: float = 10.0
    phone_move_silence_s: float = 900.0
    unknown_accuracy_s: float = 3600.0

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Thresholds:
        """A copy with ``overrides`` applied; unknown keys and non-positive values are refused."""
        if not overrides:
            return self
        known = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            spec = known.get(key)
            if spec is None:
                msg = f"unknown threshold {key!r}; known: {', '.join(sorted(known))}"
                raise ThresholdError(msg)
            if isinstance(value, bool) or not isinstance(value, int | float):
                msg = f"threshold {key!r} must be a number, not {value!r}"
                raise ThresholdError(msg)
            if not (math.isfinite(value) and value > 0):
                msg = f"threshold {key!r} must be positive, not {value!r}"
                raise ThresholdError(msg)
            if spec.type == "int":
                if int(value) != value:
                    msg = f"threshold {key!r} must be a whole number, not {value!r}"
                    raise ThresholdError(msg)
                changes[key] = int(value)
            else:
                changes[key] = float(value)
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def silence_limit_s(self, expected_interval_s: float) -> float:
        """How long a device may be silent before no_communication."""
        talking = max(expected_interval_s, self.heartbeat_s)
        return talking * self.no_communication_intervals + self.no_communication_grace_s


DEFAULTS = Thresholds()


def layered(*layers: Mapping[str, Any] | None, base: Thresholds = DEFAULTS) -> Thresholds:
    """Apply overrides from the least to the most specific (global, subject, zone)."""
    result = base
    for layer in layers:
        result = result.with_overrides(layer)
    return result
