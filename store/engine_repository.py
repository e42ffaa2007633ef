"""The alert engine's repository over PostgreSQL: every statement the engine runs (issue 13).

`PgEngineRepository` implements `tagwatch.alerts.ports.EngineRepository` on a connection the
caller owns: ingest passes the connection its batch is written on, so the alerts a batch raises
commit with it (or not at all). The statements and their locking are the ones the engine ran
itself before: rule state locked `FOR UPDATE` in subject order, the clock and escalation reads
`FOR UPDATE SKIP LOCKED`, one statement for a batch's state saves with binary arrays, the trail as
packed bytes (migration 0008).

The module-level `apply_changes`, `enqueue`, `add_history`, `raise_absconder` and `clock` keep the
connection-taking calls operator actions (alerts/lifecycle.py) and tests use.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from tagwatch.alerts import engine as _engine
from tagwatch.alerts import vocabulary as v
from tagwatch.alerts.escalation import OpenAlert
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
from tagwatch.alerts.state_codec import json_encode, load_doc
from tagwatch.settings import get_settings
from tagwatch.store import cases, commands, places
from tagwatch.store.alerts import severity_rank
from tagwatch.store.fix_columns import value


def _epoch(ts: datetime) -> float:
    return ts.timestamp()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


_fast_json = msgspec.json.Decoder().decode


def decode_json(text: str) -> Any:
    """JSON text as the database sends it, decoded by msgspec (about four times the standard
    library's speed on a district's coordinates: 15 % of a cold start from the tables). The
    values are the same; what msgspec refuses and the standard library takes (a number beyond
    float64, which jsonb's numeric can hold: 1e400 becomes inf for the validators to refuse) is
    left to the standard library."""
    try:
        return _fast_json(text)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return json.loads(text)


def shared_json(text: str | None, decoded: dict[str, Any]) -> Any:
    """``text`` decoded as JSON, the same object for the same text within ``decoded``."""
    if text is None:
        return None
    value = decoded.get(text)
    if value is None:
        value = decoded[text] = decode_json(text)
    return value


def _assignment(
    device_id: str,
    subject_id: int,
    role: str,
    lower: datetime | None,
    upper: datetime | None,
    interval: int,
) -> Assignment:
    """An assignment row (an unbounded range end is infinite) as the engine's port has it."""
    return Assignment(
        device_id,
        subject_id,
        role,
        _epoch(lower) if lower else float("-inf"),
        _epoch(upper) if upper else float("inf"),
        interval,
    )


class PgEngineRepository:
    """The engine's port on one psycopg connection (no transaction of its own but `tick`'s)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.conn.transaction():
            yield

    # -- rule clock and sync

    def clock_and_speed(self) -> tuple[float, float]:
        """The rule clock: wall time, or a replay's scenario time (never past what the replay's
        player has published, `played_until`), and the replay's speed."""
        row = self.conn.execute(
            "SELECT LEAST((extract(epoch FROM origin)"
            " + extract(epoch FROM now() - wall_origin) * speed)::float8,"
            " COALESCE(extract(epoch FROM played_until)::float8, 'Infinity'::float8)),"
            " speed FROM rule_clock"
        ).fetchone()
        return (float(row[0]), float(row[1])) if row else (time.time(), 1.0)

    def global_thresholds(self) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT values FROM alert_thresholds WHERE scope = 'global'"
        ).fetchone()
        return row[0] if row else None

    def subjects_since(self, revision: int) -> list[SubjectRow]:
        return [
            SubjectRow(sid, tz, tuple(groups), region, thresholds, rev, beacon)
            for sid, tz, groups, region, thresholds, rev, beacon in self.conn.execute(
                "SELECT id, timezone, groups, region_id, thresholds, revision, home_beacon"
                " FROM subjects WHERE revision > %s",
                (revision,),
            )
        ]

    def zones_since(self, revision: int) -> list[ZoneRow]:
        """The zones changed since ``revision``. Each distinct geometry text is decoded once and
        its zones share the object: a district that is the inclusion zone of thousands of
        subjects was decoded (and then keyed by the index) once per copy, most of a cold start
        from the tables; the index keys a shared object once per batch (geofence.index)."""
        decoded: dict[str, Any] = {}
        rows = self.conn.execute(
            "SELECT id, kind, geometry::text, radius_m, buffer_m, subject_id,"
            " CASE WHEN subject_id IS NULL THEN coalesce(group_name, 'region:' || region_id)"
            " END, victim_subject_id, schedule::text, thresholds::text, name,"
            " deleted_at IS NOT NULL, revision FROM zones WHERE revision > %s ORDER BY revision",
            (revision,),
        ).fetchall()
        # Schedules and thresholds repeat too (every home curfew of a caseload has one of a
        # few schedules): shared the same way, so the engine parses each distinct one once.
        return [
            ZoneRow(
                zid,
                kind,
                shared_json(geometry, decoded),
                radius,
                buffer,
                subject_id,
                group,
                victim,
                shared_json(schedule, decoded),
                shared_json(thresholds, decoded),
                name,
                deleted,
                rev,
            )
            for (
                zid,
                kind,
                geometry,
                radius,
                buffer,
                subject_id,
                group,
                victim,
                schedule,
                thresholds,
                name,
                deleted,
                rev,
            ) in rows
        ]

    # -- reads for a batch

    def assignments(self, devices: Sequence[str]) -> list[Assignment]:
        # One probe per device (LATERAL ... OFFSET 0 keeps it a nested loop) on the covering
        # index of migration 0008, the only one that matches `COLLATE "C"`: `device_id =
        # ANY(...)` made the planner seq-scan both tables, a cost that grew with every device.
        return [
            _assignment(*row)
            for row in self.conn.execute(
                "SELECT q.id, a.subject_id, a.role, lower(a.during), upper(a.during),"
                " (SELECT d.expected_interval_s FROM devices d WHERE d.id = q.id)"
                " FROM unnest(%s::text[]) AS q(id) CROSS JOIN LATERAL"
                " (SELECT subject_id, role, during FROM device_assignments"
                ' WHERE device_id COLLATE "C" = q.id OFFSET 0) AS a',
                (list(devices),),
            )
        ]

    def subject_assignments(self, subjects: Sequence[int]) -> list[Assignment]:
        """Every assignment of ``subjects`` (the clock rules judge only the devices a subject
        holds at the rule clock's time; see alerts/holding.py)."""
        return [
            _assignment(*row)
            for row in self.conn.execute(
                "SELECT a.device_id, a.subject_id, a.role, lower(a.during), upper(a.during),"
                " d.expected_interval_s FROM device_assignments a"
                " JOIN devices d ON d.id = a.device_id WHERE a.subject_id = ANY(%s)",
                (list(subjects),),
            )
        ]

    def latest_victim_fixes(self, subjects: Sequence[int]) -> list[VictimFix]:
        return [
            VictimFix(sid, _epoch(ts), lon, lat, float(acc or 0.0))
            for sid, ts, lon, lat, acc in self.conn.execute(
                "SELECT DISTINCT ON (a.subject_id) a.subject_id, f.ts,"
                f" {value('lon', 'f')}, {value('lat', 'f')}, {value('acc', 'f')}"
                " FROM device_assignments a JOIN fixes f ON f.device_id = a.device_id"
                " AND a.during @> f.ts WHERE a.role = 'victim' AND a.subject_id = ANY(%s)"
                f" AND {value('acc', 'f')} IS NOT NULL"
                " ORDER BY a.subject_id, f.ts DESC",
                (list(subjects),),
            )
        ]

    def offender_fixes(self, subject_id: int, lo: float, hi: float) -> list[StoredFix]:
        return [
            StoredFix(d, _epoch(ts), lon, lat, float(acc or 0.0), src or "gps")
            for d, ts, lon, lat, acc, src in self.conn.execute(
                f"SELECT f.device_id, f.ts, {value('lon', 'f')}, {value('lat', 'f')},"
                f" {value('acc', 'f')}, f.src FROM fixes f"
                " JOIN device_assignments a ON a.device_id = f.device_id AND a.during @> f.ts"
                " WHERE a.subject_id = %s AND a.role = 'offender' AND f.ts BETWEEN %s AND %s"
                f" AND {value('acc', 'f')} IS NOT NULL ORDER BY f.ts",
                (subject_id, _dt(lo), _dt(hi)),
            ).fetchall()
        ]

    def offender_events(self, subject_id: int, lo: float, hi: float) -> list[StoredEvent]:
        return [
            StoredEvent(d, _epoch(ts), kind, beacon)
            for d, ts, kind, beacon in self.conn.execute(
                "SELECT e.device_id, e.ts, e.type, beacon_of(e.detail) FROM device_events e"
                " JOIN device_assignments a ON a.device_id = e.device_id AND a.during @> e.ts"
                " WHERE a.subject_id = %s AND a.role = 'offender' AND e.ts BETWEEN %s AND %s",
                (subject_id, _dt(lo), _dt(hi)),
            )
        ]

    def episodes(self, subject_id: int, lo: float, hi: float) -> list[Episode]:
        return [
            Episode(t, z, d, start, end)
            for t, z, d, start, end in self.conn.execute(
                "SELECT type, zone_id, device_id,"
                " extract(epoch FROM coalesce(first_fix_at, opened_at))::float8,"
                " extract(epoch FROM cleared_at)::float8 FROM alerts WHERE subject_id = %s"
                " AND coalesce(cleared_at, 'infinity') >= %s AND opened_at <= %s",
                (subject_id, _dt(lo), _dt(hi)),
            )
        ]

    # -- rule state

    def lock_states(
        self, subjects: Sequence[int], known: Mapping[int, str] | None = None
    ) -> dict[int, StateRow]:
        """Every subject's state row, locked in subject order; a subject without one gets an
        empty row first. A row deleted between the insert and the lock (a subject released
        concurrently) is created again: never a missing state, which would skip the batch's
        evaluation. A subject still missing after six rounds is left out (the engine starts it
        empty and the save upserts it).

        ``known``: the row versions (``xmin``) the caller holds decoded; a row still at that
        version comes back ``kept``, without its document and trail (alerts/state_cache.py).
        The comparison is made on the locked row, which cannot change until this transaction
        ends."""
        known = known or {}
        held_ids = list(known)
        held_versions = [known[s] for s in held_ids]
        rows: dict[int, StateRow] = {}
        wanted = sorted(set(subjects))
        missing = wanted
        for attempt in range(6):
            if attempt:
                # only subjects never evaluated before (or just released) get here; a row this
                # transaction created is its own (invisible and unlockable to others till commit)
                created = self.conn.execute(
                    "INSERT INTO rule_state (subject_id, state)"
                    " SELECT s, '{}'::jsonb FROM unnest(%s::bigint[]) AS s ORDER BY s"
                    " ON CONFLICT DO NOTHING RETURNING subject_id",
                    (missing,),
                ).fetchall()
                for (sid,) in created:
                    rows[sid] = StateRow(sid, {}, None, None)
                missing = [s for s in missing if s not in rows]
                if not missing:
                    break
            for sid, version, same, text, packed, due_read in self.conn.execute(
                "SELECT r.subject_id, r.xmin::text, k.v IS NOT NULL,"
                " CASE WHEN k.v IS NULL THEN r.state::text END,"
                " CASE WHEN k.v IS NULL THEN r.trail END, r.due_at"
                " FROM rule_state r LEFT JOIN unnest(%s::int8[], %s::text[]) AS k(s, v)"
                " ON k.s = r.subject_id AND k.v = r.xmin::text"
                " WHERE r.subject_id = ANY(%s) ORDER BY r.subject_id FOR UPDATE OF r",
                (held_ids, held_versions, missing),
            ):
                rows[sid] = StateRow(
                    sid, None if same else load_doc(text), packed, due_read, version, same
                )
            missing = [s for s in wanted if s not in rows]
            if not missing:
                break
        return rows

    def due_states(self, now: float, limit: int) -> list[StateRow]:
        return [
            StateRow(sid, load_doc(text), packed, due_read)
            for sid, text, packed, due_read in self.conn.execute(
                "SELECT subject_id, state::text, trail, due_at FROM rule_state"
                " WHERE due_at <= %s ORDER BY subject_id LIMIT %s FOR UPDATE SKIP LOCKED",
                (_dt(now), limit),
            ).fetchall()
        ]

    def read_state(self, subject_id: int) -> StateRow | None:
        row = self.conn.execute(
            "SELECT state::text, trail, due_at FROM rule_state WHERE subject_id = %s",
            (subject_id,),
        ).fetchone()
        return None if row is None else StateRow(subject_id, load_doc(row[0]), row[1], row[2])

    def save_states(self, rows: Sequence[StateRow]) -> dict[int, str]:
        """One statement for the whole batch (an UPDATE per subject was a round trip each); the
        arrays go in binary (no text escaping). Returns the rows' new versions (``xmin``)."""
        if not rows:
            return {}
        cursor = self.conn.execute(
            "INSERT INTO rule_state (subject_id, state, trail, due_at)"
            " SELECT s, d::jsonb, t, due FROM"
            " unnest(%b::int8[], %b::text[], %b::bytea[], %b::timestamptz[]) AS u(s, d, t, due)"
            " ON CONFLICT (subject_id) DO UPDATE SET state = excluded.state,"
            " trail = excluded.trail, due_at = excluded.due_at, updated_at = now()"
            " RETURNING subject_id, xmin::text",
            (
                [r.subject_id for r in rows],
                [(r.encoded or json_encode(r.doc)).decode() for r in rows],
                [r.trail or b"" for r in rows],
                [r.due_at for r in rows],
            ),
        )
        return {int(sid): str(version) for sid, version in cursor.fetchall()}

    # -- alerts, history, outbox

    def open_alert(self, subject_id: int, change: AlertChange) -> OpenedAlert | None:
        row = self.conn.execute(
            "INSERT INTO alerts (subject_id, device_id, zone_id, region_id, type, severity,"
            " opened_at, first_fix_at, last_fix_at, late, lat, lon, worst_distance_m,"
            " fix_count, episode_key, details)"
            " SELECT %s, %s, %s, s.region_id, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
            " FROM subjects s WHERE s.id = %s"
            " ON CONFLICT (subject_id, episode_key) DO NOTHING RETURNING id, region_id",
            (
                subject_id,
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
                subject_id,
            ),
        ).fetchone()
        return None if row is None else OpenedAlert(row[0], row[1])

    def update_alert(self, subject_id: int, change: AlertChange) -> None:
        self.conn.execute(
            "UPDATE alerts SET last_fix_at = %s, lat = %s, lon = %s,"
            " worst_distance_m = %s, fix_count = %s, updated_at = now()"
            " WHERE subject_id = %s AND episode_key = %s",
            (
                _dt(change.at),
                change.lat,
                change.lon,
                change.distance_m,
                change.fix_count,
                subject_id,
                change.episode_key,
            ),
        )

    def clear_alert(self, subject_id: int, episode_key: str, at: float) -> ClearedAlert | None:
        row = self.conn.execute(
            "UPDATE alerts SET cleared_at = %s, updated_at = now()"
            " WHERE subject_id = %s AND episode_key = %s AND cleared_at IS NULL"
            " RETURNING id, region_id, type, severity",
            (_dt(at), subject_id, episode_key),
        ).fetchone()
        return None if row is None else ClearedAlert(row[0], row[1], row[2], row[3])

    def add_history(self, alert_id: int, actor: str, action: str, detail: dict[str, Any]) -> None:
        add_history(self.conn, alert_id, actor, action, detail)

    def enqueue(
        self, alert_id: int, region: str | None, alert_type: str, severity: str, event: str
    ) -> None:
        enqueue(self.conn, alert_id, region, alert_type, severity, event)

    # -- escalation

    def escalation_candidates(self, types: Sequence[str], now: float) -> list[EscalationCandidate]:
        return [
            EscalationCandidate(*row)
            for row in self.conn.execute(
                "SELECT id, subject_id, type, extract(epoch FROM opened_at)::float8 FROM alerts"
                " WHERE type = ANY(%s) AND status <> 'resolved' AND cleared_at IS NULL"
                " AND NOT escalated AND opened_at <= %s ORDER BY id FOR UPDATE SKIP LOCKED",
                (list(types), _dt(now)),
            ).fetchall()
        ]

    def absconder_open(self, subject_id: int) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM alerts WHERE subject_id = %s AND type = 'absconder'"
                " AND status <> 'resolved' AND cleared_at IS NULL",
                (subject_id,),
            ).fetchone()
            is not None
        )

    def open_case(self, alert_id: int, actor: str) -> None:
        cases.open_for_alert(self.conn, alert_id, actor)

    def mark_escalated(self, alert_id: int | str) -> None:
        self.conn.execute("UPDATE alerts SET escalated = true WHERE id = %s", (alert_id,))

    def open_alerts(self, subject_id: int) -> list[dict[str, Any]]:
        return [
            {"id": i, "type": t, "opened_at": o.isoformat()}
            for i, t, o in self.conn.execute(
                "SELECT id, type, opened_at FROM alerts WHERE subject_id = %s"
                " AND status <> 'resolved' AND cleared_at IS NULL ORDER BY id",
                (subject_id,),
            )
        ]


