"""Commands to devices (migration 0018): queue, send, answer, expire; and pursuit's commands.

Who writes what: the API queues (`queue_command`, async), the dispatcher's command sender claims
what is due and marks it sent (`claim_sendable`, `mark_sent`) and expires what ran out
(`expire_due`), ingest stores the tags' answers in its batch transaction (`record_answers`), and
HTTP intake hands a phone its pending commands in its answer (`take_pending_for_http`). Pursuit
(issue 15): the alert's own transaction writes a `pursuit_triggers` row (`note_pursuit_trigger`,
from `engine_repository.enqueue`); the sender turns each into commands exactly once
(`apply_pursuit_triggers`), under the policy the dispatcher's settings give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from tagwatch.alerts import device_commands as dc
from tagwatch.alerts import victim_protection as vp
from tagwatch.alerts import vocabulary as v
from tagwatch.store.audit import append_sync

COLUMNS: Final = (
    "id, device_id, type, args, state, origin, alert_id, created_at, not_before, expires_at,"
    " sent_at, last_sent_at, send_count, channel, answered_at, device_ts, expired_at, detail"
)
INSERT: Final = (
    "INSERT INTO device_commands (device_id, type, args, origin, alert_id, not_before,"
    " expires_at) VALUES (%(device)s, %(type)s, %(args)s, %(origin)s, %(alert)s,"
    " coalesce(%(not_before)s, now()),"
    " coalesce(%(not_before)s, now()) + make_interval(secs => %(ttl)s))"
    f" RETURNING {COLUMNS}"
)
PURSUIT: Final = "pursuit"  # starts a pursuit (and carries duration_s)
PURSUIT_END: Final = "pursuit_end"  # the return to the normal interval, scheduled at the limit
PURSUIT_EVENTS: Final = frozenset({"opened", "cleared", "resolved"})
VICTIM_NOTICE: Final = "victim_notice"  # a victim told that the offender is near (issue 15)


@dataclass(frozen=True, slots=True)
class Command:
    id: int
    device_id: str
    type: str
    args: dict[str, Any]
    state: str
    origin: str
    alert_id: int | None
    created_at: datetime
    not_before: datetime
    expires_at: datetime
    sent_at: datetime | None
    last_sent_at: datetime | None
    send_count: int
    channel: str | None
    answered_at: datetime | None
    device_ts: datetime | None
    expired_at: datetime | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class Sendable:
    """A command due to go out over MQTT, with what its wire form needs."""

    id: int
    device_id: str
    type: str
    args: dict[str, Any]
    kind: str
    owntracks_topic: str | None
    normal_interval_s: int
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Answer:
    """A tag's answer on em/v1/{id}/ack, decoded by ingest."""

    device_id: str
    command_id: int
    status: str  # "done" | "failed"
    device_ts: datetime
    detail: str | None


@dataclass(frozen=True, slots=True)
class PursuitPolicy:
    """The dispatcher's pursuit settings (`TAGWATCH_PURSUIT_*`)."""

    enabled: bool = True
    interval_s: int = 15
    limit_s: int = 1800
    command_ttl_s: int = 600


# -- the API ---------------------------------------------------------------------------------


