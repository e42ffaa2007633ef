"""The alert engine inside ingest: geofence + rules over each stored batch, in its transaction.

An orchestrator without SQL: every read and write goes through the `EngineRepository` port
(`alerts/ports.py`); `store/engine_repository.py` is its PostgreSQL adapter on ingest's connection,
so ingest owns the transaction the batch and its alerts commit in.

For every batch ingest writes, the engine takes the fixes and events that were new (a repeat
changes nothing), finds who held each device at the fix's own time, locks those subjects' rule
state rows (in subject order, so several workers never deadlock and never interleave on one
subject), classifies the offenders' fixes in one geofence call, runs the rules, and writes
alerts, their history, the outbox and the new state - all before ingest commits and only then
acknowledges to the broker. Killing ingest anywhere therefore replays the batch against the state
as it was before it: no alert is lost or raised twice (the episode key is unique per subject).

Fixes older than what the subject's state has seen (a store-and-forward upload behind live
fixes) do not touch the live state: the window around them is re-evaluated from stored fixes and
only episodes that no alert covers yet are raised, marked late.

The clock rules (silence, GPS lost, curfew while away, absconder escalation) run in `tick`, in
their own transaction, on the rule clock: the wall clock, or a scenario replay's clock when the
`rule_clock` row is set.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tagwatch.alerts import vocabulary as v
from tagwatch.alerts.batch import NewEvents, NewFixes, NewPhoneReports
from tagwatch.alerts.escalation import OpenAlert, absconder, due, limit_s
from tagwatch.alerts.holding import holds, release
from tagwatch.alerts.observe import RawFix, late_episodes, observe
from tagwatch.alerts.ports import Assignment, EngineRepository, StateRow, ZoneRow
from tagwatch.alerts.rules import (
    AlertChange,
    EventObs,
    FixObs,
    Observation,
    PhoneObs,
    SubjectState,
    ZoneMeta,
    evaluate,
    tick,
)
from tagwatch.alerts.rules import due_at as next_due
from tagwatch.alerts.state_cache import StateCache
from tagwatch.alerts.state_codec import (
    decode_state,
    encode_document,
    encode_state,
    json_encode,
    pack_trail,
    unpack_trail,
)
from tagwatch.alerts.thresholds import DEFAULTS, ThresholdError, Thresholds, layered
from tagwatch.alerts.victim_protection import route, watchers
from tagwatch.alerts.victim_rules import due_victim, evaluate_victim, tick_victim
from tagwatch.geofence import (
    Schedule,
    VictimPositions,
    Zone,
    ZoneIndex,
    ZoneKind,
)

log = logging.getLogger("tagwatch.alerts")

LATE_CONTEXT_S = 1800.0
TICK_BATCH = 500
SETTLE_WALL_S = 0.1


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def region_group(region_id: str) -> str:
    """The group every subject of a region is in: a global zone with a region but no group
    applies to that region's subjects only (a group, when given, takes precedence)."""
    return f"region:{region_id}"