# -- connection-taking calls (operator actions, tests) -----------------------------------------


def clock(conn: psycopg.Connection) -> float:
    """The rule clock on ``conn`` (see `PgEngineRepository.clock_and_speed`)."""
    return PgEngineRepository(conn).clock_and_speed()[0]


def clock_and_speed(conn: psycopg.Connection) -> tuple[float, float]:
    return PgEngineRepository(conn).clock_and_speed()


def apply_changes(
    conn: psycopg.Connection, sid: int, changes: Sequence[AlertChange], actor: str = "engine"
) -> int:
    return _engine.apply_changes(PgEngineRepository(conn), sid, changes, actor)


def raise_absconder(
    conn: psycopg.Connection,
    sid: int,
    now: float,
    *,
    source: OpenAlert | None = None,
    declared_by: str | None = None,
) -> int:
    return _engine.raise_absconder(
        PgEngineRepository(conn), sid, now, source=source, declared_by=declared_by
    )


def add_history(
    conn: psycopg.Connection, alert_id: int, actor: str, action: str, detail: dict[str, Any]
) -> None:
    conn.execute(
        "INSERT INTO alert_history (alert_id, actor, action, detail) VALUES (%s, %s, %s, %s)",
        (alert_id, actor, action, Jsonb(detail)),
    )