async def queue_command(
    conn: AsyncConnection[Any],
    device_id: str,
    command_type: str,
    args: dict[str, Any],
    origin: str,
    ttl_s: float,
) -> Command:
    cur = conn.cursor(row_factory=class_row(Command))
    await cur.execute(
        INSERT,
        {
            "device": device_id,
            "type": command_type,
            "args": Jsonb(args),
            "origin": origin,
            "alert": None,
            "not_before": None,
            "ttl": float(ttl_s),
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def list_commands(
    conn: AsyncConnection[Any], device_id: str, before_id: int | None, limit: int
) -> list[Command]:
    """Newest first (what an operator looks for is what was just sent)."""
    cur = conn.cursor(row_factory=class_row(Command))
    await cur.execute(
        f"SELECT {COLUMNS} FROM device_commands WHERE device_id = %s"
        " AND (%s::bigint IS NULL OR id < %s) ORDER BY id DESC LIMIT %s",
        (device_id, before_id, before_id, limit),
    )
    return await cur.fetchall()


async def read_command(
    conn: AsyncConnection[Any], device_id: str, command_id: int
) -> Command | None:
    cur = conn.cursor(row_factory=class_row(Command))
    await cur.execute(
        f"SELECT {COLUMNS} FROM device_commands WHERE device_id = %s AND id = %s",
        (device_id, command_id),
    )
    return await cur.fetchone()


async def holder_now(conn: AsyncConnection[Any], device_id: str) -> int | None:
    """The subject holding the device now (for the audit row), or None."""
    cur = await conn.execute(
        "SELECT subject_id FROM device_assignments WHERE device_id = %s AND during @> now()",
        (device_id,),
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


def queue_command_sync(
    conn: psycopg.Connection,
    device_id: str,
    command_type: str,
    args: dict[str, Any],
    actor: tuple[str, str],
    ttl_s: float,
) -> tuple[Command, str]:
    """The CLI's `tagwatch device command`: the API's check, insert and audit row, in one
    transaction. Returns the command and the device's kind; raises LookupError for an unknown
    device and CommandRefused (from ``check_command``) for a command it cannot take."""
    with conn.transaction():
        row = conn.execute(
            "SELECT kind, osmand FROM devices WHERE id = %s", (device_id,)
        ).fetchone()
        if row is None:
            msg = f"device {device_id!r} is not registered"
            raise LookupError(msg)
        checked = dc.check_command(str(row[0]), command_type, args, osmand=bool(row[1]))
        cur = conn.cursor(row_factory=class_row(Command))
        command = cur.execute(
            INSERT,
            {
                "device": device_id,
                "type": command_type,
                "args": Jsonb(checked),
                "origin": f"user:{actor[0]}",
                "alert": None,
                "not_before": None,
                "ttl": float(ttl_s),
            },
        ).fetchone()
        assert command is not None
        holder = conn.execute(
            "SELECT subject_id FROM device_assignments WHERE device_id = %s AND during @> now()",
            (device_id,),
        ).fetchone()
        append_sync(
            conn,
            actor[0],
            actor[1],
            "device_command",
            None if holder is None else int(holder[0]),
            {"device_id": device_id, "command_id": command.id, "type": command_type},
        )
    return command, str(row[0])


# -- the sender (dispatcher) -------------------------------------------------------------------


def claim_sendable(conn: psycopg.Connection, resend_after_s: float, limit: int) -> list[Sendable]:
    """Commands to publish now, locked until the caller's transaction ends: queued ones that are
    due, and tags' sent ones still unanswered after ``resend_after_s`` (at least once: the tag
    deduplicates on the id). Phones answer at most a `locate_now` (`record_phone_responses`),
    so their sent commands are not repeated. Traccar Client phones have no way down: skipped.
    Phones in HTTP mode take theirs from `take_pending_for_http`; their commands also go out on
    MQTT, which an HTTP-mode app simply never reads."""
    cur = conn.cursor(row_factory=class_row(Sendable))
    return cur.execute(
        "SELECT c.id, c.device_id, c.type, c.args, d.kind, d.owntracks_topic,"
        " d.expected_interval_s AS normal_interval_s, c.created_at, c.expires_at"
        " FROM device_commands c JOIN devices d ON d.id = c.device_id"
        " WHERE c.expires_at > now() AND NOT d.osmand AND ("
        "  (c.state = 'queued' AND c.not_before <= now())"
        "  OR (c.state = 'sent' AND d.kind = 'tag' AND c.channel = 'mqtt'"
        "      AND c.last_sent_at <= now() - make_interval(secs => %s)))"
        " ORDER BY c.id LIMIT %s FOR UPDATE OF c SKIP LOCKED",
        (float(resend_after_s), limit),
    ).fetchall()


def mark_sent(conn: psycopg.Connection, ids: Sequence[int], channel: str = "mqtt") -> None:
    conn.execute(
        "UPDATE device_commands SET state = 'sent', sent_at = coalesce(sent_at, now()),"
        " last_sent_at = now(), send_count = send_count + 1, channel = %s"
        " WHERE id = ANY(%s) AND state IN ('queued', 'sent')",
        (channel, list(ids)),
    )


def mark_failed(conn: psycopg.Connection, command_id: int, detail: str) -> None:
    conn.execute(
        "UPDATE device_commands SET state = 'failed', detail = %s"
        " WHERE id = %s AND state IN ('queued', 'sent')",
        (detail, command_id),
    )


def expire_due(conn: psycopg.Connection) -> int:
    """Queued or sent commands past their expiry become expired (a phone's sent command is done
    as far as the platform can know: it stays sent). Returns how many."""
    cur = conn.execute(
        "UPDATE device_commands c SET state = 'expired', expired_at = now(),"
        " detail = CASE c.state WHEN 'queued' THEN 'never sent before it expired'"
        " ELSE 'no answer before it expired' END"
        " FROM devices d WHERE d.id = c.device_id AND c.expires_at <= now()"
        " AND (c.state = 'queued' OR (c.state = 'sent' AND d.kind = 'tag'))"
    )
    return cur.rowcount


def seconds_to_next(conn: psycopg.Connection) -> float | None:
    """Until the next queued command comes due or an open one expires, if any."""
    row = conn.execute(
        "SELECT extract(epoch FROM least(min(not_before) FILTER (WHERE state = 'queued'),"
        " min(expires_at)) - now())::float8 FROM device_commands"
        " WHERE state IN ('queued', 'sent')"
    ).fetchone()
    return None if row is None or row[0] is None else max(0.0, float(row[0]))


def listen(conn: psycopg.Connection) -> None:
    conn.execute("LISTEN tagwatch_commands")


# -- ingest ----------------------------------------------------------------------------------


def record_answers(conn: psycopg.Connection, answers: Sequence[Answer]) -> list[int]:
    """Store the tags' answers; return the indexes of those that name no command this device
    was sent (the caller dead-letters them). A repeated answer changes nothing. An answer to an
    expired command is kept on it (`answered_at`, the detail) without reviving it: the
    platform had given up and, e.g., started no pursuit on the strength of it."""
    unknown: list[int] = []
    for i, a in enumerate(answers):
        row = conn.execute(
            "UPDATE device_commands SET"
            " state = CASE WHEN state = 'sent' THEN"
            "  CASE WHEN %(status)s = 'done' THEN 'acknowledged' ELSE 'failed' END ELSE state END,"
            " answered_at = coalesce(answered_at, now()), device_ts = coalesce(device_ts, %(ts)s),"
            " detail = CASE WHEN answered_at IS NOT NULL THEN detail"
            "  WHEN state = 'expired' THEN 'answered after it expired: ' || %(status)s"
            "  ELSE %(detail)s END"
            " WHERE id = %(id)s AND device_id = %(device)s"
            " AND state IN ('sent', 'acknowledged', 'failed', 'expired') RETURNING id",
            {
                "status": a.status,
                "ts": a.device_ts,
                "detail": a.detail,
                "id": a.command_id,
                "device": a.device_id,
            },
        ).fetchone()
        if row is None:
            unknown.append(i)
    return unknown


def record_phone_responses(conn: psycopg.Connection, device_ids: Sequence[str]) -> int:
    """OwnTracks phones that sent a location with `t: "r"` (the booklet: "response to a
    reportLocation cmd message"): that location is the app's answer to `locate_now`, so each
    such device's oldest sent, unanswered `locate_now` becomes acknowledged. The apps answer no
    other command; those stay `sent`. Returns how many commands it acknowledged."""
    acknowledged = 0
    for device_id in device_ids:
        cur = conn.execute(
            "UPDATE device_commands SET state = 'acknowledged', answered_at = now(),"
            " detail = 'answered with a location (t: r)'"
            " WHERE id = (SELECT id FROM device_commands WHERE device_id = %s"
            "  AND type = 'locate_now' AND state = 'sent' ORDER BY id LIMIT 1"
            "  FOR UPDATE SKIP LOCKED)",
            (device_id,),
        )
        acknowledged += cur.rowcount
    return acknowledged


# -- HTTP intake (OwnTracks HTTP mode) ---------------------------------------------------------


def take_pending_for_http(conn: psycopg.Connection, device_id: str) -> list[dict[str, Any]]:
    """A phone's due commands as the OwnTracks apps' own `cmd` objects, marked sent (channel
    `http`), for the answer to its `POST /owntracks`: the apps read commands from that answer
    (booklet docs/tech/http.md). Call it in the transaction that stores the request, so a
    rolled-back request hands out nothing. The sender also publishes phones' commands on MQTT
    (the platform does not know which mode an app is in), so one already published there and
    not yet carried by an HTTP answer is handed out too: an app in HTTP mode never reads MQTT."""
    rows = conn.execute(
        "SELECT c.id, c.type, c.args, d.expected_interval_s FROM device_commands c"
        " JOIN devices d ON d.id = c.device_id"
        " WHERE c.device_id = %s AND d.kind <> 'tag'"
        " AND (c.state = 'queued' OR (c.state = 'sent' AND c.channel = 'mqtt'))"
        " AND c.not_before <= now() AND c.expires_at > now()"
        " ORDER BY c.id FOR UPDATE OF c SKIP LOCKED",
        (device_id,),
    ).fetchall()
    messages = [dc.owntracks_message(t, args, normal) for _, t, args, normal in rows]
    if rows:
        mark_sent(conn, [r[0] for r in rows], channel="http")
    return messages


# -- pursuit ---------------------------------------------------------------------------------


def note_pursuit_trigger(
    conn: psycopg.Connection, alert_id: int, alert_type: str, event: str
) -> None:
    """In the alert's own transaction: remember a transition that starts or ends a pursuit."""
    if alert_type in v.PURSUIT_TYPES and event in PURSUIT_EVENTS:
        conn.execute(
            "INSERT INTO pursuit_triggers (alert_id, event) VALUES (%s, %s)", (alert_id, event)
        )


def apply_pursuit_triggers(conn: psycopg.Connection, policy: PursuitPolicy, limit: int) -> int:
    """Turn waiting triggers into commands, in the caller's transaction (exactly once: each
    trigger is deleted with the commands it made). Returns how many triggers were handled.

    * opened (alert still uncleared and unresolved): every device the subject holds now as
      offender gets `set_interval` to the pursuit interval with `duration_s` = the limit (a tag
      goes back by itself even if it never hears the end), and a return to its normal interval
      scheduled at the limit (phones cannot time a change out); an earlier pursuit's scheduled
      return still queued is cancelled, superseded by this one.
    * cleared / resolved: when no other pursuit alert of the subject is still open, the
      scheduled return is sent now. When the limit has already passed it has gone out already.
    """
    triggers = conn.execute(
        "SELECT t.id, t.event, a.id, a.subject_id, (a.cleared_at IS NULL AND"
        " a.status <> 'resolved') FROM pursuit_triggers t JOIN alerts a ON a.id = t.alert_id"
        " ORDER BY t.id LIMIT %s FOR UPDATE OF t SKIP LOCKED",
        (limit,),
    ).fetchall()
    for trigger_id, event, alert_id, subject_id, still_open in triggers:
        if policy.enabled:
            if event == "opened" and still_open:
                _start_pursuit(conn, policy, alert_id, subject_id)
            elif event != "opened" and not _other_pursuit_open(conn, subject_id, alert_id):
                _end_pursuit(conn, subject_id)
        conn.execute("DELETE FROM pursuit_triggers WHERE id = %s", (trigger_id,))
    return len(triggers)


def _offender_devices(conn: psycopg.Connection, subject_id: int) -> list[tuple[str, int]]:
    return [
        (str(d), int(n))
        for d, n in conn.execute(
            "SELECT d.id, d.expected_interval_s FROM device_assignments a"
            " JOIN devices d ON d.id = a.device_id WHERE a.subject_id = %s"
            " AND a.role = 'offender' AND a.during @> now() AND NOT d.osmand ORDER BY d.id",
            (subject_id,),
        )
    ]


def _start_pursuit(
    conn: psycopg.Connection, policy: PursuitPolicy, alert_id: int, subject_id: int
) -> None:
    for device_id, normal in _offender_devices(conn, subject_id):
        if policy.interval_s >= normal:
            continue  # it reports at least that often already
        conn.execute(
            "UPDATE device_commands SET state = 'cancelled',"
            " detail = 'superseded by the pursuit of alert ' || %s"
            " WHERE device_id = %s AND origin = %s AND state = 'queued'",
            (alert_id, device_id, PURSUIT_END),
        )
        for origin, args, delay in (
            (PURSUIT, {"interval_s": policy.interval_s, "duration_s": policy.limit_s}, None),
            (PURSUIT_END, {"interval_s": normal}, policy.limit_s),
        ):
            conn.execute(
                INSERT,
                {
                    "device": device_id,
                    "type": dc.SET_INTERVAL,
                    "args": Jsonb(args),
                    "origin": origin,
                    "alert": alert_id,
                    "not_before": None if delay is None else _after(conn, delay),
                    "ttl": float(policy.command_ttl_s),
                },
            )


def _after(conn: psycopg.Connection, seconds: float) -> datetime:
    row = conn.execute("SELECT now() + make_interval(secs => %s)", (float(seconds),)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _other_pursuit_open(conn: psycopg.Connection, subject_id: int, alert_id: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM alerts WHERE subject_id = %s AND id <> %s AND type = ANY(%s)"
        " AND cleared_at IS NULL AND status <> 'resolved' LIMIT 1",
        (subject_id, alert_id, sorted(v.PURSUIT_TYPES)),
    ).fetchone()
    return row is not None


def _end_pursuit(conn: psycopg.Connection, subject_id: int) -> None:
    """Bring the scheduled returns forward to now (expiry moved with them)."""
    conn.execute(
        "UPDATE device_commands c SET expires_at = now() + (c.expires_at - c.not_before),"
        " not_before = now() FROM device_assignments a"
        " WHERE a.subject_id = %s AND a.role = 'offender' AND a.during @> now()"
        " AND c.device_id = a.device_id AND c.origin = %s AND c.state = 'queued'"
        " AND c.not_before > now()",
        (subject_id, PURSUIT_END),
    )


# -- victim notices ----------------------------------------------------------------------------


def notify_victim(conn: psycopg.Connection, alert_id: int, alert_type: str, event: str) -> int:
    """In the alert's own transaction: when a victim-warning, victim-proximity or victim-panic
    alert opens, queue a `message` to every device the protected victim holds now (the victim
    of the alert's victim zone, or the alert's own subject when it is a victim). The texts
    (alerts/victim_protection.py) never say where the offender is. The same text to the same
    device within a minute is not queued again (a victim watched for two offenders, or a panic
    raised on each of them, gets one notice). Returns how many were queued."""
    if event != "opened" or alert_type not in v.VICTIM_NOTICE_TYPES:
        return 0
    args = Jsonb({"text": vp.VICTIM_NOTICES[alert_type]})
    cur = conn.execute(
        "INSERT INTO device_commands (device_id, type, args, origin, alert_id, not_before,"
        " expires_at) SELECT da.device_id, %(type)s, %(args)s, %(origin)s, al.id, now(),"
        " now() + make_interval(secs => %(ttl)s) FROM alerts al"
        " JOIN subjects s ON s.id = al.subject_id LEFT JOIN zones z ON z.id = al.zone_id"
        " JOIN device_assignments da ON da.role = 'victim' AND da.during @> now()"
        " JOIN devices dv ON dv.id = da.device_id AND NOT dv.osmand"
        " AND da.subject_id = COALESCE(z.victim_subject_id, CASE WHEN s.victim THEN s.id END)"
        " WHERE al.id = %(alert)s AND NOT EXISTS (SELECT 1 FROM device_commands c"
        "  WHERE c.device_id = da.device_id AND c.origin = %(origin)s AND c.args = %(args)s"
        "  AND c.created_at > now() - interval '60 seconds')"
        " ORDER BY da.device_id",
        {
            "type": dc.MESSAGE,
            "args": args,
            "origin": VICTIM_NOTICE,
            "ttl": vp.VICTIM_NOTICE_TTL_S,
            "alert": alert_id,
        },
    )
    return cur.rowcount


def due_triggers(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT 1 FROM pursuit_triggers LIMIT 1").fetchone() is not None


__all__ = [
    "Answer",
    "Command",
    "PursuitPolicy",
    "Sendable",
    "apply_pursuit_triggers",
    "claim_sendable",
    "expire_due",
    "list_commands",
    "mark_sent",
    "note_pursuit_trigger",
    "notify_victim",
    "queue_command",
    "read_command",
    "record_answers",
    "take_pending_for_http",
]
