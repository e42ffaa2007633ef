"""Devices and their assignments to subjects: the SQL of which device is whose, and when.

A device held now by a subject outside the caller's regions is invisible to them (it answers
like a missing one); devices in stock (held by nobody) are visible to all, to be assigned.
``regions`` is the caller's regions, or None for all.

Registration is written once (``INSERT_DEVICE``, ``INSERT_ASSIGNMENT``): the API's async
functions and the synchronous ones the CLI, ingest's provisioning, the simulators and the
benchmarks call run the same statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection
from psycopg.errors import ExclusionViolation
from psycopg.rows import class_row

from tagwatch.store.audit import append_sync
from tagwatch.store.engine_repository import clock, release_rule_state

# An end further ahead than this is a typing error (year 2206), not an order's planned end.
MAX_END_AHEAD: Final = timedelta(days=366)

COLUMNS = "id, kind, owntracks_topic, expected_interval_s, created_at, osmand"
VISIBLE = (
    "(%(regions)s::text[] IS NULL OR NOT EXISTS (SELECT 1 FROM device_assignments a"
    " JOIN subjects s ON s.id = a.subject_id WHERE a.device_id = devices.id"
    " AND a.during @> now() AND NOT s.region_id = ANY(%(regions)s::text[])))"
)
INSERT_DEVICE = (
    "INSERT INTO devices (id, kind, owntracks_topic, expected_interval_s, osmand,"
    " http_secret_sha256, payload_key_sealed) VALUES (%s, %s, %s, %s, %s, %s, %s)"
    f" RETURNING {COLUMNS}"
)
INSERT_ASSIGNMENT = (
    "INSERT INTO device_assignments (device_id, subject_id, role, during) "
    "VALUES (%s, %s, %s, tstzrange(%s, %s, '[)')) RETURNING id"
)


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    kind: str
    owntracks_topic: str | None
    expected_interval_s: int
    created_at: datetime
    osmand: bool = False


@dataclass(frozen=True, slots=True)
class HttpCredential:
    """What the HTTP intake needs to authenticate a device and choose its topic
    (migration 0017): ``secret_sha256`` is None for a device registered before it."""

    id: str
    kind: str
    owntracks_topic: str | None
    osmand: bool
    secret_sha256: bytes | None


@dataclass(frozen=True, slots=True)
class Assignment:
    id: int
    device_id: str
    role: str
    from_: datetime
    to: datetime | None


async def list_devices(
    conn: AsyncConnection[Any], regions: Sequence[str] | None, after_id: str, limit: int
) -> list[Device]:
    cur = conn.cursor(row_factory=class_row(Device))
    await cur.execute(
        f"SELECT {COLUMNS} FROM devices WHERE id > %(after)s AND {VISIBLE}"
        " ORDER BY id LIMIT %(limit)s",
        {"after": after_id, "limit": limit, "regions": regions},
    )
    return await cur.fetchall()


async def visible_device(
    conn: AsyncConnection[Any], device_id: str, regions: Sequence[str] | None
) -> Device | None:
    cur = conn.cursor(row_factory=class_row(Device))
    await cur.execute(
        f"SELECT {COLUMNS} FROM devices WHERE id = %(id)s AND {VISIBLE}",
        {"id": device_id, "regions": regions},
    )
    return await cur.fetchone()


async def create_device(
    conn: AsyncConnection[Any],
    device_id: str,
    kind: str,
    owntracks_topic: str | None,
    expected_interval_s: int,
    osmand: bool = False,
    secret_sha256: bytes | None = None,
    payload_key_sealed: str | None = None,
) -> Device:
    """Raises UniqueViolation when the id or the OwnTracks topic is already registered.
    ``secret_sha256``: the digest of the secret shown once (ingest.device_secrets);
    ``payload_key_sealed``: the phone's OwnTracks encryption key, already sealed
    (store/webhook_secrets.py), never in clear."""
    cur = conn.cursor(row_factory=class_row(Device))
    await cur.execute(
        INSERT_DEVICE,
        (
            device_id,
            kind,
            owntracks_topic,
            expected_interval_s,
            osmand,
            secret_sha256,
            payload_key_sealed,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


SET_SECRET = (
    "UPDATE devices SET http_secret_sha256 = %(secret)s WHERE id = %(id)s AND {visible}"
    f" RETURNING {COLUMNS}"
)


async def set_device_secret(
    conn: AsyncConnection[Any],
    device_id: str,
    secret_sha256: bytes | None,
    regions: Sequence[str] | None,
) -> Device | None:
    """Rotate (a new digest) or revoke (None) a device's secret; None when the device is
    missing or not visible to the caller. The digest is what the HTTP intake checks and what
    EMQX's authentication query returns (store/emqx_auth.py): None locks the device out of both."""
    cur = conn.cursor(row_factory=class_row(Device))
    await cur.execute(
        SET_SECRET.format(visible=VISIBLE),
        {"secret": secret_sha256, "id": device_id, "regions": regions},
    )
    return await cur.fetchone()