class AlertEngine:
    def __init__(self) -> None:
        self.index = ZoneIndex()
        self.metas: dict[int, ZoneMeta] = {}
        self.zone_rows: dict[int, dict[str, Any]] = {}
        self.victim_zones: dict[int, set[int]] = defaultdict(set)
        self.curfews: dict[int, set[int]] = defaultdict(set)
        self.schedules: dict[int, tuple[Schedule, int]] = {}
        self.subject_tz: dict[int, str] = {}
        self.subject_thresholds: dict[int, dict[str, Any]] = {}
        # each subject's approved home beacon (absent: none), the only one the rules trust
        self.home_beacons: dict[int, str] = {}
        self.global_thresholds: Thresholds = DEFAULTS
        self.victim_pos: dict[int, tuple[float, float, float, float]] = {}
        self.revision = 0
        # rule_state rows as `_lock`/`tick` read them
        self._read: dict[int, StateRow] = {}
        # decoded states kept between batches while their rows are unchanged; off (0) unless
        # the caller sizes it and reports its commits (alerts/state_cache.py)
        self.state_cache = StateCache(0)
        # per subject, the next end of an assignment it holds now (as `process`/`tick` read
        # them): the clock must come back then to release the device (alerts/holding.py)
        self._ends: dict[int, float] = {}

    # -- the catalogue: what the engine knows of zones and subjects, saved and restored whole

    # Everything `sync` builds from the zones and subjects tables, and nothing else: the rule
    # state lives in the database, victims' positions are read back there when missing, and the
    # per-batch caches are rebuilt by the next batch. An engine restored from these fields at
    # revision R and then synced holds what a new engine synced from nothing holds.
    CATALOGUE_FIELDS = (
        "index",
        "metas",
        "zone_rows",
        "victim_zones",
        "curfews",
        "schedules",
        "subject_tz",
        "subject_thresholds",
        "home_beacons",
        "global_thresholds",
        "revision",
    )

    def catalogue(self) -> dict[str, Any]:
        """The fields `sync` keeps, for a snapshot of the zone index (ingest/index_snapshot.py):
        rebuilding them from the tables is most of a national worker's cold start."""
        return {name: getattr(self, name) for name in self.CATALOGUE_FIELDS}

    @classmethod
    def from_catalogue(cls, catalogue: dict[str, Any]) -> AlertEngine:
        """An engine holding a saved catalogue; `sync` then brings it from its revision to now."""
        missing = set(cls.CATALOGUE_FIELDS) - set(catalogue)
        if missing:
            raise ValueError(f"catalogue lacks {sorted(missing)}")
        engine = cls()
        for name in cls.CATALOGUE_FIELDS:
            setattr(engine, name, catalogue[name])
        if not isinstance(engine.index, ZoneIndex) or not isinstance(engine.revision, int):
            raise ValueError("not an engine catalogue")
        return engine

    # -- keeping the zone index in step with the repository

    def sync(self, repo: EngineRepository) -> None:
        """Every batch: two indexed reads, and a zone drawn a moment ago counts."""
        try:
            self.global_thresholds = layered(repo.global_thresholds())
        except ThresholdError as exc:
            log.error("global thresholds ignored: %s", exc)
        top = self.revision
        for s in repo.subjects_since(self.revision):
            self.subject_tz[s.subject_id] = s.timezone
            self.subject_thresholds[s.subject_id] = s.thresholds or {}
            if s.home_beacon is None:
                self.home_beacons.pop(s.subject_id, None)
            else:
                self.home_beacons[s.subject_id] = s.home_beacon
            # a subject is in its region's group, so a global zone of one region applies there
            self.index.set_subject(
                s.subject_id, timezone=s.timezone, groups=(*s.groups, region_group(s.region_id))
            )
            top = max(top, s.revision)
        pending: dict[int, tuple[ZoneRow, Zone]] = {}  # one batch of zones for upsert_many
        # A schedule object the repository shares between zones (one decoded text: every home
        # curfew of a caseload has one of a few schedules) is parsed once. Keyed by identity:
        # `rows` holds every object for the whole loop, so no id is reused meanwhile.
        parsed: dict[int, Schedule] = {}
        rows = repo.zones_since(self.revision)
        for z in rows:
            zid = z.zone_id
            top = max(top, z.revision)
            if zid in pending:  # the same zone twice in one read: the earlier one first
                self._load_zones(pending)
                pending = {}
            self._drop_zone(zid)
            if z.deleted:
                continue
            try:
                schedule = None
                if z.schedule:
                    schedule = parsed.get(id(z.schedule))
                    if schedule is None:
                        schedule = parsed[id(z.schedule)] = Schedule.from_json(z.schedule)
                zone = Zone(
                    zid,
                    ZoneKind(z.kind),
                    z.geometry,
                    z.radius_m,
                    z.buffer_m,
                    z.subject_id,
                    z.group,
                    schedule,
                )
            except ValueError as exc:
                log.error("zone %s not loaded: %s", zid, exc)
                continue
            pending[zid] = (z, zone)
        self._load_zones(pending)
        self.revision = top

    def _load_zones(self, pending: dict[int, tuple[ZoneRow, Zone]]) -> None:
        """Upsert the zones of one read together (the index prepares small polygons in bulk); a
        zone the index refuses is logged and skipped, the others get their metadata."""
        if not pending:
            return
        rows = list(pending.values())
        try:
            outcomes: list[object] = list(self.index.upsert_many([zone for _, zone in rows]))
        except ValueError:  # not a zone's fault alone: zone by zone, as before upsert_many
            outcomes = []
            for _, zone in rows:
                try:
                    outcomes.append(self.index.upsert(zone))
                except ValueError as exc:
                    outcomes.append(exc)
        for (z, zone), outcome in zip(rows, outcomes, strict=True):
            zid, owner = z.zone_id, z.subject_id
            if isinstance(outcome, ValueError):
                log.error("zone %s not loaded: %s", zid, outcome)
                continue
            try:
                zone_thresholds = layered(
                    self.subject_thresholds.get(owner) if owner else None,
                    z.thresholds,
                    base=self.global_thresholds,
                )
            except ThresholdError as exc:
                log.error("zone %s not loaded: %s", zid, exc)
                continue
            self.metas[zid] = ZoneMeta(
                zid, z.kind, z.buffer_m, zone_thresholds, z.name or "", shared=owner is None
            )
            self.zone_rows[zid] = {"owner": owner, "victim": z.victim_subject_id}
            if z.victim_subject_id is not None:
                self.victim_zones[z.victim_subject_id].add(zid)
            if z.kind == "curfew" and owner is not None:
                self.curfews[owner].add(zid)
                if zone.schedule is not None:
                    self.schedules[zid] = (zone.schedule, owner)

    def _drop_zone(self, zid: int) -> None:
        if zid not in self.metas:
            return
        rows = self.zone_rows.pop(zid)
        self.metas.pop(zid)
        self.schedules.pop(zid, None)
        if rows["victim"] is not None:
            self.victim_zones[rows["victim"]].discard(zid)
        if rows["owner"] is not None:
            self.curfews[rows["owner"]].discard(zid)
        if zid in self.index:
            self.index.remove(zid)

    def thresholds_for(self, subject_id: int) -> Thresholds:
        """The subject's thresholds. For a victim, ``victim_max_age_s`` is the shortest of the
        zones that follow the victim: protection is degraded as soon as one of them stops
        applying."""
        try:
            base = layered(self.subject_thresholds.get(subject_id), base=self.global_thresholds)
        except ThresholdError:
            base = self.global_thresholds
        ages = [
            self.metas[z].thresholds.victim_max_age_s
            for z in self.victim_zones.get(subject_id, ())
            if z in self.metas
        ]
        if ages and min(ages) != base.victim_max_age_s:
            return dataclasses.replace(base, victim_max_age_s=min(ages))
        return base

    def curfew_active(self, zone_id: int, t: float) -> bool:
        entry = self.schedules.get(zone_id)
        if entry is None:
            return True
        schedule, owner = entry
        return bool(schedule.active([t], self.subject_tz.get(owner, "UTC"))[0])

    # -- one ingest batch

    def process(
        self,
        repo: EngineRepository,
        fixes: NewFixes,
        events: NewEvents,
        phones: NewPhoneReports | None = None,
    ) -> int:
        """Evaluate the new fixes, events and phone reports of a batch; return how many alert
        changes. A fix of unknown accuracy (NaN) is never classified: it reaches the rules as
        communication only (alerts/rules.py)."""
        phones = phones or NewPhoneReports()
        self.state_cache.begin()
        if not len(fixes) and not len(events) and not len(phones):
            return 0
        self.sync(repo)
        now = repo.clock_and_speed()[0]
        devices = sorted(set(fixes.device_id) | set(events.device_id) | set(phones.device_id))
        holders: dict[str, list[Assignment]] = defaultdict(list)
        for a in repo.assignments(devices):
            holders[a.device_id].append(a)

        def holder(device_id: str, ts: float) -> Assignment | None:
            for a in holders.get(device_id, ()):
                if a.start <= ts < a.end:
                    return a
            return None

        raw: list[RawFix] = []
        events_by: dict[int, list[Observation]] = defaultdict(list)
        unknown_acc: list[tuple[int, FixObs]] = []
        # per subject, its devices' reporting intervals (in the order the batch first met them)
        intervals: dict[int, dict[str, int]] = defaultdict(dict)
        self._ends = {}
        for ranges in holders.values():
            for a in ranges:
                if a.start <= now < a.end != float("inf"):
                    self._ends[a.subject_id] = min(a.end, self._ends.get(a.subject_id, a.end))
        # a victim's own fixes and events, for the victim protection rules (victim_rules.py)
        victim_obs: dict[int, list[Observation]] = defaultdict(list)
        for device_id, ts, lon, lat, acc, src in zip(
            fixes.device_id, fixes.ts, fixes.lon, fixes.lat, fixes.acc, fixes.src, strict=True
        ):
            held = holder(device_id, ts)
            if held is None:
                continue
            sid = held.subject_id
            if held.role == "victim":
                if math.isnan(acc):
                    continue  # a circle of unknown size cannot place the victim's zone
                for zid in self.victim_zones.get(sid, ()):
                    old = self.victim_pos.get(zid)
                    if old is None or old[0] <= ts:
                        self.victim_pos[zid] = (ts, lon, lat, acc)
                victim_obs[sid].append(FixObs(ts, device_id, lon, lat, acc, src=src))
                continue
            intervals[sid][device_id] = held.expected_interval_s
            if math.isnan(acc):
                unknown_acc.append((sid, FixObs(ts, device_id, lon, lat, acc, (), src)))
                continue
            raw.append(RawFix(sid, device_id, ts, lon, lat, acc, src))
        for device_id, ts, kind, beacon in zip(
            events.device_id, events.ts, events.type, events.beacons(), strict=True
        ):
            held = holder(device_id, ts)
            if held is None:
                continue
            if held.role == "victim":
                victim_obs[held.subject_id].append(EventObs(ts, device_id, kind))
                continue
            if held.role != "offender":
                continue
            intervals[held.subject_id][device_id] = held.expected_interval_s
            events_by[held.subject_id].append(EventObs(ts, device_id, kind, beacon))
        for sid, obs in unknown_acc:
            events_by[sid].append(obs)
        for device_id, ts, kind, batt, charging, mode, conn in zip(
            phones.device_id,
            phones.ts,
            phones.kind,
            phones.batt,
            phones.charging,
            phones.mode,
            phones.conn,
            strict=True,
        ):
            held = holder(device_id, ts)
            if held is None or held.role != "offender":
                continue
            intervals[held.subject_id][device_id] = held.expected_interval_s
            report = PhoneObs(ts, device_id, kind, batt, charging, mode, conn)
            events_by[held.subject_id].append(report)
        subjects = sorted({r.subject_id for r in raw} | set(events_by))
        victims = sorted(set(victim_obs) - set(subjects))
        if not subjects and not victims:
            return 0
        observed: dict[int, list[Observation]] = defaultdict(list)
        if raw:
            self._load_victims(repo, raw)
            for fix, obs in zip(raw, observe(self.index, raw, self._victims()), strict=True):
                observed[fix.subject_id].append(obs)
        for sid, items in events_by.items():
            observed[sid].extend(items)
        states = self._lock(repo, subjects + victims)
        # A device whose fixes belong to a subject (held at their time) that no longer holds it
        # now: an upload from before its assignment ended. Its state is released right after
        # the evaluation, so it never outlives the assignment (one more read, only then).
        stale = sorted(
            sid
            for sid, devices in intervals.items()
            if any(not holds(holders.get(d, ()), sid, d, now) for d in devices)
        )
        held_by: dict[int, list[Assignment]] = defaultdict(list)
        for a in repo.subject_assignments(stale) if stale else ():
            held_by[a.subject_id].append(a)
        changes_total = 0
        writes: list[tuple[int, list[AlertChange]]] = []
        for sid in subjects:
            state = states[sid]
            thresholds = self.thresholds_for(sid)
            for device_id, interval in intervals.get(sid, {}).items():
                state.device(device_id).expected_interval_s = float(interval)
            items = observed.get(sid, [])
            wm = state.watermark
            # a phone's report of itself is judged by its own clock (rules.Evaluator.phone)
            live = [o for o in items if wm is None or o.ts >= wm or isinstance(o, PhoneObs)]
            late = [
                o for o in items if wm is not None and o.ts < wm and not isinstance(o, PhoneObs)
            ]
            changes = evaluate(
                state, live, self.metas, thresholds, now, home_beacon=self.home_beacons.get(sid)
            )
            if late:
                changes += self._late(repo, sid, late, thresholds, now, state)
            if sid in stale:
                changes += release(state, sid, held_by.get(sid, ()), now)
            writes.append((sid, changes))
        for vid in victims:
            changes = evaluate_victim(
                states[vid], vid, victim_obs[vid], self.thresholds_for(vid), now
            )
            writes += self._route_victim(vid, states[vid], changes)
        for sid, changes in writes:
            changes_total += apply_changes(repo, sid, changes)
        self._save(repo, states, now)
        return changes_total

    def _route_victim(
        self, vid: int, state: SubjectState, changes: list[AlertChange]
    ) -> list[tuple[int, list[AlertChange]]]:
        """A victim's changes as changes of the alerts of whoever watches the victim
        (alerts/victim_protection.py): the offenders whose victim zones follow the victim."""
        if not changes and not state.watchers:
            return []
        zones = {z: self.zone_rows[z]["owner"] for z in self.victim_zones.get(vid, ())}
        by_target: dict[int, list[AlertChange]] = defaultdict(list)
        for target, change in route(state, changes, watchers(zones, vid)):
            by_target[target].append(change)
        return sorted(by_target.items())

    def _load_victims(self, repo: EngineRepository, raw: Sequence[RawFix]) -> None:
        """Victim positions missing from memory (after a restart) come from the stored fixes."""
        wanted = {
            victim
            for victim, zones in self.victim_zones.items()
            if any(z not in self.victim_pos for z in zones)
        }
        if not wanted or not raw:
            return
        for vf in repo.latest_victim_fixes(sorted(wanted)):
            for zid in self.victim_zones[vf.subject_id]:
                self.victim_pos.setdefault(zid, (vf.ts, vf.lon, vf.lat, vf.acc))

    def _victims(self) -> VictimPositions | None:
        live = [z for z in self.victim_pos if z in self.metas]
        if not live:
            return None
        cols = np.array([self.victim_pos[z] for z in live], dtype=np.float64)
        ages = np.array([self.metas[z].thresholds.victim_max_age_s for z in live], dtype=np.float64)
        return VictimPositions(
            np.array(live, dtype=np.int64), cols[:, 1], cols[:, 2], cols[:, 0], cols[:, 3], ages
        )

    def _lock(self, repo: EngineRepository, subjects: list[int]) -> dict[int, SubjectState]:
        """Every subject's state, locked by the repository; a subject without a row gets an
        empty state (`_save` upserts it). What was read is remembered, so that `_save` skips rows
        that did not change."""
        cache = self.state_cache
        wanted = sorted(set(subjects))
        rows = repo.lock_states(wanted, cache.versions(wanted) if cache.capacity else None)
        states: dict[int, SubjectState] = {}
        self._read = {}
        for sid, r in rows.items():
            kept = cache.take(sid, r.version if r.kept else None) if cache.capacity else None
            if kept is not None:
                states[sid], self._read[sid] = kept.state, kept.row
            else:
                # the row as locked, or read whole if the repository kept it (sent no document)
                # and this cache no longer holds it
                row = repo.read_state(sid) if r.kept else r
                assert row is not None, "a locked row exists"
                states[sid] = decode_state(row.doc, row.trail)
                self._read[sid] = _as_read(row, states[sid])
        for sid in subjects:
            states.setdefault(sid, SubjectState())
        return states

    def _save(self, repo: EngineRepository, states: dict[int, SubjectState], now: float) -> None:
        """Only the rows that changed, in one repository call for the whole batch. A subject is
        due at the latest when an assignment it holds ends, so the device is released then."""
        out: list[StateRow] = []
        for sid, state in states.items():
            if state.victim:
                due = due_victim(state, self.thresholds_for(sid))
            else:
                due = next_due(
                    state,
                    self.metas,
                    self.thresholds_for(sid),
                    now,
                    has_curfew=bool(self.curfews.get(sid)),
                )
            end = self._ends.get(sid)
            if end is not None and state.devices:
                due = end if due is None else min(due, end)
            due_at = _dt(due)
            encoded, packed = encode_document(state), pack_trail(state.trail)
            read = self._read.get(sid)
            if (
                read is not None
                and read.due_at == due_at
                and (read.trail or b"") == packed
                and read.encoded == encoded
            ):
                # nothing changed: no new row version, and the state is the row's as read
                kept = _kept_row(sid, packed, due_at, read.version, encoded)
                self.state_cache.stage(sid, read.version, state, kept)
                continue
            out.append(StateRow(sid, None, packed, due_at, encoded=encoded))
        self._read = {}
        if out:
            versions = repo.save_states(out)
            for row in out:
                version = versions.get(row.subject_id)
                kept = _kept_row(row.subject_id, row.trail, row.due_at, version, row.encoded)
                self.state_cache.stage(row.subject_id, version, states[row.subject_id], kept)

    def _late(
        self,
        repo: EngineRepository,
        sid: int,
        late: Sequence[Observation],
        thresholds: Thresholds,
        now: float,
        live: SubjectState,
    ) -> list[AlertChange]:
        lo = min(o.ts for o in late) - LATE_CONTEXT_S
        hi = max(o.ts for o in late) + LATE_CONTEXT_S
        raw = [
            RawFix(sid, f.device_id, f.ts, f.lon, f.lat, f.acc, f.src)
            for f in repo.offender_fixes(sid, lo, hi)
        ]
        window: list[Observation] = list(observe(self.index, raw, self._victims()))
        window.extend(
            EventObs(e.ts, e.device_id, e.type, e.beacon) for e in repo.offender_events(sid, lo, hi)
        )
        existing = repo.episodes(sid, lo - LATE_CONTEXT_S, hi + LATE_CONTEXT_S)
        return late_episodes(
            window,
            self.metas,
            thresholds,
            now,
            existing,
            home_beacon=self.home_beacons.get(sid),
            live=live,
        )

    # -- the clock

    def tick(self, repo: EngineRepository, waiting_s: float = 0.0) -> int:
        """Clock rules for subjects that are due, then absconder escalation. Own transaction.

        `waiting_s`: wall seconds the oldest message still waiting in ingest has waited. The
        rules are judged as of when it arrived: everything before it is written, so a device
        looks silent only if it truly sent nothing, however far behind ingest is."""
        self.state_cache.begin()
        with repo.transaction():
            self.sync(repo)
            now, speed = repo.clock_and_speed()
            # Silence is only judged beyond the platform's own latency (a fix can be on its way
            # through broker and batch for ~0.1 s). At wall speed that is nothing; under a
            # compressed scenario clock it is minutes, and a fix in flight is not silence.
            now -= SETTLE_WALL_S * (speed - 1.0) + max(0.0, waiting_s) * speed
            rows = repo.due_states(now, TICK_BATCH)
            states: dict[int, SubjectState] = {}
            count = 0
            self._read = {}
            held: dict[int, list[Assignment]] = defaultdict(list)
            self._ends = {}
            if rows:
                for a in repo.subject_assignments([r.subject_id for r in rows]):
                    held[a.subject_id].append(a)
                    if a.start <= now < a.end != float("inf"):
                        self._ends[a.subject_id] = min(a.end, self._ends.get(a.subject_id, a.end))
            for row in rows:
                sid = row.subject_id
                self.state_cache.drop(sid)  # read whole here; kept again if saved
                state = decode_state(row.doc, row.trail)
                self._read[sid] = _as_read(row, state)
                # assignments bound every rule: a device the subject no longer (or not yet)
                # holds is released before the clock judges anything (alerts/holding.py)
                count += apply_changes(repo, sid, release(state, sid, held.get(sid, ()), now))
                if state.victim:
                    for target, routed in self._route_victim(
                        sid, state, tick_victim(state, sid, self.thresholds_for(sid), now)
                    ):
                        count += apply_changes(repo, target, routed)
                    states[sid] = state
                    continue
                changes, _ = tick(
                    state,
                    self.metas,
                    self.thresholds_for(sid),
                    now,
                    sorted(self.curfews.get(sid, ())),
                    self.curfew_active,
                    home_beacon=self.home_beacons.get(sid),
                )
                count += apply_changes(repo, sid, changes)
                states[sid] = state
            if states:
                self._save(repo, states, now)
            count += self._escalate(repo, now)
        self.state_cache.committed()  # the transaction above is the tick's own
        return count

    def _escalate(self, repo: EngineRepository, now: float) -> int:
        count = 0
        for c in repo.escalation_candidates(sorted(v.ESCALATING), now):
            thresholds = self.thresholds_for(c.subject_id)
            source = OpenAlert(c.alert_id, c.type, c.opened_at, None, False, False)
            if not due(source, now, thresholds):
                continue
            count += raise_absconder(repo, c.subject_id, now, source=source)
        return count


