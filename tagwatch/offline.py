"""Score the rule core on the scenario library without a broker or a database.

The same geofence index and rules as ingest, fed with each scenario's trace in arrival order, in
batches the way ingest takes them, with the clock rules ticking in between. It answers "are the
rules and thresholds right?" in seconds; `tagwatch scenario score` answers "does the platform do
it?" through the real pipeline.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np

from tagwatch.alerts.escalation import OpenAlert, absconder, due
from tagwatch.alerts.observe import Episode, RawFix, late_episodes, observe
from tagwatch.alerts.rules import (
    AlertChange,
    EventObs,
    Observation,
    SubjectState,
    ZoneMeta,
    evaluate,
    tick,
)
from tagwatch.alerts.thresholds import DEFAULTS, Thresholds
from tagwatch.geofence import Schedule, VictimPositions, Zone, ZoneIndex, ZoneKind
from tagwatch.simulators.scenario import Scenario, ScenarioRun, build_timeline
from tagwatch.simulators.scoring import RaisedAlert, ScoreCard, naive_alerts, score_run
from tagwatch.simulators.wire import TraceEvent, TraceFix, read_trace

BATCH_S = 2.0
TICK_S = 30.0
LATE_CONTEXT_S = 1800.0


def replay(run: ScenarioRun, thresholds: Thresholds = DEFAULTS) -> list[RaisedAlert]:
    plan = run.plan
    subject_id = {s.key: i + 1 for i, s in enumerate(plan.subjects)}
    index = ZoneIndex()
    for s in plan.subjects:
        index.set_subject(subject_id[s.key], timezone=s.timezone)
    metas: dict[int, ZoneMeta] = {}
    victim_zones: dict[str, list[int]] = defaultdict(list)
    curfews: dict[int, list[int]] = defaultdict(list)
    schedules: dict[int, tuple[Schedule, str]] = {}
    for zid, z in enumerate(plan.zones, start=1):
        sj = z.schedule_json()
        schedule = Schedule.from_json(sj) if sj is not None else None
        owner = subject_id[z.subject_key] if z.subject_key else None
        index.upsert(
            Zone(
                zid,
                ZoneKind(z.kind),
                z.geometry,
                radius_m=z.radius_m,
                buffer_m=z.buffer_m or None,
                subject_id=owner,
                schedule=schedule,
            )
        )
        metas[zid] = ZoneMeta(
            zid, z.kind, z.buffer_m or None, thresholds, z.name, shared=owner is None
        )
        if z.victim_subject_key:
            victim_zones[z.victim_subject_key].append(zid)
        if z.kind == "curfew" and owner is not None:
            curfews[owner].append(zid)
            if schedule is not None:
                schedules[zid] = (schedule, z.timezone)
    holder = {d.device_id: d for d in plan.devices}
    fixes, events = read_trace(run.publications)
    arrivals: list[tuple[float, int, TraceFix | TraceEvent]]
    arrivals = [(f.received_at, 1, f) for f in fixes]
    arrivals += [(e.received_at, 0, e) for e in events]
    arrivals.sort(key=lambda a: (a[0], a[1]))
    states: dict[int, SubjectState] = defaultdict(SubjectState)
    for d in plan.devices:
        if d.role == "offender":
            dev = states[subject_id[d.subject_key]].device(d.device_id)
            dev.expected_interval_s = d.expected_interval_s
    history: dict[int, list[Observation]] = defaultdict(list)
    victim_pos: dict[int, tuple[float, float, float, float]] = {}
    alerts: dict[str, tuple[int, AlertChange, float | None]] = {}

    def curfew_active(zone_id: int, t: float) -> bool:
        if zone_id not in schedules:
            return True
        schedule, tz = schedules[zone_id]
        return bool(schedule.active([t], tz)[0])

    escalated: set[str] = set()

    def escalate(now: float) -> None:
        for key, (sid, c, cleared) in list(alerts.items()):
            src = OpenAlert(key, c.type, c.first_fix_at or c.at, cleared, False, key in escalated)
            busy = any(
                c2.type == "absconder" and s2 == sid and end2 is None
                for s2, c2, end2 in alerts.values()
            )
            if not busy and due(src, now, thresholds):
                escalated.add(key)
                apply(sid, [absconder(src, states[sid], now)])

    def apply(sid: int, changes: Iterable[AlertChange]) -> None:
        for c in changes:
            if c.action == "open" and c.episode_key not in alerts:
                alerts[c.episode_key] = (sid, c, None)
            elif c.action == "clear" and c.episode_key in alerts:
                s, opened, _ = alerts[c.episode_key]
                alerts[c.episode_key] = (s, opened, c.at)

    clock = run.start.timestamp()
    i = 0
    while i < len(arrivals):
        start = arrivals[i][0]
        while clock + TICK_S < start:
            clock += TICK_S
            for sid, st in states.items():
                changes, _ = tick(st, metas, thresholds, clock, curfews[sid], curfew_active)
                apply(sid, changes)
            escalate(clock)
        j = i
        while j < len(arrivals) and arrivals[j][0] <= start + BATCH_S:
            j += 1
        now = arrivals[j - 1][0]
        batch = [a[2] for a in arrivals[i:j]]
        i = j
        raw: list[RawFix] = []
        obs: dict[int, list[Observation]] = defaultdict(list)
        for item in batch:
            d = holder[item.device_id]
            sid = subject_id[d.subject_key]
            if isinstance(item, TraceFix):
                if d.role == "victim":
                    for zid in victim_zones[d.subject_key]:
                        old = victim_pos.get(zid)
                        if old is None or old[0] <= item.ts:
                            victim_pos[zid] = (item.ts, item.lon, item.lat, item.acc)
                    continue
                raw.append(
                    RawFix(sid, item.device_id, item.ts, item.lon, item.lat, item.acc, item.src)
                )
            elif d.role == "offender":
                obs[sid].append(EventObs(item.ts, item.device_id, item.type))
        victims = None
        if victim_pos:
            zids = list(victim_pos)
            columns = np.array([victim_pos[z] for z in zids], dtype=np.float64)
            victims = VictimPositions(
                np.array(zids, dtype=np.int64),
                columns[:, 1],
                columns[:, 2],
                columns[:, 0],
                columns[:, 3],
                thresholds.victim_max_age_s,
            )
        for fo in observe(index, raw, victims):
            sid = subject_id[holder[fo.device_id].subject_key]
            obs[sid].append(fo)
        for sid, items in obs.items():
            st = states[sid]
            history[sid].extend(items)
            wm = st.watermark
            late = [o for o in items if wm is not None and o.ts < wm]
            live = [o for o in items if wm is None or o.ts >= wm]
            apply(sid, evaluate(st, live, metas, thresholds, now))
            if late:
                lo = min(o.ts for o in late) - LATE_CONTEXT_S
                hi = max(o.ts for o in late) + LATE_CONTEXT_S
                window = [o for o in history[sid] if lo <= o.ts <= hi]
                existing = [
                    Episode(c.type, c.zone_id, c.device_id, c.first_fix_at or c.at, end)
                    for s, c, end in alerts.values()
                    if s == sid
                ]
                apply(sid, late_episodes(window, metas, thresholds, now, existing))
    end = run.end.timestamp()
    while clock < end:
        clock += TICK_S
        for sid, st in states.items():
            changes, _ = tick(st, metas, thresholds, clock, curfews[sid], curfew_active)
            apply(sid, changes)
        escalate(clock)
    return [
        RaisedAlert(
            c.type,
            str(sid),
            datetime.fromtimestamp(c.at, UTC),
            late=c.late,
            first_fix_at=None
            if c.first_fix_at is None
            else datetime.fromtimestamp(c.first_fix_at, UTC),
            alert_id=key,
        )
        for key, (sid, c, _) in alerts.items()
    ]


def score_offline(
    scenarios: Iterable[Scenario], thresholds: Thresholds = DEFAULTS
) -> tuple[list[ScoreCard], list[ScoreCard]]:
    cards, naive = [], []
    for scenario in scenarios:
        run = build_timeline(scenario, "offline")
        ids = {str(i + 1): s.key for i, s in enumerate(run.plan.subjects)}
        cards.append(score_run(run, replay(run, thresholds), subject_ids=ids))
        naive.append(score_run(run, naive_alerts(run)))
    return cards, naive
