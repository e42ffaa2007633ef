"""Scoring: the alerts a platform raised against the alerts a scenario says must (not) be raised.

Matching is by alert type, subject and the time the violation happened: an alert's evidence
time is the time of the first fix (or event) that proves it when the platform reports one,
else its opening time. Each expectation takes at most one alert, because the contract raises
one alert per episode: a second curfew alert for the same evening is a false alert. Alerts
that match no expectation are false, unless an `[[allow]]` tolerates them; an alert that breaks
a `[[forbid]]` is always false and is listed as such.

The naive baseline is the comparison the field needs: the same decoded traces through plain
point-in-polygon enter/exit on every raw fix (no accuracy, no dwell), device events passed
through one for one, and one global silence timeout for every device. Its rules are what
FIELD.md says trackers do and users complain of, so the ratio of false alerts can be stated
side by side with the platform's.
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import shape

from tagwatch.simulators.geo import WGS84
from tagwatch.simulators.scenario import AlertRule, Expectation, ScenarioRun, ZonePlan
from tagwatch.simulators.wire import TraceEvent, TraceFix, read_trace


@dataclass(frozen=True)
class RaisedAlert:
    """An alert as the platform raised it; `subject` is a key, fresh name, case ref or id that
    the caller can map (see `score_run`)."""

    type: str
    subject: str
    opened_at: datetime
    late: bool = False
    first_fix_at: datetime | None = None
    alert_id: str | None = None

    @property
    def evidence_at(self) -> datetime:
        return self.first_fix_at or self.opened_at


@dataclass(frozen=True)
class Match:
    expectation: Expectation
    alert: RaisedAlert
    delay_s: float  # opened_at minus the proving fix (or the window start without one)

    @property
    def slow(self) -> bool:
        within = self.expectation.within_s
        return within is not None and self.delay_s > within


@dataclass(frozen=True)
class ScoreCard:
    scenario: str
    expected: int
    raised: int
    matched: tuple[Match, ...]
    missed: tuple[Expectation, ...]
    false: tuple[RaisedAlert, ...]
    forbidden: tuple[RaisedAlert, ...]  # the false alerts that break a [[forbid]]
    tolerated: tuple[RaisedAlert, ...]  # unexpected but allowed by an [[allow]]

    @property
    def false_ratio(self) -> float:
        return len(self.false) / self.raised if self.raised else 0.0

    @property
    def delays_s(self) -> list[float]:
        return [m.delay_s for m in self.matched]

    @property
    def slow(self) -> tuple[Match, ...]:
        return tuple(m for m in self.matched if m.slow)

    @property
    def passed(self) -> bool:
        return not self.missed and not self.false and not self.slow


def score(
    expectations: Sequence[Expectation],
    forbidden: Sequence[AlertRule],
    allowed: Sequence[AlertRule],
    raised: Iterable[RaisedAlert],
    *,
    scenario: str = "",
    subject_of: Callable[[str], str | None] = lambda ref: ref,
) -> ScoreCard:
    """Match raised alerts to expectations; everything unmatched is false unless allowed."""
    alerts = sorted(raised, key=lambda a: a.evidence_at)
    subjects = [subject_of(a.subject) for a in alerts]
    used: set[int] = set()
    matched: list[Match] = []
    missed: list[Expectation] = []
    for expectation in sorted(expectations, key=lambda e: (e.after, e.before)):
        found = None
        for index, alert in enumerate(alerts):
            if (
                index not in used
                and alert.type == expectation.alert
                and subjects[index] == expectation.subject
                and expectation.after <= alert.evidence_at <= expectation.before
                and (expectation.late is None or alert.late == expectation.late)
            ):
                found = index
                break
        if found is None:
            missed.append(expectation)
            continue
        used.add(found)
        alert = alerts[found]
        proof = alert.first_fix_at or expectation.after
        matched.append(Match(expectation, alert, (alert.opened_at - proof).total_seconds()))
    false: list[RaisedAlert] = []
    forbidden_hits: list[RaisedAlert] = []
    tolerated: list[RaisedAlert] = []
    for index, alert in enumerate(alerts):
        if index in used:
            continue
        subject = subjects[index]
        if any(rule.covers(alert.type, subject, alert.evidence_at) for rule in forbidden):
            false.append(alert)
            forbidden_hits.append(alert)
        elif any(rule.covers(alert.type, subject, alert.evidence_at) for rule in allowed):
            tolerated.append(alert)
        else:
            false.append(alert)
    return ScoreCard(
        scenario=scenario,
        expected=len(expectations),
        raised=len(alerts),
        matched=tuple(matched),
        missed=tuple(missed),
        false=tuple(false),
        forbidden=tuple(forbidden_hits),
        tolerated=tuple(tolerated),
    )


def score_run(
    run: ScenarioRun,
    raised: Iterable[RaisedAlert],
    subject_ids: Mapping[str, str] | None = None,
) -> ScoreCard:
    """Score one run; `subject_ids` maps the platform's subject ids (as strings) to keys."""
    ids = dict(subject_ids or {})

    def subject_of(ref: str) -> str | None:
        return ids.get(str(ref)) or run.subject_key(ref)

    return score(
        run.expectations,
        run.forbidden,
        run.allowed,
        raised,
        scenario=run.scenario,
        subject_of=subject_of,
    )