def _kept_row(
    sid: int,
    trail: bytes | None,
    due_at: datetime | None,
    version: str | None,
    encoded: bytes | None,
) -> StateRow:
    """The row a kept state stands for (alerts/state_cache.py): at ``version``, with the state's
    encoding instead of a document, so that no dict is shared with the live state."""
    return StateRow(sid, None, trail, due_at, version, encoded=encoded)


def _as_read(row: StateRow, state: SubjectState) -> StateRow:
    """The row as read, with the encoding of its state before the rules touch it: `_save`
    compares the new encoding with it to skip rows that did not change (a document that still
    carried its trail, from before migration 0008, differs by its trail column and is rewritten)."""
    return dataclasses.replace(row, encoded=encode_document(state))


def release_held(repo: EngineRepository, sid: int, due_by: float) -> int:
    """Release from ``sid``'s rule state the devices it does not hold at the rule clock's time
    (an assignment was just ended), clearing their open episodes; returns how many alerts were
    cleared. Runs in the caller's transaction, the one that ended the assignment, so the end and
    the release commit together. The subject is made due by ``due_by`` at the latest (an end
    that lies ahead): the next tick releases what is not held by then and recomputes the due
    time with the subject's zones."""
    now = repo.clock_and_speed()[0]
    if repo.read_state(sid) is None:
        return 0  # never evaluated: nothing to release (and no row to create)
    row = repo.lock_states([sid]).get(sid)
    if row is None or (not row.doc and not row.trail):
        return 0
    state = decode_state(row.doc, row.trail)
    cleared = apply_changes(repo, sid, release(state, sid, repo.subject_assignments([sid]), now))
    doc, packed = encode_state(state)
    due = max(now, due_by)
    if row.due_at is not None:
        due = min(due, row.due_at.timestamp())
    repo.save_states([StateRow(sid, doc, packed, _dt(due))])
    return cleared