# Human channels (Apprise, migration 0021) matching as webhooks do; an escalation channel (a
# supervisor's) gets only the `escalated` events; a victim's own alert goes to supervisor-level
# channels only (tracers and operators cannot read victim subjects: docs/api.md).
HUMAN_CHANNELS = (
    "SELECT %(o)s, 'apprise:' || c.id FROM notification_channels c WHERE c.active"
    " AND ('*' = ANY(c.regions) OR %(region)s = ANY(c.regions))"
    " AND ('*' = ANY(c.types) OR %(type)s = ANY(c.types))"
    f" AND {severity_rank('c.min_severity')} <= %(rank)s"
    " AND (NOT c.escalation OR %(event)s = 'escalated')"
    " AND (c.role = 'supervisor' OR NOT EXISTS (SELECT 1 FROM alerts a"
    " JOIN subjects s ON s.id = a.subject_id WHERE a.id = %(alert)s AND s.victim))"
)


def enqueue(
    conn: psycopg.Connection,
    alert_id: int,
    region: str | None,
    alert_type: str,
    severity: str,
    event: str,
) -> None:
    """An outbox row with the alert as it is now, and one delivery per matching channel (a
    subscription matches when the alert is at least its ``min_severity``, in
    ``vocabulary.SEVERITY_RANK``'s order). The payload leaves the platform (webhooks, MQTT, the
    live feed): the name of a zone protecting a victim is left out of its details
    (alert_public_details, migration 0013).

    A critical alert is also routed by where the subject is (issue 16, `places.route_alert`):
    subscriptions targeting a tracing unit of the chosen office receive it whatever their
    regions, and the payload carries ``routing`` (office, distance, reason). The decision is
    made here, at outbox-write time in the alert's own transaction, rather than in the
    dispatcher: it is then committed atomically with the alert and its deliveries (a crash
    loses neither or both; the dispatcher stays a sender that never decides who is told), it is
    evidence kept on the alert (``alerts.routing``) of who was told and why as the platform knew
    the offices then, and every event of the alert goes to the same unit. The cost is a read
    of the regions' boundaries and the offices per critical event, small beside a critical
    alert's rarity, and that ingest reads offices and units (SELECT only, store/roles.py)."""
    routing = None
    if severity == "critical":
        routing = places.route_alert(
            conn, alert_id, region, get_settings().routing_max_office_distance_m
        )
    row = conn.execute(
        "INSERT INTO outbox (alert_id, region_id, type, severity, event, payload)"
        " SELECT a.id, %s, %s, %s, %s, jsonb_build_object('alert_id', a.id, 'event', %s::text,"
        " 'type', a.type, 'severity', a.severity, 'status', a.status,"
        " 'subject_id', a.subject_id, 'region', a.region_id, 'device_id', a.device_id,"
        " 'zone_id', a.zone_id, 'opened_at', a.opened_at, 'first_fix_at', a.first_fix_at,"
        " 'cleared_at', a.cleared_at, 'late', a.late, 'lat', a.lat, 'lon', a.lon,"
        " 'details', alert_public_details(a.zone_id, a.details))"
        " || CASE WHEN %s::jsonb IS NULL THEN '{}'::jsonb"
        " ELSE jsonb_build_object('routing', %s::jsonb) END"
        " FROM alerts a WHERE a.id = %s RETURNING id",
        (
            region,
            alert_type,
            severity,
            event,
            event,
            None if routing is None else Jsonb(routing),
            None if routing is None else Jsonb(routing),
            alert_id,
        ),
    ).fetchone()
    assert row is not None
    rank = v.SEVERITY_RANK[severity]
    units = [u["id"] for u in routing["tracing_units"]] if routing else []
    conn.execute(
        "INSERT INTO deliveries (outbox_id, channel)"
        " SELECT %(o)s, 'mqtt' UNION ALL"
        " SELECT %(o)s, 'webhook:' || w.id FROM webhook_subscriptions w WHERE w.active"
        " AND ('*' = ANY(w.regions) OR %(region)s = ANY(w.regions)"
        " OR w.tracing_unit_id = ANY(%(units)s::bigint[]))"
        " AND ('*' = ANY(w.types) OR %(type)s = ANY(w.types))"
        f" AND {severity_rank('w.min_severity')} <= %(rank)s"
        f" UNION ALL {HUMAN_CHANNELS}",
        {"o": row[0], "region": region, "units": units, "type": alert_type, "rank": rank,
         "event": event, "alert": alert_id},
    )  # fmt: skip
    commands.note_pursuit_trigger(conn, alert_id, alert_type, event)
    commands.notify_victim(conn, alert_id, alert_type, event)