def device_sync(conn: psycopg.Connection[Any], device_id: str) -> Device | None:
    """The device's row (the CLI: every device visible), or None."""
    cur = conn.cursor(row_factory=class_row(Device))
    cur.execute(f"SELECT {COLUMNS} FROM devices WHERE id = %s", (device_id,))
    return cur.fetchone()


def set_device_secret_sync(
    conn: psycopg.Connection[Any], device_id: str, secret_sha256: bytes | None
) -> Device | None:
    """``set_device_secret`` for the CLI (every device visible)."""
    cur = conn.cursor(row_factory=class_row(Device))
    cur.execute(
        SET_SECRET.format(visible=VISIBLE),
        {"secret": secret_sha256, "id": device_id, "regions": None},
    )
    return cur.fetchone()


async def http_credential(conn: AsyncConnection[Any], device_id: str) -> HttpCredential | None:
    """The device as the HTTP intake authenticates it, or None when there is no such device."""
    cur = conn.cursor(row_factory=class_row(HttpCredential))
    await cur.execute(
        "SELECT id, kind, owntracks_topic, osmand, http_secret_sha256 AS secret_sha256"
        " FROM devices WHERE id = %s",
        (device_id,),
    )
    return await cur.fetchone()


async def assign(
    conn: AsyncConnection[Any],
    device_id: str,
    subject_id: int,
    role: str,
    from_: datetime,
    to: datetime | None,
) -> int:
    """The new assignment's id, for ``[from_, to)``. Raises ForeignKeyViolation for an unknown
    device, ExclusionViolation when the device is held by someone during that period."""
    row = await (
        await conn.execute(INSERT_ASSIGNMENT, (device_id, subject_id, role, from_, to))
    ).fetchone()
    assert row is not None
    return int(row[0])


async def subject_assignments(conn: AsyncConnection[Any], subject_id: int) -> list[Assignment]:
    cur = conn.cursor(row_factory=class_row(Assignment))
    await cur.execute(
        "SELECT id, device_id, role, lower(during) AS from_, upper(during) AS to"
        " FROM device_assignments WHERE subject_id = %s ORDER BY lower(during)",
        (subject_id,),
    )
    return await cur.fetchall()


# -- synchronous: the CLI, ingest, the simulators and the benchmarks ------------------------


@dataclass(frozen=True, slots=True)
class DeviceKey:
    """What ingest needs to know of a device to accept its messages."""

    id: str
    kind: str
    owntracks_topic: str | None
    payload_key_sealed: str | None = None  # OwnTracks encryption key, sealed


KEY_COLUMNS = "id, kind, owntracks_topic, payload_key_sealed"


def register_device(
    conn: psycopg.Connection[Any],
    device_id: str,
    kind: str = "tag",
    owntracks_topic: str | None = None,
    expected_interval_s: int = 60,
    osmand: bool = False,
    secret_sha256: bytes | None = None,
    payload_key_sealed: str | None = None,
) -> Device:
    """The device's row, as ``create_device`` writes it for the API (its broker account is
    ingest.provisioning's). Raises UniqueViolation when the id or the topic is taken."""
    cur = conn.cursor(row_factory=class_row(Device))
    cur.execute(
        INSERT_DEVICE,
        (
            device_id,
            kind,
            owntracks_topic,
            expected_interval_s,
            osmand,
            secret_sha256,
            payload_key_sealed,
        ),
    )
    row = cur.fetchone()
    assert row is not None
    return row


def add_assignment(
    conn: psycopg.Connection[Any],
    device_id: str,
    subject_id: int,
    role: str,
    from_: datetime,
    to: datetime | None,
) -> int:
    """``assign`` for synchronous callers: the new assignment's id, for ``[from_, to)``."""
    row = conn.execute(INSERT_ASSIGNMENT, (device_id, subject_id, role, from_, to)).fetchone()
    assert row is not None
    return int(row[0])


def register_devices(
    conn: psycopg.Connection[Any], device_ids: Sequence[str], kind: str, expected_interval_s: int
) -> None:
    """Many devices at once (COPY), for loads and benchmarks of up to 100,000 devices (broker
    accounts are not made: they publish through the gateway account)."""
    with (
        conn.cursor() as cur,
        cur.copy("COPY devices (id, kind, expected_interval_s) FROM STDIN") as copy,
    ):
        for device_id in device_ids:
            copy.write_row((device_id, kind, expected_interval_s))


