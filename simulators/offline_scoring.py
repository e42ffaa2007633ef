"""Score the scenario library with the real alert engine, without a broker or a database.

Each scenario's trace is fed, in arrival order and in batches the way ingest takes them, to the
same `AlertEngine` ingest runs, over the in-memory repository (`alerts/memory_repository.py`);
the clock rules tick in between. It answers "are the rules and thresholds right?" in seconds;
`tagwatch scenario score` answers "does the platform do it?" through the real pipeline. (This
replaced `tagwatch/offline.py`, a second engine that had drifted from the real one.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tagwatch.alerts.batch import NewPhoneReports, beacon_of
from tagwatch.alerts.engine import AlertEngine
from tagwatch.alerts.memory_repository import MemoryEngineRepository
from tagwatch.alerts.ports import Assignment, StoredEvent, StoredFix, SubjectRow, ZoneRow
from tagwatch.alerts.thresholds import DEFAULTS, Thresholds
from tagwatch.ingest.decode import Decoded, DeviceInfo, Limits, engine_events, engine_fixes
from tagwatch.ingest.decode import engine_phones as phone_columns
from tagwatch.ingest.owntracks import decode_owntracks
from tagwatch.simulators.noise_models import DEFAULT_NOISE_MODEL
from tagwatch.simulators.scenario import Scenario, ScenarioRun, build_timeline
from tagwatch.simulators.scoring import RaisedAlert, ScoreCard, naive_alerts, score_run
from tagwatch.simulators.wire import Publication, TraceEvent, TraceFix, read_trace

BATCH_S = 2.0
TICK_S = 30.0
REGION = "offline"


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def provision(run: ScenarioRun, thresholds: Thresholds = DEFAULTS) -> MemoryEngineRepository:
    """The run's plan in a memory repository, as `simulators/runner.provision` writes it to
    PostgreSQL: subjects numbered from 1 in one group, time-ranged assignments, zones."""
    plan = run.plan
    group = f"scenario-{run.run_id}"
    ids = {s.key: i + 1 for i, s in enumerate(plan.subjects)}
    interval = {d.device_id: d.expected_interval_s for d in plan.devices}
    repo = MemoryEngineRepository(thresholds=_thresholds_doc(thresholds))
    repo.subjects = [
        SubjectRow(ids[s.key], s.timezone, (group,), s.region_id or REGION, None, 1, s.home_beacon)
        for s in plan.subjects
    ]
    repo.assignment_rows = [
        Assignment(
            a.device_id,
            ids[a.subject_key],
            a.role,
            a.start.timestamp(),
            float("inf") if a.end is None else a.end.timestamp(),
            interval[a.device_id],
        )
        for a in plan.assignments
    ]
    repo.zones = [
        ZoneRow(
            zid,
            z.kind,
            z.geometry,  # type: ignore[arg-type]  # None for a victim zone, as in the table
            z.radius_m,
            z.buffer_m or None,
            ids[z.subject_key] if z.subject_key else None,
            None if z.subject_key else group,
            ids[z.victim_subject_key] if z.victim_subject_key else None,
            z.schedule_json(),
            None,
            z.name,
            False,
            zid,
        )
        for zid, z in enumerate(plan.zones, start=1)
    ]
    return repo


def _thresholds_doc(thresholds: Thresholds) -> dict[str, Any] | None:
    return None if thresholds == DEFAULTS else thresholds.to_json()


@dataclass(frozen=True)
class Step:
    """One step of a replay: the clock rules at ``now`` (no rows), or a batch that arrived by
    ``now`` (rows as ingest's writer passes them to the engine, and as the repository stores
    them)."""

    now: float
    fix_rows: list[tuple[Any, ...]] = field(default_factory=list)
    event_rows: list[tuple[Any, ...]] = field(default_factory=list)
    fixes: list[StoredFix] = field(default_factory=list)
    events: list[StoredEvent] = field(default_factory=list)
    phone_rows: list[Any] = field(default_factory=list)

    @property
    def is_tick(self) -> bool:
        return not self.fix_rows and not self.event_rows and not self.phone_rows


# a scenario may span days of replayed time; its publications all count as arriving in time
_PHONE_LIMITS = Limits(max_lateness_s=float("inf"), future_tolerance_s=float("inf"))


def phone_reports(publications: Iterable[Publication]) -> list[tuple[float, Any]]:
    """What the phones said about themselves (battery, mode, pings), decoded by the same
    OwnTracks decoder as ingest, with when each arrived: the engine's phone rules see offline
    what they see on the platform."""
    out: list[tuple[float, Any]] = []
    for p in publications:
        if not p.topic.startswith("owntracks/"):
            continue
        decoded = Decoded()
        device = DeviceInfo(p.device_id, "phone", "/".join(p.topic.split("/")[:3]))
        decode_owntracks(device, p.topic, p.payload, p.at, _PHONE_LIMITS, decoded)
        out += [(p.at, row) for row in decoded.phones]
    return out


def steps(run: ScenarioRun) -> Iterator[Step]:
    """``run``'s trace in arrival order, in batches of `BATCH_S` the way ingest takes them, with
    a clock tick every `TICK_S` in between and to the end of the run."""
    fixes, events = read_trace(run.publications)
    arrivals: list[tuple[float, int, TraceFix | TraceEvent]]
    arrivals = [(f.received_at, 1, f) for f in fixes]
    arrivals += [(e.received_at, 0, e) for e in events]
    phones: list[tuple[float, int, Any]] = [
        (at, 2, row) for at, row in phone_reports(run.publications)
    ]
    arrivals = sorted([*arrivals, *phones], key=lambda a: (a[0], a[1]))
    blank = (None, None, None, None, None)  # alt, spd, hdg, sats, batt
    clock = run.start.timestamp()
    seq = 0
    i = 0
    while i < len(arrivals):
        start = arrivals[i][0]
        while clock + TICK_S < start:
            clock += TICK_S
            yield Step(clock)
        j = i
        while j < len(arrivals) and arrivals[j][0] <= start + BATCH_S:
            j += 1
        step = Step(arrivals[j - 1][0])
        for _, _, item in arrivals[i:j]:
            if isinstance(item, tuple):  # a phone's report (ingest.decode.PhoneRow)
                step.phone_rows.append(item)
                continue
            seq += 1
            at = _dt(item.ts)
            if isinstance(item, TraceFix):
                step.fix_rows.append(
                    (item.device_id, at, seq, item.lat, item.lon, item.acc, *blank, item.src)
                )
                step.fixes.append(
                    StoredFix(item.device_id, item.ts, item.lon, item.lat, item.acc, item.src)
                )
            else:
                detail = None if item.detail is None else json.dumps(item.detail)
                step.event_rows.append((item.device_id, at, seq, item.type, None, detail))
                step.events.append(
                    StoredEvent(item.device_id, item.ts, item.type, beacon_of(item.detail))
                )
        i = j
        yield step
    end = run.end.timestamp()
    while clock < end:
        clock += TICK_S
        yield Step(clock)


def replay(run: ScenarioRun, thresholds: Thresholds = DEFAULTS) -> list[RaisedAlert]:
    """The alerts the engine raises on ``run``'s trace, with the times it raised them."""
    repo = provision(run, thresholds)
    engine = AlertEngine()
    for step in steps(run):
        repo.now = step.now
        if step.is_tick:
            engine.tick(repo)
        else:
            repo.store(step.fixes, step.events)
            phones: NewPhoneReports = phone_columns(step.phone_rows)
            engine.process(
                repo, engine_fixes(step.fix_rows), engine_events(step.event_rows), phones
            )
    return raised(repo)