def to_scenario_time(
    wall: datetime, wall_start: datetime, scenario_start: datetime, speedup: float
) -> datetime:
    """Map a server time of a compressed run back onto the scenario's (device) clock."""
    return scenario_start + (wall - wall_start) * speedup


# -- the naive baseline ---------------------------------------------------------------------


@dataclass(frozen=True)
class NaiveRules:
    no_communication_after_s: float = 600.0  # one global timeout for every device
    late_after_s: float = 300.0  # a fix received this long after its time counts as late


EVENT_ALERTS = {
    "strap_tamper": "strap_tamper",
    "case_tamper": "case_tamper",
    "battery_low": "battery_low",
    "battery_critical": "battery_critical",
    "gps_lost": "gps_lost",
    "jamming_detected": "gps_jamming",
}


class _ZoneShape:
    """A fixed zone, for vectorized raw inside tests and metric distances over a whole track."""

    def __init__(self, zone: ZonePlan) -> None:
        assert zone.geometry is not None
        self.geometry = shape(zone.geometry)
        self.radius = zone.radius_m
        centre = self.geometry.centroid
        self.transformer = Transformer.from_crs(
            "EPSG:4326",
            f"+proj=aeqd +lat_0={centre.y} +lon_0={centre.x} +datum=WGS84 +units=m",
            always_xy=True,
        )
        self.metric = shapely.transform(
            self.geometry,
            lambda xy: np.column_stack(self.transformer.transform(xy[:, 0], xy[:, 1])),
        )

    def inside_and_distance(
        self, lons: np.ndarray, lats: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw point in polygon (or within the radius), and metres outside the zone."""
        if self.radius is not None:
            centre = self.geometry
            _, _, metres = WGS84.inv(
                np.full_like(lons, centre.x), np.full_like(lats, centre.y), lons, lats
            )
            metres = np.asarray(metres)
            return metres <= self.radius, np.maximum(metres - self.radius, 0.0)
        x, y = (np.asarray(v) for v in self.transformer.transform(lons, lats))
        inside = shapely.contains_xy(self.metric, x, y)
        distance = shapely.distance(self.metric, shapely.points(x, y))
        return np.asarray(inside), np.asarray(distance)


def _transitions(flags: Sequence[bool], initially: bool = False) -> list[int]:
    """Indices where a condition turns on: the naive rule raises an alert at each one."""
    out, before = [], initially
    for index, flag in enumerate(flags):
        if flag and not before:
            out.append(index)
        before = bool(flag)
    return out


def naive_alerts(run: ScenarioRun, rules: NaiveRules | None = None) -> list[RaisedAlert]:
    """The alerts a plain point-in-polygon tracker would raise on the run's own traces."""
    rules = rules or NaiveRules()
    plan = run.plan
    fixes, events = read_trace(run.publications)
    holder = {d.device_id: d for d in plan.devices}
    by_device: dict[str, list[TraceFix]] = defaultdict(list)
    for fix in fixes:
        by_device[fix.device_id].append(fix)
    victim_track: dict[str, tuple[list[float], list[tuple[float, float]]]] = {}
    for device in plan.devices:
        if device.role == "victim":
            positions = victim_track.setdefault(device.subject_key, ([], []))
            for fix in by_device.get(device.device_id, []):
                positions[0].append(fix.ts)
                positions[1].append((fix.lon, fix.lat))
    for times, points in victim_track.values():
        order = sorted(range(len(times)), key=times.__getitem__)
        times[:] = [times[i] for i in order]
        points[:] = [points[i] for i in order]

    timezones = {s.key: s.timezone for s in plan.subjects}
    shapes = {z.key: _ZoneShape(z) for z in plan.zones if z.geometry is not None}
    alerts: list[RaisedAlert] = []

    def raise_at(kind: str, subject: str, fix: TraceFix | TraceEvent) -> None:
        alerts.append(
            RaisedAlert(
                kind,
                subject,
                datetime.fromtimestamp(fix.received_at, UTC),
                late=fix.received_at - fix.ts > rules.late_after_s,
                first_fix_at=datetime.fromtimestamp(fix.ts, UTC),
            )
        )

    for device_id, track in by_device.items():
        device = holder[device_id]
        if device.role != "offender" or not track:
            continue
        subject = device.subject_key
        lons = np.array([f.lon for f in track])
        lats = np.array([f.lat for f in track])
        for zone in plan.zones:
            if zone.subject_key not in (None, subject):
                continue
            active = _active_flags(zone, track, timezones.get(subject, zone.timezone))
            if zone.kind == "victim":
                inside, outside_by = _victim_distances(zone, track, victim_track)
                near = ~np.isnan(outside_by)
            else:
                inside, outside_by = shapes[zone.key].inside_and_distance(lons, lats)
                near = np.ones(len(track), dtype=bool)
            inside = inside & active & near
            band = (~inside) & active & near & (outside_by <= zone.buffer_m)
            if zone.kind in ("exclusion", "victim"):
                entry, warning = (
                    ("exclusion_zone_entry", "exclusion_zone_warning")
                    if zone.kind == "exclusion"
                    else ("victim_proximity", "victim_proximity_warning")
                )
                for index in _transitions(inside.tolist()):
                    raise_at(entry, subject, track[index])
                if zone.buffer_m > 0:
                    for index in _transitions(band.tolist()):
                        raise_at(warning, subject, track[index])
            elif zone.kind == "inclusion":
                outside = (~inside) & active
                for index in _transitions(outside.tolist()):
                    raise_at("inclusion_zone_exit", subject, track[index])
            elif zone.kind == "curfew":
                away = (~inside) & active
                for index in _transitions(away.tolist()):
                    raise_at("curfew_violation", subject, track[index])

    for event in events:
        kind = EVENT_ALERTS.get(event.type)
        if kind is not None:
            raise_at(kind, holder[event.device_id].subject_key, event)

    arrivals: dict[str, list[float]] = defaultdict(list)
    for publication in run.publications:
        arrivals[publication.device_id].append(publication.at)
    end = run.end.timestamp()
    for device in plan.devices:
        times = sorted(arrivals.get(device.device_id, []))
        for before, after in zip(times, [*times[1:], end], strict=True):
            if after - before > rules.no_communication_after_s:
                opened = before + rules.no_communication_after_s
                alerts.append(
                    RaisedAlert(
                        "no_communication",
                        device.subject_key,
                        datetime.fromtimestamp(opened, UTC),
                    )
                )
    alerts.sort(key=lambda a: a.evidence_at)
    return alerts


def _active_flags(zone: ZonePlan, track: Sequence[TraceFix], timezone: str) -> np.ndarray:
    if zone.schedule is None:
        return np.ones(len(track), dtype=bool)
    tz = ZoneInfo(timezone)
    schedule = zone.schedule
    return np.array(
        [schedule.is_active(datetime.fromtimestamp(f.ts, UTC), tz) for f in track], dtype=bool
    )


def _victim_distances(
    zone: ZonePlan,
    track: Sequence[TraceFix],
    victim_track: Mapping[str, tuple[list[float], list[tuple[float, float]]]],
) -> tuple[np.ndarray, np.ndarray]:
    """Inside the radius around the victim's last reported position; NaN before any."""
    times, points = victim_track.get(zone.victim_subject_key or "", ([], []))
    radius = zone.radius_m or 0.0
    centres = []
    for fix in track:
        index = bisect.bisect_right(times, fix.ts) - 1
        centres.append(points[index] if index >= 0 else (np.nan, np.nan))
    if not centres:
        return np.zeros(0, dtype=bool), np.zeros(0)
    lon0 = np.array([c[0] for c in centres])
    lat0 = np.array([c[1] for c in centres])
    lons = np.array([f.lon for f in track])
    lats = np.array([f.lat for f in track])
    known = ~np.isnan(lon0)
    metres = np.full(len(track), np.nan)
    if known.any():
        _, _, distances = WGS84.inv(lon0[known], lat0[known], lons[known], lats[known])
        metres[known] = distances
    inside = np.where(known, metres <= radius, False)
    return inside, np.where(known, np.maximum(metres - radius, 0.0), np.nan)


# -- reporting ------------------------------------------------------------------------------


def _delay(card: ScoreCard) -> str:
    delays = card.delays_s
    if not delays:
        return "-"
    return f"{statistics.median(delays):.0f}/{max(delays):.0f}"


def format_scorecards(
    cards: Sequence[ScoreCard],
    naive: Sequence[ScoreCard] | None = None,
    label: str = "platform",
    noise_model: str | None = None,
) -> str:
    """The table `tagwatch scenario score` prints, with the naive baseline alongside; headed
    by the noise model when there is one to tell apart."""
    naive_by = {c.scenario: c for c in naive or []}
    head = ["scenario", "expected", "raised", "matched", "missed", "false", "delay s med/max"]
    if naive is not None:
        head += ["naive raised", "naive false"]
    rows: list[list[Any]] = []
    for card in cards:
        row: list[Any] = [
            card.scenario,
            card.expected,
            card.raised,
            len(card.matched),
            len(card.missed),
            len(card.false),
            _delay(card),
        ]
        if naive is not None:
            other = naive_by.get(card.scenario)
            row += ["-", "-"] if other is None else [other.raised, len(other.false)]
        rows.append(row)
    total: list[Any] = [
        "total",
        sum(c.expected for c in cards),
        sum(c.raised for c in cards),
        sum(len(c.matched) for c in cards),
        sum(len(c.missed) for c in cards),
        sum(len(c.false) for c in cards),
        "",
    ]
    if naive is not None:
        total += [sum(c.raised for c in naive), sum(len(c.false) for c in naive)]
    rows.append(total)
    widths = [max(len(str(x)) for x in column) for column in zip(head, *rows, strict=True)]
    lines = [] if noise_model is None else [f"noise model: {noise_model}"]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(head, widths, strict=True))]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in rows]
    raised = sum(c.raised for c in cards)
    false = sum(len(c.false) for c in cards)
    summary = f"false-alert ratio: {label} {false}/{raised}"
    if naive is not None:
        naive_raised = sum(c.raised for c in naive)
        naive_false = sum(len(c.false) for c in naive)
        summary += f", naive baseline {naive_false}/{naive_raised}"
    lines.append(summary)
    return "\n".join(lines)


