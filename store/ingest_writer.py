"""Write one ingest batch in one transaction: fixes, events, statuses, dead letters, counters.

Fixes are binary-COPied straight into the table inside a savepoint. Repeats are rare (a broker
redelivery after a crash, a device re-uploading), so the fast path almost always holds; when the
unique key refuses a row, the savepoint is rolled back and the batch goes through a session-local
staging table and INSERT ... ON CONFLICT DO NOTHING, which stores each fix exactly once. Direct COPY
is about twice as fast as always staging (measured: 188k vs 99k rows/s on the dev machine).
The counters are written in the same transaction, so the metrics agree with
what is stored, whatever crashes.

Before anything is stored, fixes and events older than the start of their device's current
assignment are turned into dead letters (`before_assignment`), reading the assignments inside
the batch's own transaction: a tag handed to a new holder cannot write into the previous one's
history. Dead letters are bounded: each keeps a prefix of its payload with the length and SHA-256
of the whole; identical ones (same sender, topic, reason and payload) are one row with a repeat
count, so a redelivered bad message is not stored twice; and at most `per_device_per_minute` are
stored per sender and minute. Beyond that they are only counted (`dead_letter_tally`, by sender
and reason, committed with the batch before its messages are acknowledged). Only refused input
is ever held back: the limit never touches a fix that decodes.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.errors import UniqueViolation
from psycopg.types.json import Jsonb

from tagwatch.store import commands, fix_columns

if TYPE_CHECKING:  # the decoded batch is ingest's type; the writer only reads it
    from tagwatch.ingest.decode import DeadLetter, Decoded

log = logging.getLogger("tagwatch.ingest")

UNKNOWN_COMMAND = "unknown_command"  # ingest.decode.Reason.UNKNOWN_COMMAND (a metrics label)

# A decoded fix row, as the engine gets it: device_id, ts, seq, lat, lon, acc, alt, spd, hdg,
# sats, batt, src. It is stored in its compact form (store/fix_columns.compact, migration 0027).
FIX_COLUMNS = "device_id, ts, seq, lat, lon, acc, alt, spd, hdg, sats, batt, src"
EVENT_COLUMNS = "device_id, ts, seq, type, batt, detail"
EVENT_TYPES = ["text", "timestamptz", "int8", "text", "float4", "jsonb"]


DEAD_LETTER_PREFIX_BYTES = 4096
DEAD_LETTER_DETAIL_CHARS = 1000


@dataclass(frozen=True)
class DeadLetterPolicy:
    """How much of refused input is kept: a prefix of each payload, so many per sender a minute."""

    per_device_per_minute: int = 60
    prefix_bytes: int = DEAD_LETTER_PREFIX_BYTES


@dataclass
class BatchResult:
    fixes_stored: int = 0
    fix_duplicates: int = 0
    events_stored: int = 0
    event_duplicates: int = 0
    dead_letters: int = 0  # refused messages, each counted (stored or not)
    dead_letters_not_stored: int = 0  # beyond the per-sender limit: counted only
    before_assignment: int = 0
    alert_changes: int = 0
    phone_messages_stored: int = 0
    phone_message_duplicates: int = 0


def prepare_session(conn: psycopg.Connection) -> None:
    """Staging tables live for the connection and empty themselves at every commit."""
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS fix_stage "
        "(LIKE fixes INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS event_stage "
        "(LIKE device_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    conn.commit()


def _copy_rows(
    cur: psycopg.Cursor, table: str, columns: str, types: list[str], rows: list[tuple[Any, ...]]
) -> None:
    jsonb = [i for i, t in enumerate(types) if t == "jsonb"]
    with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(_json_text_as_is(row, jsonb) if jsonb else row)


def _json_text_as_is(row: tuple[Any, ...], columns: list[int]) -> tuple[Any, ...]:
    """A jsonb cell arrives as the JSON text the decoder wrote (an event's ``detail``); psycopg's
    jsonb dumper would encode that text again, storing a JSON *string* holding the JSON, so the
    text goes through as it is (before migration 0019 every stored detail was double-encoded
    that way; ``beacon_of`` still reads those rows)."""
    return tuple(
        Jsonb(cell, dumps=_verbatim) if i in columns and isinstance(cell, str) else cell
        for i, cell in enumerate(row)
    )


def _verbatim(text: Any) -> str:
    return str(text)


def _insert_once(
    conn: psycopg.Connection,
    cur: psycopg.Cursor,
    table: str,
    stage: str,
    columns: str,
    types: list[str],
    rows: list[tuple[Any, ...]],
    key_width: int,
    report: list[tuple[Any, ...]] | None = None,
) -> list[tuple[Any, ...]]:
    """Store each row once; return the rows that were new (repeats are not evaluated again):
    from ``report`` where given (the rows as decoded, of which ``rows`` is the stored form, in
    the same order and with the same leading key columns)."""
    report = rows if report is None else report
    try:
        with conn.transaction():
            _copy_rows(cur, table, columns, types, rows)
        return report
    except UniqueViolation:
        pass
    _copy_rows(cur, stage, columns, types, rows)
    key_columns = ", ".join(c.strip() for c in columns.split(",")[:key_width])
    cur.execute(
        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} ON CONFLICT DO NOTHING"
        f" RETURNING {key_columns}"
    )
    new = {tuple(r) for r in cur.fetchall()}
    out = []
    for row, reported in zip(rows, report, strict=True):
        key = tuple(row[:key_width])
        if key in new:
            new.discard(key)  # a repeat inside the batch is new only once
            out.append(reported)
    return out


_STATUS_UPSERT = (
    "INSERT INTO device_status (device_id, status, changed_at, source) {rows}"
    " ON CONFLICT (device_id) DO UPDATE SET status = excluded.status,"
    " changed_at = excluded.changed_at, source = excluded.source"
    " WHERE device_status.status IS DISTINCT FROM excluded.status"
)


def _write_statuses(cur: psycopg.Cursor[Any], statuses: list[tuple[str, str, str]]) -> None:
    """Online/offline messages: one statement for the devices that sent one status in the batch
    (a row changes only when its status does). A device with several in one batch (rare) keeps
    the statement per message, in order, so changed_at and source stay those of the last change."""
    per_device: dict[str, int] = defaultdict(int)
    for device_id, _, _ in statuses:
        per_device[device_id] += 1
    single = [s for s in statuses if per_device[s[0]] == 1]
    repeated = [s for s in statuses if per_device[s[0]] > 1]
    if single:
        cur.execute(
            _STATUS_UPSERT.format(
                rows="SELECT d, s, now(), src FROM unnest(%s::text[], %s::text[], %s::text[])"
                " AS u(d, s, src)"
            ),
            ([s[0] for s in single], [s[1] for s in single], [s[2] for s in single]),
        )
    if repeated:
        cur.executemany(_STATUS_UPSERT.format(rows="VALUES (%s, %s, now(), %s)"), repeated)


# The start of each device's current assignment: the latest holding period that has begun.
# A device that was never assigned has no floor (its fixes are stored and belong to nobody until
# an assignment covers them); one whose last assignment ended keeps that assignment's start, so
# its buffered fixes from the last holder's time can still come in until it is handed on.
# `device_id COLLATE "C"` matches only the covering index of migration 0008 (the engine's holder
# lookup uses it too): with a plain `=` the planner took the GiST exclusion index, 166 ms per
# 2,000-device batch at 80,000 assignments against 12 ms, and most of ingest's database time in
# `bench ingest`'s samples (24 % of them rising to 90 % as assignments grew).
_FLOORS = (
    "SELECT q.id, a.since FROM unnest(%s::text[]) AS q(id) CROSS JOIN LATERAL"
    " (SELECT lower(during) AS since FROM device_assignments"
    '  WHERE device_id COLLATE "C" = q.id AND lower(during) <= now()'
    "  ORDER BY lower(during) DESC LIMIT 1) AS a"
)


def assignment_floors(cur: psycopg.Cursor[Any], devices: list[str]) -> dict[str, datetime]:
    cur.execute(_FLOORS, (devices,))
    return {row[0]: row[1] for row in cur.fetchall()}


def _grants(cur: psycopg.Cursor[Any], wanted: Counter[str], limit: int) -> dict[str, int]:
    """How many dead letters each sender may still store this minute (a fixed window per sender;
    the row lock makes it exact across several ingest workers)."""
    senders = sorted(wanted)
    cur.execute(
        "INSERT INTO dead_letter_budget AS b (sender, window_start, stored)"
        " SELECT s, date_trunc('minute', now()), 0 FROM unnest(%s::text[]) AS u(s) ORDER BY s"
        " ON CONFLICT (sender) DO UPDATE SET sender = b.sender"
        " RETURNING b.sender, b.window_start = date_trunc('minute', now()), b.stored",
        (senders,),
    )
    grants: dict[str, int] = {}
    used: dict[str, int] = {}
    for sender, same_window, stored in cur.fetchall():
        already = stored if same_window else 0
        grants[sender] = max(0, min(wanted[sender], limit - already))
        used[sender] = already + grants[sender]
    cur.execute(
        "UPDATE dead_letter_budget AS b SET window_start = date_trunc('minute', now()),"
        " stored = u.n FROM unnest(%s::text[], %s::int[]) AS u(s, n) WHERE b.sender = u.s",
        (list(used), list(used.values())),
    )
    return grants


def _write_dead_letters(
    cur: psycopg.Cursor[Any], dead: list[DeadLetter], policy: DeadLetterPolicy
) -> int:
    """Store what the per-sender limit allows (first come, first kept), tally every one;
    returns how many were counted but not stored."""
    grants = _grants(cur, Counter(d.sender for d in dead), policy.per_device_per_minute)
    kept: dict[tuple[str, str, str, bytes], list[Any]] = {}
    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    not_stored = 0
    for letter in dead:
        counts = tally[(letter.sender, letter.reason)]
        counts[0] += 1
        if grants[letter.sender] <= 0:
            counts[1] += 1
            not_stored += 1
            continue
        grants[letter.sender] -= 1
        digest = hashlib.sha256(letter.payload).digest()
        key = (letter.sender, letter.topic, letter.reason, digest)
        if key in kept:
            kept[key][-1] += 1  # the same bad message twice in one batch: one row, two repeats
            continue
        kept[key] = [
            letter.sender,
            letter.topic,
            letter.payload[: policy.prefix_bytes],
            digest,
            len(letter.payload),
            letter.reason,
            letter.detail[:DEAD_LETTER_DETAIL_CHARS],
            1,
        ]
    if kept:
        columns = list(zip(*(kept[k] for k in sorted(kept)), strict=True))
        cur.execute(
            "INSERT INTO dead_letters AS d (sender, topic, payload, payload_sha256,"
            " payload_length, reason, detail, repeats)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::bytea[], %s::int[],"
            " %s::text[], %s::text[], %s::int[])"
            " ON CONFLICT (sender, reason, payload_sha256, md5(topic)) WHERE sender IS NOT NULL"
            " DO UPDATE SET repeats = d.repeats + excluded.repeats, last_received_at = now()",
            [list(c) for c in columns],
        )
    keys = sorted(tally)  # one lock order for every worker
    cur.execute(
        "INSERT INTO dead_letter_tally AS t (sender, reason, total, not_stored)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::int8[], %s::int8[])"
        " ON CONFLICT (sender, reason) DO UPDATE SET total = t.total + excluded.total,"
        " not_stored = t.not_stored + excluded.not_stored, last_at = now()",
        (
            [k[0] for k in keys],
            [k[1] for k in keys],
            [tally[k][0] for k in keys],
            [tally[k][1] for k in keys],
        ),
    )
    return not_stored


@dataclass
class StoredBatch:
    """What `store_batch` wrote: the counts, and the fixes and events that were new (a repeat
    changes nothing, so only these go on to the alert engine)."""

    result: BatchResult
    new_fixes: list[tuple[Any, ...]] = field(default_factory=list)
    new_events: list[tuple[Any, ...]] = field(default_factory=list)
    new_phones: list[tuple[Any, ...]] = field(default_factory=list)


PHONE_COLUMNS = (
    "device_id, sub_topic, type, ts, payload_sha256, payload, encrypted, batt, charging,"
    " monitoring, conn, trigger"
)
PHONE_TYPES = (
    "text[]",
    "text[]",
    "text[]",
    "timestamptz[]",
    "bytea[]",
    "text[]",
    "bool[]",
    "float4[]",
    "int2[]",
    "int2[]",
    "text[]",
    "text[]",
)


def _write_phone_messages(
    cur: psycopg.Cursor[Any], rows: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """OwnTracks messages (ingest/owntracks.py), each once (same device, sub-topic and payload
    digest: a redelivery); returns the rows that were new, for the alert engine."""
    unnest = ", ".join(f"%s::{t}" for t in PHONE_TYPES)
    cur.execute(
        f"INSERT INTO phone_messages ({PHONE_COLUMNS}) SELECT * FROM unnest({unnest})"
        " ON CONFLICT DO NOTHING RETURNING device_id, sub_topic, payload_sha256",
        [list(column) for column in zip(*rows, strict=True)],
    )
    new = {(d, s, bytes(h)) for d, s, h in cur.fetchall()}
    out = []
    for row in rows:
        key = (row[0], row[1], bytes(row[4]))
        if key in new:
            new.discard(key)  # the same message twice in one batch is new once
            out.append(row)
    return out


def _write_answers(conn: psycopg.Connection, decoded: Decoded) -> None:
    """Tags' answers to commands; one naming no command the device was sent moves to the dead
    letters (`unknown_command`), so a retried batch finds it there already, and re-applies the
    others (their updates were rolled back with the batch)."""
    answers = [
        commands.Answer(a.device_id, a.command_id, a.status, a.device_ts, a.detail)
        for a in decoded.answers
    ]
    unknown = set(commands.record_answers(conn, answers))
    for i in sorted(unknown):
        a = decoded.answers[i]
        decoded.refuse(
            a.topic, a.payload, UNKNOWN_COMMAND, f"no command {a.command_id} was sent to it"
        )
    decoded.answers = [a for i, a in enumerate(decoded.answers) if i not in unknown]


def store_batch(
    conn: psycopg.Connection, decoded: Decoded, policy: DeadLetterPolicy | None = None
) -> StoredBatch:
    """Fixes, events, statuses and dead letters of one batch, in the caller's transaction (ingest
    owns it: the alerts the batch raises are written in it too, and the
    messages are acknowledged only after it commits). Fixes and events before their device's
    current assignment move to `decoded.dead` here (so a retried batch finds them there
    already)."""
    policy = policy or DeadLetterPolicy()
    stored = StoredBatch(BatchResult())
    result = stored.result
    with conn.cursor() as cur:
        devices = sorted({f[0] for f in decoded.fixes} | {e[0] for e in decoded.events})
        if devices:
            result.before_assignment = decoded.refuse_before(assignment_floors(cur, devices))
        fixes, events, dead = decoded.fixes, decoded.events, decoded.dead
        if fixes:
            received = time.time()
            stored.new_fixes = _insert_once(
                conn,
                cur,
                "fixes",
                "fix_stage",
                fix_columns.WRITE_COLUMNS,
                fix_columns.WRITE_TYPES,
                fix_columns.compact_rows(fixes, received),
                3,
                report=fixes,
            )
            result.fixes_stored = len(stored.new_fixes)
            result.fix_duplicates = len(fixes) - result.fixes_stored
        if events:
            stored.new_events = _insert_once(
                conn, cur, "device_events", "event_stage", EVENT_COLUMNS, EVENT_TYPES, events, 4
            )
            result.events_stored = len(stored.new_events)
            result.event_duplicates = len(events) - result.events_stored
        if decoded.statuses:
            _write_statuses(cur, decoded.statuses)
        if decoded.phones:
            stored.new_phones = _write_phone_messages(cur, list(decoded.phones))
            result.phone_messages_stored = len(stored.new_phones)
            result.phone_message_duplicates = len(decoded.phones) - result.phone_messages_stored
            responders = [r[0] for r in stored.new_phones if r[2] == "location" and r[11] == "r"]
            if responders:
                commands.record_phone_responses(conn, responders)
        if decoded.answers:
            _write_answers(conn, decoded)
            dead = decoded.dead
        if dead:
            result.dead_letters = len(dead)
            result.dead_letters_not_stored = _write_dead_letters(cur, dead, policy)
    return stored


def write_counters(
    conn: psycopg.Connection,
    worker: str,
    result: BatchResult,
    dead: list[DeadLetter],
    counters: dict[tuple[str, str], float],
) -> None:
    """The batch's counters, added to the worker's rows in one statement (in the caller's
    transaction, so a batch rolled back counts nothing)."""
    counters = defaultdict(float, counters)
    counters[("fixes_stored_total", "")] += result.fixes_stored
    counters[("fix_duplicates_total", "")] += result.fix_duplicates
    counters[("events_stored_total", "")] += result.events_stored
    counters[("event_duplicates_total", "")] += result.event_duplicates
    counters[("alert_changes_total", "")] += result.alert_changes
    counters[("dead_letters_not_stored_total", "")] += result.dead_letters_not_stored
    counters[("phone_messages_stored_total", "")] += result.phone_messages_stored
    counters[("phone_message_duplicates_total", "")] += result.phone_message_duplicates
    for letter in dead:
        counters[("dead_letters_total", letter.reason)] += 1
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO ingest_counters (worker, metric, label, value) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (worker, metric, label) "
            "DO UPDATE SET value = ingest_counters.value + excluded.value",
            [
                (worker, metric, label, value)
                for (metric, label), value in sorted(counters.items())
                if value
            ],
        )


def write_batch(
    conn: psycopg.Connection,
    worker: str,
    decoded: Decoded,
    counters: dict[tuple[str, str], float],
    policy: DeadLetterPolicy | None = None,
) -> BatchResult:
    """A batch and its counters, everything or nothing, without alert evaluation (ingest, which
    evaluates, calls `store_batch`, the engine and `write_counters` in its own transaction); the
    caller acknowledges the messages only after this returns."""
    with conn.transaction():
        stored = store_batch(conn, decoded, policy)
        write_counters(
            conn, worker, stored.result, decoded.dead, ignored_counters(decoded, counters)
        )
    return stored.result


def ignored_counters(
    decoded: Decoded, counters: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    """``counters`` plus the messages acknowledged without anything to store, by reason."""
    out = dict(counters)
    for reason, n in decoded.ignored.items():
        out[("messages_ignored_total", reason)] = out.get(("messages_ignored_total", reason), 0) + n
    return out