def raise_absconder(
    repo: EngineRepository,
    sid: int,
    now: float,
    *,
    source: OpenAlert | None = None,
    declared_by: str | None = None,
) -> int:
    """Raise an absconder for ``sid`` unless one is already open; mark the source escalated."""
    busy = repo.absconder_open(sid)
    if source is not None:
        repo.mark_escalated(source.alert_id)
    if busy:
        return 0
    row = repo.read_state(sid)
    state = decode_state(row.doc, row.trail) if row else SubjectState()
    change = absconder(source, state, now, repo.open_alerts(sid), declared_by=declared_by)
    return apply_changes(repo, sid, [change], actor=declared_by or "engine")


# -- writing changes ---------------------------------------------------------------------------


def apply_changes(
    repo: EngineRepository, sid: int, changes: Sequence[AlertChange], actor: str = "engine"
) -> int:
    """Alerts, history and outbox for one subject's changes (only the last update of each
    episode is written: updates within a batch supersede each other)."""
    last_update: dict[str, AlertChange] = {}
    ordered: list[AlertChange] = []
    for change in changes:
        if change.action == "update":
            last_update[change.episode_key] = change
        else:
            ordered.append(change)
    ordered += last_update.values()
    written = 0
    for change in ordered:
        if change.action == "open":
            opened = repo.open_alert(sid, change)
            if opened is None:
                continue
            repo.add_history(opened.alert_id, actor, "opened", {"late": change.late})
            repo.enqueue(opened.alert_id, opened.region_id, change.type, change.severity, "opened")
            if change.type == v.ABSCONDER:
                # after the outbox row: the case takes the tracing unit the alert was routed to
                repo.open_case(opened.alert_id, actor)
            written += 1
        elif change.action == "update":
            repo.update_alert(sid, change)
            written += 1
        else:
            cleared = repo.clear_alert(sid, change.episode_key, change.at)
            if cleared is None:
                continue
            detail: dict[str, Any] = {"at": change.at}
            if "reason" in change.details:  # e.g. assignment_ended (alerts/holding.py)
                detail["reason"] = change.details["reason"]
            repo.add_history(cleared.alert_id, actor, "cleared", detail)
            repo.enqueue(
                cleared.alert_id, cleared.region_id, cleared.type, cleared.severity, "cleared"
            )
            written += 1
    return written


__all__ = [
    "AlertEngine",
    "apply_changes",
    "decode_state",
    "encode_state",
    "json_encode",
    "limit_s",
    "pack_trail",
    "raise_absconder",
    "release_held",
    "unpack_trail",
]