def summary_line(
    noise_model: str, cards: Sequence[ScoreCard], naive: Sequence[ScoreCard] | None = None
) -> str:
    """One line per noise model, so that a library passing under one model and failing under
    the other shows at a glance: expected, matched, missed and false, beside the naive tracker."""
    line = (
        f"{noise_model:<9} expected {sum(c.expected for c in cards)}"
        f"  matched {sum(len(c.matched) for c in cards)}"
        f"  missed {sum(len(c.missed) for c in cards)}"
        f"  false {sum(len(c.false) for c in cards)}"
    )
    if naive is not None:
        line += (
            f"  | naive matched {sum(len(c.matched) for c in naive)}"
            f"  missed {sum(len(c.missed) for c in naive)}"
            f"  false {sum(len(c.false) for c in naive)}"
        )
    return line


def format_by_model(
    results: Mapping[str, tuple[Sequence[ScoreCard], Sequence[ScoreCard] | None]],
    label: str = "platform",
) -> str:
    """One scorecard per noise model, then a summary line per model."""
    blocks = [
        format_scorecards(cards, naive, label, noise_model=model)
        for model, (cards, naive) in results.items()
    ]
    summary = [summary_line(model, cards, naive) for model, (cards, naive) in results.items()]
    return "\n\n".join([*blocks, "\n".join(summary)])
