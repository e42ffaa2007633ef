"""The alert engine's repository in memory: the same port as PostgreSQL, for offline scoring.

`tagwatch score-offline` runs the real `AlertEngine` over this (issue 13: one engine, not a copy
that drifts). It keeps what the engine reads and writes - subjects, zones, time-ranged
assignments, stored fixes and events, rule state rows (encoded as in PostgreSQL), alerts, their
history and the outbox - and answers each port call as the SQL in
`store/engine_repository.py` does. One caller, no concurrency: locks are no-ops, and a transaction
does not roll back (the offline replay never raises into one).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tagwatch.alerts.observe import Episode
from tagwatch.alerts.ports import (
    Assignment,
    ClearedAlert,
    EscalationCandidate,
    OpenedAlert,
    StateRow,
    StoredEvent,
    StoredFix,
    SubjectRow,
    VictimFix,
    ZoneRow,
)
from tagwatch.alerts.rules import AlertChange
from tagwatch.alerts.state_codec import load_doc


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@dataclass
class MemoryAlert:
    """An alerts row (the columns the engine writes and reads)."""

    alert_id: int
    subject_id: int
    device_id: str | None
    zone_id: int | None
    region_id: str | None
    type: str
    severity: str
    opened_at: float
    first_fix_at: float | None
    last_fix_at: float | None
    late: bool
    lat: float | None
    lon: float | None
    worst_distance_m: float | None
    fix_count: int | None
    episode_key: str
    details: dict[str, Any]
    status: str = "open"
    cleared_at: float | None = None
    escalated: bool = False


@dataclass
class MemoryEngineRepository:
    """Everything in lists and dicts; `now` is the rule clock (the replay sets it)."""

    now: float = 0.0
    thresholds: dict[str, Any] | None = None
    subjects: list[SubjectRow] = field(default_factory=list)
    zones: list[ZoneRow] = field(default_factory=list)
    assignment_rows: list[Assignment] = field(default_factory=list)
    fixes: list[StoredFix] = field(default_factory=list)
    events: list[StoredEvent] = field(default_factory=list)
    states: dict[int, StateRow] = field(default_factory=dict)
    _versions: int = 0  # the last row version handed out (save_states)
    alerts: list[MemoryAlert] = field(default_factory=list)
    history: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)
    outbox: list[tuple[int, str | None, str, str, str]] = field(default_factory=list)
    cases: list[int] = field(default_factory=list)  # the absconder alerts a case was opened for

    # -- what ingest's writer does in PostgreSQL

    def store(self, fixes: Sequence[StoredFix], events: Sequence[StoredEvent]) -> None:
        self.fixes.extend(fixes)
        self.events.extend(events)

    def _held(self, device_id: str, ts: float, subject_id: int, role: str) -> bool:
        return any(
            a.device_id == device_id
            and a.subject_id == subject_id
            and a.role == role
            and a.start <= ts < a.end
            for a in self.assignment_rows
        )

    # -- the port

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    def clock_and_speed(self) -> tuple[float, float]:
        return self.now, 1.0

    def global_thresholds(self) -> dict[str, Any] | None:
        return self.thresholds

    def subjects_since(self, revision: int) -> list[SubjectRow]:
        return [s for s in self.subjects if s.revision > revision]

    def zones_since(self, revision: int) -> list[ZoneRow]:
        return sorted((z for z in self.zones if z.revision > revision), key=lambda z: z.revision)

    def assignments(self, devices: Sequence[str]) -> list[Assignment]:
        wanted = set(devices)
        return [a for a in self.assignment_rows if a.device_id in wanted]

    def subject_assignments(self, subjects: Sequence[int]) -> list[Assignment]:
        wanted = set(subjects)
        return [a for a in self.assignment_rows if a.subject_id in wanted]

    def latest_victim_fixes(self, subjects: Sequence[int]) -> list[VictimFix]:
        out: list[VictimFix] = []
        for sid in sorted(set(subjects)):
            held = [
                f
                for f in self.fixes
                if f.acc == f.acc and self._held(f.device_id, f.ts, sid, "victim")
            ]
            if held:
                f = max(held, key=lambda f: f.ts)
                out.append(VictimFix(sid, f.ts, f.lon, f.lat, f.acc))
        return out

    def offender_fixes(self, subject_id: int, lo: float, hi: float) -> list[StoredFix]:
        return sorted(
            (
                f
                for f in self.fixes
                if lo <= f.ts <= hi
                and f.acc == f.acc  # unknown accuracy (NaN) is never evidence
                and self._held(f.device_id, f.ts, subject_id, "offender")
            ),
            key=lambda f: f.ts,
        )

    def offender_events(self, subject_id: int, lo: float, hi: float) -> list[StoredEvent]:
        return [
            e
            for e in self.events
            if lo <= e.ts <= hi and self._held(e.device_id, e.ts, subject_id, "offender")
        ]

    def episodes(self, subject_id: int, lo: float, hi: float) -> list[Episode]:
        return [
            Episode(
                a.type,
                a.zone_id,
                a.device_id,
                a.first_fix_at if a.first_fix_at is not None else a.opened_at,
                a.cleared_at,
            )
            for a in self.alerts
            if a.subject_id == subject_id
            and (a.cleared_at is None or a.cleared_at >= lo)
            and a.opened_at <= hi
        ]

    def lock_states(
        self, subjects: Sequence[int], known: Mapping[int, str] | None = None
    ) -> dict[int, StateRow]:
        known = known or {}
        out: dict[int, StateRow] = {}
        for sid in sorted(set(subjects)):
            row = self.states.setdefault(sid, StateRow(sid, {}, None, None))
            if row.version is not None and known.get(sid) == row.version:
                row = StateRow(sid, None, None, row.due_at, row.version, kept=True)
            out[sid] = row
        return out

    def due_states(self, now: float, limit: int) -> list[StateRow]:
        at = _dt(now)
        assert at is not None
        due = [
            r for sid, r in sorted(self.states.items()) if r.due_at is not None and r.due_at <= at
        ]
        return due[:limit]

    def read_state(self, subject_id: int) -> StateRow | None:
        return self.states.get(subject_id)

    def save_states(self, rows: Sequence[StateRow]) -> dict[int, str]:
        versions: dict[int, str] = {}
        for r in rows:
            self._versions += 1
            versions[r.subject_id] = str(self._versions)
            doc = r.doc if r.doc is not None else load_doc((r.encoded or b"{}").decode())
            self.states[r.subject_id] = StateRow(
                r.subject_id, doc, r.trail, r.due_at, versions[r.subject_id]
            )
        return versions

    def _alert(self, subject_id: int, episode_key: str) -> MemoryAlert | None:
        for a in self.alerts:
            if a.subject_id == subject_id and a.episode_key == episode_key:
                return a
        return None

    def _region(self, subject_id: int) -> str | None:
        for s in self.subjects:
            if s.subject_id == subject_id:
                return s.region_id
        return None

    def open_alert(self, subject_id: int, change: AlertChange) -> OpenedAlert | None:
        if self._alert(subject_id, change.episode_key) is not None:
            return None
        region = self._region(subject_id)
        alert = MemoryAlert(
            len(self.alerts) + 1,
            subject_id,
            change.device_id,
            change.zone_id,
            region,
            change.type,
            change.severity,
            change.at,
            change.first_fix_at,
            change.at if change.zone_id is not None else None,
            change.late,
            change.lat,
            change.lon,
            change.distance_m,
            change.fix_count,
            change.episode_key,
            dict(change.details),
        )
        self.alerts.append(alert)
        return OpenedAlert(alert.alert_id, region)

    def update_alert(self, subject_id: int, change: AlertChange) -> None:
        a = self._alert(subject_id, change.episode_key)
        if a is not None:
            a.last_fix_at, a.lat, a.lon = change.at, change.lat, change.lon
            a.worst_distance_m, a.fix_count = change.distance_m, change.fix_count

    def clear_alert(self, subject_id: int, episode_key: str, at: float) -> ClearedAlert | None:
        a = self._alert(subject_id, episode_key)
        if a is None or a.cleared_at is not None:
            return None
        a.cleared_at = at
        return ClearedAlert(a.alert_id, a.region_id, a.type, a.severity)

    def add_history(self, alert_id: int, actor: str, action: str, detail: dict[str, Any]) -> None:
        self.history.append((alert_id, actor, action, detail))

    def enqueue(
        self, alert_id: int, region: str | None, alert_type: str, severity: str, event: str
    ) -> None:
        self.outbox.append((alert_id, region, alert_type, severity, event))

    def escalation_candidates(self, types: Sequence[str], now: float) -> list[EscalationCandidate]:
        return [
            EscalationCandidate(a.alert_id, a.subject_id, a.type, a.opened_at)
            for a in self.alerts
            if a.type in types
            and a.status != "resolved"
            and a.cleared_at is None
            and not a.escalated
            and a.opened_at <= now
        ]

    def absconder_open(self, subject_id: int) -> bool:
        return any(
            a.subject_id == subject_id
            and a.type == "absconder"
            and a.status != "resolved"
            and a.cleared_at is None
            for a in self.alerts
        )

    def mark_escalated(self, alert_id: int | str) -> None:
        for a in self.alerts:
            if a.alert_id == alert_id:
                a.escalated = True

    def open_alerts(self, subject_id: int) -> list[dict[str, Any]]:
        return [
            {"id": a.alert_id, "type": a.type, "opened_at": _dt(a.opened_at).isoformat()}  # type: ignore[union-attr]
            for a in self.alerts
            if a.subject_id == subject_id and a.status != "resolved" and a.cleared_at is None
        ]

    def open_case(self, alert_id: int, actor: str) -> None:
        """Offline scoring keeps no cases: the absconder alerts themselves are what it scores."""
        self.cases.append(alert_id)