def release_rule_state(conn: psycopg.Connection, subject_id: int, due_by: float) -> int:
    """`alerts.engine.release_held` on ``conn``: release from the subject's rule state the
    devices it no longer holds (in the transaction that ended the assignment)."""
    return _engine.release_held(PgEngineRepository(conn), subject_id, due_by)


def forget_rule_state(conn: psycopg.Connection, subject_ids: Sequence[int]) -> None:
    """Drop the subjects' rule state (they are no longer monitored: a scenario or a load has
    ended), so no clock rule judges them again."""
    conn.execute("DELETE FROM rule_state WHERE subject_id = ANY(%s)", (list(subject_ids),))


def seed_rule_state(
    conn: psycopg.Connection, states: Sequence[tuple[int, dict[str, Any], bytes]]
) -> None:
    """Many subjects' rule state at once (COPY; subject id, the jsonb document and the packed
    trail as `encode_state` makes them, the row the engine itself writes), for benchmarks that
    start from subjects tracked for a while."""
    with (
        conn.cursor() as cur,
        cur.copy("COPY rule_state (subject_id, state, trail) FROM STDIN") as copy,
    ):
        for subject_id, doc, trail in states:
            copy.write_row((subject_id, Jsonb(doc), trail))


def catalogue_identity(conn: psycopg.Connection[Any]) -> tuple[str, int, int]:
    """Which database the engine's catalogue comes from, and how far it has come: the cluster's
    system identifier (from initdb; replicas share it), this database's OID, and the highest
    zone or subject revision committed. A snapshot of the catalogue names the first two and is
    refused by another database; one whose revision is above the third is from a timeline this
    database never had (restored from a backup) and is refused too (ingest/index_snapshot.py)."""
    row = conn.execute(
        "SELECT (SELECT system_identifier FROM pg_control_system())::text,"
        " (SELECT oid FROM pg_database WHERE datname = current_database())::bigint,"
        " greatest((SELECT max(revision) FROM zones), (SELECT max(revision) FROM subjects), 0)"
    ).fetchone()
    assert row is not None
    return str(row[0]), int(row[1]), int(row[2])
