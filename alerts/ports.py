"""What the alert engine needs from storage, as a typed port (issue 13).

The engine (`alerts/engine.py`) orchestrates geofence and rules and never speaks SQL: every read
and write it makes goes through an `EngineRepository`. `store/engine_repository.py` implements it
over PostgreSQL on ingest's own connection, inside ingest's transaction (so exactly-once and
alert-in-the-same-transaction hold as before); an in-memory implementation can run the same engine
offline. Rows are dataclasses, not tuples by position, so the two sides cannot drift silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tagwatch.alerts.observe import Episode
from tagwatch.alerts.rules import AlertChange


@dataclass(frozen=True, slots=True)
class SubjectRow:
    """A subject changed since the engine's last sync (what the zone index needs of it)."""

    subject_id: int
    timezone: str
    groups: tuple[str, ...]
    region_id: str
    thresholds: dict[str, Any] | None
    revision: int
    # The approved home beacon's id (migration 0019): the only beacon whose events the rules
    # trust as presence at home. None: no beacon event counts.
    home_beacon: str | None = None


@dataclass(frozen=True, slots=True)
class ZoneRow:
    """A zone changed since the last sync; ``group`` is its group or, for a global zone of one
    region, ``region:<id>`` (None for a subject's own zone)."""

    zone_id: int
    kind: str
    geometry: dict[str, Any]
    radius_m: float | None
    buffer_m: float | None
    subject_id: int | None
    group: str | None
    victim_subject_id: int | None
    schedule: dict[str, Any] | None
    thresholds: dict[str, Any] | None
    name: str | None
    deleted: bool
    revision: int


@dataclass(frozen=True, slots=True)
class Assignment:
    """Who held a device over ``[start, end)`` (epoch seconds, infinite when open)."""

    device_id: str
    subject_id: int
    role: str
    start: float
    end: float
    expected_interval_s: int


@dataclass(frozen=True, slots=True)
class StoredFix:
    device_id: str
    ts: float
    lon: float
    lat: float
    acc: float
    src: str


@dataclass(frozen=True, slots=True)
class StoredEvent:
    device_id: str
    ts: float
    type: str
    beacon: str | None = None  # the beacon a beacon_home_* event names (`detail.beacon`)


@dataclass(frozen=True, slots=True)
class VictimFix:
    """A victim's latest stored position (to restore the engine's memory after a restart)."""

    subject_id: int
    ts: float
    lon: float
    lat: float
    acc: float


@dataclass(frozen=True, slots=True)
class StateRow:
    """One subject's stored rule state: the document (without the trail), the packed trail and
    when the clock rules are due next (see `alerts/state_codec.py`). ``version`` is the row
    version's opaque token (None when unknown); ``kept`` says the row is still at the version
    the reader said it held, so its document and trail were not sent (alerts/state_cache.py)."""

    subject_id: int
    doc: dict[str, Any] | None
    trail: bytes | None
    due_at: datetime | None
    version: str | None = None
    kept: bool = False
    # the document as the engine encoded it (set instead of ``doc`` for a state it keeps, so
    # that no dict is shared with a live state; also spares the repository encoding it again)
    encoded: bytes | None = None


@dataclass(frozen=True, slots=True)
class OpenedAlert:
    alert_id: int
    region_id: str | None


@dataclass(frozen=True, slots=True)
class ClearedAlert:
    alert_id: int
    region_id: str | None
    type: str
    severity: str


@dataclass(frozen=True, slots=True)
class EscalationCandidate:
    alert_id: int
    subject_id: int
    type: str
    opened_at: float


class EngineRepository(Protocol):
    """Storage as the engine sees it. Calls happen inside the caller's transaction; the lock and
    due reads lock what they return until it ends."""

    def transaction(self) -> AbstractContextManager[Any]: ...

    # rule clock and sync
    def clock_and_speed(self) -> tuple[float, float]: ...
    def global_thresholds(self) -> dict[str, Any] | None: ...
    def subjects_since(self, revision: int) -> list[SubjectRow]: ...
    def zones_since(self, revision: int) -> list[ZoneRow]: ...

    # reads for a batch
    def assignments(self, devices: Sequence[str]) -> list[Assignment]: ...
    def subject_assignments(self, subjects: Sequence[int]) -> list[Assignment]: ...
    def latest_victim_fixes(self, subjects: Sequence[int]) -> list[VictimFix]: ...
    def offender_fixes(self, subject_id: int, lo: float, hi: float) -> list[StoredFix]: ...
    def offender_events(self, subject_id: int, lo: float, hi: float) -> list[StoredEvent]: ...
    def episodes(self, subject_id: int, lo: float, hi: float) -> list[Episode]: ...

    # rule state
    def lock_states(
        self, subjects: Sequence[int], known: Mapping[int, str] | None = None
    ) -> dict[int, StateRow]: ...
    def due_states(self, now: float, limit: int) -> list[StateRow]: ...
    def read_state(self, subject_id: int) -> StateRow | None: ...
    def save_states(self, rows: Sequence[StateRow]) -> dict[int, str]:
        """Write the rows; return each written row's new version."""
        ...

    # alerts, history, outbox
    def open_alert(self, subject_id: int, change: AlertChange) -> OpenedAlert | None: ...
    def update_alert(self, subject_id: int, change: AlertChange) -> None: ...
    def clear_alert(self, subject_id: int, episode_key: str, at: float) -> ClearedAlert | None: ...
    def add_history(
        self, alert_id: int, actor: str, action: str, detail: dict[str, Any]
    ) -> None: ...
    def enqueue(
        self, alert_id: int, region: str | None, alert_type: str, severity: str, event: str
    ) -> None: ...

    # escalation
    def escalation_candidates(
        self, types: Sequence[str], now: float
    ) -> list[EscalationCandidate]: ...
    def absconder_open(self, subject_id: int) -> bool: ...
    def mark_escalated(self, alert_id: int | str) -> None: ...
    def open_alerts(self, subject_id: int) -> list[dict[str, Any]]: ...

    # absconder cases: every absconder alert opens one, or joins the subject's outstanding one
    def open_case(self, alert_id: int, actor: str) -> None: ...