def raised(repo: MemoryEngineRepository) -> list[RaisedAlert]:
    """The repository's alerts as the scorer reads them (subject ids as text, like the API)."""
    return [
        RaisedAlert(
            a.type,
            str(a.subject_id),
            _dt(a.opened_at),
            late=a.late,
            first_fix_at=None if a.first_fix_at is None else _dt(a.first_fix_at),
            alert_id=str(a.alert_id),
        )
        for a in repo.alerts
    ]


def score_offline(
    scenarios: Iterable[Scenario],
    thresholds: Thresholds = DEFAULTS,
    *,
    noise_model: str = DEFAULT_NOISE_MODEL,
) -> tuple[list[ScoreCard], list[ScoreCard]]:
    """The engine's and the naive tracker's scorecards, the traces drawn from `noise_model`
    (noise_models.NOISE_MODELS): a library that passes only under the model it was written
    with proves little (issue 14)."""
    cards, naive = [], []
    for scenario in scenarios:
        run = build_timeline(scenario, "offline", noise_model=noise_model)
        ids = {str(i + 1): s.key for i, s in enumerate(run.plan.subjects)}
        cards.append(score_run(run, replay(run, thresholds), subject_ids=ids))
        naive.append(score_run(run, naive_alerts(run)))
    return cards, naive
