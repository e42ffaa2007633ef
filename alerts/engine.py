"""The alert engine inside ingest: geofence + rules over each stored batch, in its transaction.

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

import logging
import struct
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import msgspec
import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from tagwatch.alerts import vocabulary as v
from tagwatch.alerts.escalation import OpenAlert, absconder, due, limit_s
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
from tagwatch.alerts.rules import due_at as next_due
from tagwatch.alerts.thresholds import DEFAULTS, ThresholdError, Thresholds, layered
from tagwatch.geofence import (
    Schedule,
    VictimPositions,
    Zone,
    ZoneIndex,
    ZoneKind,
    ZoneValidationError,
)

log = logging.getLogger("tagwatch.alerts")

LATE_CONTEXT_S = 1800.0
SYNC_EVERY_S = 0.0  # every batch: two indexed queries, and a zone drawn a moment ago counts
TICK_BATCH = 500


def _epoch(ts: datetime) -> float:
    return ts.timestamp()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


SETTLE_WALL_S = 0.1

_QUAD = struct.Struct("<4d")
_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


def pack_trail(trail: Sequence[tuple[float, float, float, float]]) -> bytes:
    """The trail as little-endian float64 (ts, lon, lat, acc) quadruples (migration 0008)."""
    return struct.pack(f"<{4 * len(trail)}d", *chain.from_iterable(trail))


def unpack_trail(packed: bytes | None) -> list[tuple[float, float, float, float]]:
    if not packed:
        return []
    return list(_QUAD.iter_unpack(packed))


def encode_state(state: SubjectState) -> tuple[dict[str, Any], bytes]:
    """The rule_state row of ``state``: its jsonb document without the trail, and the trail
    packed (``SubjectState.to_json`` decides every other field)."""
    trail, state.trail = state.trail, []
    try:
        doc = state.to_json()
    finally:
        state.trail = trail
    doc.pop("trail", None)
    return doc, pack_trail(trail)


def decode_state(doc: dict[str, Any] | None, packed: bytes | None) -> SubjectState:
    """A state from its rule_state row. A document that still carries its trail (written before
    migration 0008) is read whole; otherwise the trail is the packed column."""
    state = SubjectState.from_json(doc)
    if not doc or "trail" not in doc:
        state.trail = unpack_trail(packed)
    return state


def _load_doc(text: str | None) -> dict[str, Any] | None:
    return None if text is None else _json_decode(text)


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
        self.global_thresholds: Thresholds = DEFAULTS
        self.victim_pos: dict[int, tuple[float, float, float, float]] = {}
        self.revision = 0
        self._synced_at = 0.0
        # rule_state rows as `_lock`/`tick` read them (document, packed trail, due_at)
        self._read: dict[int, tuple[dict[str, Any] | None, bytes | None, datetime | None]] = {}

    # -- keeping the zone index in step with the database

    def sync(self, conn: psycopg.Connection, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._synced_at < SYNC_EVERY_S:
            return
        self._synced_at = time.monotonic()
        row = conn.execute("SELECT values FROM alert_thresholds WHERE scope = 'global'").fetchone()
        try:
            self.global_thresholds = layered(row[0] if row else None)
        except ThresholdError as exc:
            log.error("global thresholds ignored: %s", exc)
        top = self.revision
        for sid, tz, groups, region, thresholds, rev in conn.execute(
            "SELECT id, timezone, groups, region_id, thresholds, revision FROM subjects"
            " WHERE revision > %s",
            (self.revision,),
        ):
            self.subject_tz[sid] = tz
            self.subject_thresholds[sid] = thresholds or {}
            # a subject is in its region's group, so a global zone of one region applies there
            self.index.set_subject(sid, timezone=tz, groups=(*groups, region_group(region)))
            top = max(top, rev)
        changed = conn.execute(
            "SELECT id, kind, geometry, radius_m, buffer_m, subject_id,"
            " CASE WHEN subject_id IS NULL THEN coalesce(group_name, 'region:' || region_id) END,"
            " victim_subject_id, schedule, thresholds, name, deleted_at IS NOT NULL, revision"
            " FROM zones WHERE revision > %s ORDER BY revision",
            (self.revision,),
        ).fetchall()
        for (
            zid,
            kind,
            geom,
            radius,
            buffer,
            owner,
            group,
            victim,
            sched,
            thr,
            name,
            gone,
            rev,
        ) in changed:
            top = max(top, rev)
            self._drop_zone(zid)
            if gone:
                continue
            try:
                schedule = Schedule.from_json(sched) if sched else None
                self.index.upsert(
                    Zone(zid, ZoneKind(kind), geom, radius, buffer, owner, group, schedule)
                )
                zone_thresholds = layered(
                    self.subject_thresholds.get(owner) if owner else None,
                    thr,
                    base=self.global_thresholds,
                )
            except (ZoneValidationError, ThresholdError, ValueError) as exc:
                log.error("zone %s not loaded: %s", zid, exc)
                continue
            self.metas[zid] = ZoneMeta(
                zid, kind, buffer, zone_thresholds, name or "", shared=owner is None
            )
            self.zone_rows[zid] = {"owner": owner, "victim": victim}
            if victim is not None:
                self.victim_zones[victim].add(zid)
            if kind == "curfew" and owner is not None:
                self.curfews[owner].add(zid)
                if schedule is not None:
                    self.schedules[zid] = (schedule, owner)
        self.revision = top

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
        try:
            return layered(self.subject_thresholds.get(subject_id), base=self.global_thresholds)
        except ThresholdError:
            return self.global_thresholds

    def curfew_active(self, zone_id: int, t: float) -> bool:
        entry = self.schedules.get(zone_id)
        if entry is None:
            return True
        schedule, owner = entry
        return bool(schedule.active([t], self.subject_tz.get(owner, "UTC"))[0])

    @staticmethod
    def clock(conn: psycopg.Connection) -> float:
        """The rule clock: wall time, or a replay's scenario time (never past what the replay's
        player has published, `played_until`)."""
        return AlertEngine.clock_and_speed(conn)[0]

    @staticmethod
    def clock_and_speed(conn: psycopg.Connection) -> tuple[float, float]:
        row = conn.execute(
            "SELECT LEAST((extract(epoch FROM origin)"
            " + extract(epoch FROM now() - wall_origin) * speed)::float8,"
            " COALESCE(extract(epoch FROM played_until)::float8, 'Infinity'::float8)),"
            " speed FROM rule_clock"
        ).fetchone()
        return (float(row[0]), float(row[1])) if row else (time.time(), 1.0)

    # -- one ingest batch

    def process(
        self,
        conn: psycopg.Connection,
        fixes: Sequence[tuple[Any, ...]],
        events: Sequence[tuple[Any, ...]],
    ) -> int:
        """Evaluate the new fixes and events of a batch; return how many alert changes."""
        if not fixes and not events:
            return 0
        self.sync(conn)
        now = self.clock(conn)
        devices = sorted({f[0] for f in fixes} | {e[0] for e in events})
        holders: dict[str, list[tuple[int, str, float, float, int]]] = defaultdict(list)
        # One probe per device (LATERAL ... OFFSET 0 keeps it a nested loop) on the covering
        # index of migration 0008, the only one that matches `COLLATE "C"`: `device_id =
        # ANY(...)` made the planner seq-scan both tables, a cost that grew with every device.
        for device_id, sid, role, lo, hi, interval in conn.execute(
            "SELECT q.id, a.subject_id, a.role, lower(a.during), upper(a.during),"
            " (SELECT d.expected_interval_s FROM devices d WHERE d.id = q.id)"
            " FROM unnest(%s::text[]) AS q(id) CROSS JOIN LATERAL"
            " (SELECT subject_id, role, during FROM device_assignments"
            ' WHERE device_id COLLATE "C" = q.id OFFSET 0) AS a',
            (devices,),
        ):
            holders[device_id].append(
                (
                    sid,
                    role,
                    _epoch(lo) if lo else float("-inf"),
                    _epoch(hi) if hi else float("inf"),
                    interval,
                )
            )

        def holder(device_id: str, ts: float) -> tuple[int, str, int] | None:
            for sid, role, lo, hi, interval in holders.get(device_id, ()):
                if lo <= ts < hi:
                    return sid, role, interval
            return None

        raw: list[RawFix] = []
        events_by: dict[int, list[Observation]] = defaultdict(list)
        # per subject, its devices' reporting intervals (in the order the batch first met them)
        intervals: dict[int, dict[str, int]] = defaultdict(dict)
        for f in fixes:
            ts = _epoch(f[1])
            held = holder(f[0], ts)
            if held is None:
                continue
            sid, role, interval = held
            if role == "victim":
                for zid in self.victim_zones.get(sid, ()):
                    old = self.victim_pos.get(zid)
                    if old is None or old[0] <= ts:
                        self.victim_pos[zid] = (ts, f[4], f[3], float(f[5] or 0.0))
                continue
            intervals[sid][f[0]] = interval
            raw.append(RawFix(sid, f[0], ts, f[4], f[3], float(f[5] or 0.0), f[11] or "gps"))
        for e in events:
            ts = _epoch(e[1])
            held = holder(e[0], ts)
            if held is None or held[1] != "offender":
                continue
            intervals[held[0]][e[0]] = held[2]
            events_by[held[0]].append(EventObs(ts, e[0], e[3]))
        subjects = sorted({r.subject_id for r in raw} | set(events_by))
        if not subjects:
            return 0
        self._load_victims(conn, raw)
        observed: dict[int, list[Observation]] = defaultdict(list)
        for fix, obs in zip(raw, observe(self.index, raw, self._victims()), strict=True):
            observed[fix.subject_id].append(obs)
        for sid, items in events_by.items():
            observed[sid].extend(items)
        states = self._lock(conn, subjects)
        changes_total = 0
        writes: list[tuple[int, list[AlertChange]]] = []
        for sid in subjects:
            state = states[sid]
            thresholds = self.thresholds_for(sid)
            for device_id, interval in intervals.get(sid, {}).items():
                state.device(device_id).expected_interval_s = float(interval)
            items = observed.get(sid, [])
            wm = state.watermark
            live = [o for o in items if wm is None or o.ts >= wm]
            late = [o for o in items if wm is not None and o.ts < wm]
            changes = evaluate(state, live, self.metas, thresholds, now)
            if late:
                changes += self._late(conn, sid, late, thresholds, now)
            writes.append((sid, changes))
        for sid, changes in writes:
            changes_total += apply_changes(conn, sid, changes)
        self._save(conn, states, now)
        return changes_total

    def _load_victims(self, conn: psycopg.Connection, raw: Sequence[RawFix]) -> None:
        """Victim positions missing from memory (after a restart) come from the stored fixes."""
        wanted = {
            victim
            for victim, zones in self.victim_zones.items()
            if any(z not in self.victim_pos for z in zones)
        }
        if not wanted or not raw:
            return
        for sid, ts, lon, lat, acc in conn.execute(
            "SELECT DISTINCT ON (a.subject_id) a.subject_id, f.ts, f.lon, f.lat, f.acc"
            " FROM device_assignments a JOIN fixes f ON f.device_id = a.device_id"
            " AND a.during @> f.ts WHERE a.role = 'victim' AND a.subject_id = ANY(%s)"
            " ORDER BY a.subject_id, f.ts DESC",
            (sorted(wanted),),
        ):
            for zid in self.victim_zones[sid]:
                self.victim_pos.setdefault(zid, (_epoch(ts), lon, lat, float(acc or 0.0)))

    def _victims(self) -> VictimPositions | None:
        live = [z for z in self.victim_pos if z in self.metas]
        if not live:
            return None
        cols = np.array([self.victim_pos[z] for z in live], dtype=np.float64)
        ages = np.array([self.metas[z].thresholds.victim_max_age_s for z in live], dtype=np.float64)
        return VictimPositions(
            np.array(live, dtype=np.int64), cols[:, 1], cols[:, 2], cols[:, 0], cols[:, 3], ages
        )

    def _lock(self, conn: psycopg.Connection, subjects: list[int]) -> dict[int, SubjectState]:
        """Every subject's state row, locked in subject order; a subject without one gets an
        empty row first. A row deleted between the insert and the lock (a subject released
        concurrently) is created again: never a missing state, which would skip the batch's
        evaluation. What was read is remembered, so that `_save` skips rows that did not
        change."""
        states: dict[int, SubjectState] = {}
        self._read = {}
        wanted = sorted(set(subjects))
        missing = wanted
        for attempt in range(6):
            if attempt:
                # only subjects never evaluated before (or just released) get here; a row this
                # transaction created is its own (invisible and unlockable to others till commit)
                created = conn.execute(
                    "INSERT INTO rule_state (subject_id, state)"
                    " SELECT s, '{}'::jsonb FROM unnest(%s::bigint[]) AS s ORDER BY s"
                    " ON CONFLICT DO NOTHING RETURNING subject_id",
                    (missing,),
                ).fetchall()
                for (sid,) in created:
                    states[sid] = SubjectState()
                    self._read[sid] = ({}, None, None)
                missing = [s for s in missing if s not in states]
                if not missing:
                    break
            for sid, text, packed, due_read in conn.execute(
                "SELECT subject_id, state::text, trail, due_at FROM rule_state"
                " WHERE subject_id = ANY(%s) ORDER BY subject_id FOR UPDATE",
                (missing,),
            ):
                doc = _load_doc(text)
                states[sid] = decode_state(doc, packed)
                self._read[sid] = (doc, packed, due_read)
            missing = [s for s in wanted if s not in states]
            if not missing:
                break
        for sid in wanted:
            states.setdefault(sid, SubjectState())  # _save upserts it
        return states

    def _save(self, conn: psycopg.Connection, states: dict[int, SubjectState], now: float) -> None:
        """One statement for the whole batch (an UPDATE per subject was a round trip each),
        with only the rows that changed; the arrays go in binary (no text escaping)."""
        ids: list[int] = []
        docs: list[str] = []
        trails: list[bytes] = []
        dues: list[datetime | None] = []
        for sid, state in states.items():
            due_at = _dt(
                next_due(
                    state,
                    self.metas,
                    self.thresholds_for(sid),
                    now,
                    has_curfew=bool(self.curfews.get(sid)),
                )
            )
            doc, packed = encode_state(state)
            read = self._read.get(sid)
            if (
                read is not None
                and read[2] == due_at
                and read[0] == doc
                and (read[1] or b"") == packed
            ):
                continue  # nothing changed: no new row version
            ids.append(sid)
            docs.append(_json_encode(doc).decode())
            trails.append(packed)
            dues.append(due_at)
        self._read = {}
        if not ids:
            return
        conn.execute(
            "INSERT INTO rule_state (subject_id, state, trail, due_at)"
            " SELECT s, d::jsonb, t, due FROM"
            " unnest(%b::int8[], %b::text[], %b::bytea[], %b::timestamptz[]) AS u(s, d, t, due)"
            " ON CONFLICT (subject_id) DO UPDATE SET state = excluded.state,"
            " trail = excluded.trail, due_at = excluded.due_at, updated_at = now()",
            (ids, docs, trails, dues),
        )

    def _late(
        self,
        conn: psycopg.Connection,
        sid: int,
        late: list[Observation],
        thresholds: Thresholds,
        now: float,
    ) -> list[AlertChange]:
        lo = min(o.ts for o in late) - LATE_CONTEXT_S
        hi = max(o.ts for o in late) + LATE_CONTEXT_S
        stored = conn.execute(
            "SELECT f.device_id, f.ts, f.lon, f.lat, f.acc, f.src FROM fixes f"
            " JOIN device_assignments a ON a.device_id = f.device_id AND a.during @> f.ts"
            " WHERE a.subject_id = %s AND a.role = 'offender' AND f.ts BETWEEN %s AND %s"
            " ORDER BY f.ts",
            (sid, _dt(lo), _dt(hi)),
        ).fetchall()
        raw = [
            RawFix(sid, d, _epoch(ts), lon, lat, float(acc or 0.0), src or "gps")
            for d, ts, lon, lat, acc, src in stored
        ]
        window: list[Observation] = list(observe(self.index, raw, self._victims()))
        for d, ts, kind in conn.execute(
            "SELECT e.device_id, e.ts, e.type FROM device_events e"
            " JOIN device_assignments a ON a.device_id = e.device_id AND a.during @> e.ts"
            " WHERE a.subject_id = %s AND a.role = 'offender' AND e.ts BETWEEN %s AND %s",
            (sid, _dt(lo), _dt(hi)),
        ):
            window.append(EventObs(_epoch(ts), d, kind))
        existing = [
            Episode(t, z, d, start, end)
            for t, z, d, start, end in conn.execute(
                "SELECT type, zone_id, device_id,"
                " extract(epoch FROM coalesce(first_fix_at, opened_at))::float8,"
                " extract(epoch FROM cleared_at)::float8 FROM alerts WHERE subject_id = %s"
                " AND coalesce(cleared_at, 'infinity') >= %s AND opened_at <= %s",
                (sid, _dt(lo - LATE_CONTEXT_S), _dt(hi + LATE_CONTEXT_S)),
            )
        ]
        return late_episodes(window, self.metas, thresholds, now, existing)

    # -- the clock

    def tick(self, conn: psycopg.Connection, waiting_s: float = 0.0) -> int:
        """Clock rules for subjects that are due, then absconder escalation. Own transaction.

        `waiting_s`: wall seconds the oldest message still waiting in ingest has waited. The
        rules are judged as of when it arrived: everything before it is written, so a device
        looks silent only if it truly sent nothing, however far behind ingest is."""
        with conn.transaction():
            self.sync(conn)
            now, speed = self.clock_and_speed(conn)
            # Silence is only judged beyond the platform's own latency (a fix can be on its way
            # through broker and batch for ~0.1 s). At wall speed that is nothing; under a
            # compressed scenario clock it is minutes, and a fix in flight is not silence.
            now -= SETTLE_WALL_S * (speed - 1.0) + max(0.0, waiting_s) * speed
            rows = conn.execute(
                "SELECT subject_id, state::text, trail, due_at FROM rule_state"
                " WHERE due_at <= %s ORDER BY subject_id LIMIT %s FOR UPDATE SKIP LOCKED",
                (_dt(now), TICK_BATCH),
            ).fetchall()
            states: dict[int, SubjectState] = {}
            count = 0
            self._read = {}
            for sid, text, packed, due_read in rows:
                doc = _load_doc(text)
                state = decode_state(doc, packed)
                self._read[sid] = (doc, packed, due_read)
                changes, _ = tick(
                    state,
                    self.metas,
                    self.thresholds_for(sid),
                    now,
                    sorted(self.curfews.get(sid, ())),
                    self.curfew_active,
                )
                count += apply_changes(conn, sid, changes)
                states[sid] = state
            if states:
                self._save(conn, states, now)
            count += self._escalate(conn, now)
        return count

    def _escalate(self, conn: psycopg.Connection, now: float) -> int:
        candidates = conn.execute(
            "SELECT id, subject_id, type, extract(epoch FROM opened_at)::float8 FROM alerts"
            " WHERE type = ANY(%s) AND status <> 'resolved' AND cleared_at IS NULL"
            " AND NOT escalated AND opened_at <= %s ORDER BY id FOR UPDATE SKIP LOCKED",
            (sorted(v.ESCALATING), _dt(now)),
        ).fetchall()
        count = 0
        for alert_id, sid, kind, opened in candidates:
            thresholds = self.thresholds_for(sid)
            source = OpenAlert(alert_id, kind, opened, None, False, False)
            if not due(source, now, thresholds):
                continue
            count += raise_absconder(conn, sid, now, source=source)
        return count


def raise_absconder(
    conn: psycopg.Connection,
    sid: int,
    now: float,
    *,
    source: OpenAlert | None = None,
    declared_by: str | None = None,
) -> int:
    """Raise an absconder for ``sid`` unless one is already open; mark the source escalated."""
    busy = conn.execute(
        "SELECT 1 FROM alerts WHERE subject_id = %s AND type = 'absconder'"
        " AND status <> 'resolved' AND cleared_at IS NULL",
        (sid,),
    ).fetchone()
    if source is not None:
        conn.execute("UPDATE alerts SET escalated = true WHERE id = %s", (source.alert_id,))
    if busy:
        return 0
    row = conn.execute(
        "SELECT state::text, trail FROM rule_state WHERE subject_id = %s", (sid,)
    ).fetchone()
    state = decode_state(_load_doc(row[0]), row[1]) if row else SubjectState()
    open_alerts = [
        {"id": i, "type": t, "opened_at": o.isoformat()}
        for i, t, o in conn.execute(
            "SELECT id, type, opened_at FROM alerts WHERE subject_id = %s"
            " AND status <> 'resolved' AND cleared_at IS NULL ORDER BY id",
            (sid,),
        )
    ]
    change = absconder(source, state, now, open_alerts, declared_by=declared_by)
    return apply_changes(conn, sid, [change], actor=declared_by or "engine")


# -- writing changes ---------------------------------------------------------------------------


def apply_changes(
    conn: psycopg.Connection, sid: int, changes: Sequence[AlertChange], actor: str = "engine"
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
            row = conn.execute(
                "INSERT INTO alerts (subject_id, device_id, zone_id, region_id, type, severity,"
                " opened_at, first_fix_at, last_fix_at, late, lat, lon, worst_distance_m,"
                " fix_count, episode_key, details)"
                " SELECT %s, %s, %s, s.region_id, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
                " FROM subjects s WHERE s.id = %s"
                " ON CONFLICT (subject_id, episode_key) DO NOTHING RETURNING id, region_id",
                (
                    sid,
                    change.device_id,
                    change.zone_id,
                    change.type,
                    change.severity,
                    _dt(change.at),
                    _dt(change.first_fix_at),
                    _dt(change.at) if change.zone_id is not None else None,
                    change.late,
                    change.lat,
                    change.lon,
                    change.distance_m,
                    change.fix_count,
                    change.episode_key,
                    Jsonb(dict(change.details)),
                    sid,
                ),
            ).fetchone()
            if row is None:
                continue
            alert_id, region = row
            _history(conn, alert_id, actor, "opened", {"late": change.late})
            enqueue(conn, alert_id, region, change.type, change.severity, "opened")
            written += 1
        elif change.action == "update":
            conn.execute(
                "UPDATE alerts SET last_fix_at = %s, lat = %s, lon = %s,"
                " worst_distance_m = %s, fix_count = %s, updated_at = now()"
                " WHERE subject_id = %s AND episode_key = %s",
                (
                    _dt(change.at),
                    change.lat,
                    change.lon,
                    change.distance_m,
                    change.fix_count,
                    sid,
                    change.episode_key,
                ),
            )
            written += 1
        else:
            row = conn.execute(
                "UPDATE alerts SET cleared_at = %s, updated_at = now()"
                " WHERE subject_id = %s AND episode_key = %s AND cleared_at IS NULL"
                " RETURNING id, region_id, type, severity",
                (_dt(change.at), sid, change.episode_key),
            ).fetchone()
            if row is None:
                continue
            _history(conn, row[0], actor, "cleared", {"at": change.at})
            enqueue(conn, row[0], row[1], row[2], row[3], "cleared")
            written += 1
    return written


def _history(
    conn: psycopg.Connection, alert_id: int, actor: str, action: str, detail: dict[str, Any]
) -> None:
    conn.execute(
        "INSERT INTO alert_history (alert_id, actor, action, detail) VALUES (%s, %s, %s, %s)",
        (alert_id, actor, action, Jsonb(detail)),
    )


def enqueue(
    conn: psycopg.Connection,
    alert_id: int,
    region: str | None,
    alert_type: str,
    severity: str,
    event: str,
) -> None:
    """An outbox row with the alert as it is now, and one delivery per matching channel. The
    payload leaves the platform (webhooks, MQTT, the live feed): the name of a zone protecting a
    victim is left out of its details (alert_public_details, migration 0013)."""
    row = conn.execute(
        "INSERT INTO outbox (alert_id, region_id, type, severity, event, payload)"
        " SELECT a.id, %s, %s, %s, %s, jsonb_build_object('alert_id', a.id, 'event', %s::text,"
        " 'type', a.type, 'severity', a.severity, 'status', a.status,"
        " 'subject_id', a.subject_id, 'region', a.region_id, 'device_id', a.device_id,"
        " 'zone_id', a.zone_id, 'opened_at', a.opened_at, 'first_fix_at', a.first_fix_at,"
        " 'cleared_at', a.cleared_at, 'late', a.late, 'lat', a.lat, 'lon', a.lon,"
        " 'details', alert_public_details(a.zone_id, a.details))"
        " FROM alerts a WHERE a.id = %s RETURNING id",
        (region, alert_type, severity, event, event, alert_id),
    ).fetchone()
    assert row is not None
    rank = v.SEVERITY_RANK[severity]
    conn.execute(
        "INSERT INTO deliveries (outbox_id, channel)"
        " SELECT %s, 'mqtt' UNION ALL"
        " SELECT %s, 'webhook:' || w.id FROM webhook_subscriptions w WHERE w.active"
        " AND ('*' = ANY(w.regions) OR %s = ANY(w.regions))"
        " AND ('*' = ANY(w.types) OR %s = ANY(w.types))"
        " AND (CASE w.min_severity WHEN 'info' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END) <= %s",
        (row[0], row[0], region, alert_type, rank),
    )


__all__ = ["AlertEngine", "apply_changes", "enqueue", "limit_s", "raise_absconder"]