def ensure_devices(conn: psycopg.Connection[Any], device_ids: Sequence[str], kind: str) -> None:
    """Register those of ``device_ids`` not registered yet (the schema's default interval)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO devices (id, kind) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [(device_id, kind) for device_id in device_ids],
        )


def assign_to_namesakes(conn: psycopg.Connection[Any], case_ref_like: str, from_: datetime) -> None:
    """In bulk: every subject whose case_ref is LIKE ``case_ref_like`` holds, as offender from
    ``from_`` on, the device whose id is its case_ref (how loads and benchmarks pair them)."""
    conn.execute(
        "INSERT INTO device_assignments (device_id, subject_id, role, during)"
        " SELECT s.case_ref, s.id, 'offender', tstzrange(%s, NULL) FROM subjects s"
        " WHERE s.case_ref LIKE %s",
        (from_, case_ref_like),
    )


def end_assignments(conn: psycopg.Connection[Any], subject_ids: Sequence[int], at: float) -> None:
    """The subjects hold no device from ``at`` (epoch seconds) on: assignments open then are
    cut at ``at``; those that start later are left as they are."""
    conn.execute(
        "UPDATE device_assignments SET during = tstzrange(lower(during), to_timestamp(%s))"
        " WHERE subject_id = ANY(%s) AND (upper(during) IS NULL"
        " OR upper(during) > to_timestamp(%s)) AND lower(during) < to_timestamp(%s)",
        (at, list(subject_ids), at, at),
    )


def device_keys(conn: psycopg.Connection[Any]) -> list[DeviceKey]:
    cur = conn.cursor(row_factory=class_row(DeviceKey))
    cur.execute(f"SELECT {KEY_COLUMNS} FROM devices")
    return cur.fetchall()


def device_key_by_id(conn: psycopg.Connection[Any], device_id: str) -> DeviceKey | None:
    cur = conn.cursor(row_factory=class_row(DeviceKey))
    cur.execute(f"SELECT {KEY_COLUMNS} FROM devices WHERE id = %s", (device_id,))
    return cur.fetchone()


def device_key_by_topic(conn: psycopg.Connection[Any], topic: str) -> DeviceKey | None:
    cur = conn.cursor(row_factory=class_row(DeviceKey))
    cur.execute(f"SELECT {KEY_COLUMNS} FROM devices WHERE owntracks_topic = %s", (topic,))
    return cur.fetchone()


# -- ending an assignment (the API's PATCH and `tagwatch device unassign`) --------------------


class AssignmentRefused(Exception):
    """Ending an assignment was refused; ``reason`` is one of ``not_found``, ``before_start``,
    ``too_far_ahead``, ``already_ended`` (an ended assignment may be shortened, never reopened)
    and ``overlap`` (moved onto another holder's range)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class EndedAssignment:
    id: int
    subject_id: int
    device_id: str
    role: str
    from_: datetime
    to: datetime
    alerts_cleared: int


def end_assignment(
    conn: psycopg.Connection[Any],
    subject_id: int,
    assignment_id: int,
    at: datetime | None,
    actor: tuple[str, str],
) -> EndedAssignment:
    """End the assignment at ``at`` (the rule clock's now when None), release the device from
    the subject's rule state and audit it (``actor``: user name and role), in one transaction: a
    crash leaves all or none. The caller checks the subject is in its scope; an assignment of
    another subject is ``not_found``.

    The rule clock, not the wall clock, is "now" (they are the same but in a scenario replay),
    so that the end, the release and the rules that judge the device agree on the moment."""
    with conn.transaction():
        now = datetime.fromtimestamp(clock(conn), UTC)
        row = conn.execute(
            "SELECT device_id, role, lower(during), upper(during) FROM device_assignments"
            " WHERE id = %s AND subject_id = %s FOR UPDATE",
            (assignment_id, subject_id),
        ).fetchone()
        if row is None:
            raise AssignmentRefused(
                "not_found", f"assignment {assignment_id} of subject {subject_id} does not exist"
            )
        device_id, role, start, end = row
        to = now if at is None else at
        if start is not None and to <= start:
            raise AssignmentRefused(
                "before_start",
                f"the end {to.isoformat()} is not after the start {start.isoformat()}",
            )
        if to > now + MAX_END_AHEAD:
            raise AssignmentRefused(
                "too_far_ahead", f"the end {to.isoformat()} is more than a year ahead"
            )
        if end is not None and end <= now and to > end:
            raise AssignmentRefused(
                "already_ended",
                f"the assignment ended at {end.isoformat()}; it may be shortened, not reopened",
            )
        try:
            with conn.transaction():
                conn.execute(
                    "UPDATE device_assignments SET during = tstzrange(lower(during), %s, '[)')"
                    " WHERE id = %s",
                    (to, assignment_id),
                )
        except ExclusionViolation as exc:
            raise AssignmentRefused(
                "overlap", f"device {device_id!r} is assigned to someone else by then"
            ) from exc
        cleared = release_rule_state(conn, subject_id, to.timestamp())
        append_sync(
            conn,
            actor[0],
            actor[1],
            "assignment_ended",
            subject_id,
            {
                "assignment_id": assignment_id,
                "device_id": device_id,
                "to": to,
                "previous_to": end,
                "alerts_cleared": cleared,
            },
        )
    return EndedAssignment(assignment_id, subject_id, device_id, role, start, to, cleared)


def assignment_at(
    conn: psycopg.Connection[Any], device_id: str, at: datetime | None
) -> tuple[int, int] | None:
    """(assignment id, subject id) of the assignment holding ``device_id`` at ``at`` (the rule
    clock's now when None), or the one that starts first after it; None for a device in stock."""
    when = at or datetime.fromtimestamp(clock(conn), UTC)
    row = conn.execute(
        "SELECT id, subject_id FROM device_assignments WHERE device_id = %s"
        " AND coalesce(upper(during), 'infinity') > %s ORDER BY lower(during) LIMIT 1",
        (device_id, when),
    ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))
