"""Exports for data transfer between agencies: a subject's fixes, events and alerts over a range.

``GET /subjects/{id}/export?from=&to=&format=geojson|csv&kind=`` (supervisor, admin):

* what is exported: fixes and device events of every device the subject held (either role; a
  ``role`` column says which) inside its holding period and the range, and the subject's alerts
  opened in the range, with their full details; each fix has ``received_at`` and ``late``
  (received more than 300 s after its own time, e.g. a tag's buffered upload);
* ``format=geojson`` (default): one FeatureCollection (RFC 7946, coordinates lon, lat); fixes are
  Points, alerts Points where they have a position, events have no geometry (``null``, as
  RFC 7946 allows); ``properties.kind`` says which;
* ``format=csv``: without ``kind``, a zip of ``fixes.csv``, ``events.csv`` and ``alerts.csv``;
  with ``kind=fixes|events|alerts``, that one CSV. ``kind`` filters GeoJSON the same way;
* streamed from a server-side cursor, so a long range never sits in memory;
* audited (who, role, subject, range, format, kind, reason) and committed before the first byte.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from psycopg import AsyncConnection
from pydantic import AwareDatetime

from tagwatch.api import audit
from tagwatch.api.csv_cells import neutralize
from tagwatch.api.deps import Conn, subject_in_scope
from tagwatch.api.routes.location import LATE_AFTER_S
from tagwatch.api.security import CurrentUser, Role, allow
from tagwatch.store import exports
from tagwatch.store.exports import Kind

router = APIRouter(tags=["exports"])
EXPORT_ROLES: tuple[Role, ...] = ("admin", "supervisor")
MAX_RANGE = timedelta(days=366)
BATCH = 2000

KINDS: tuple[Kind, ...] = ("fixes", "events", "alerts")
SINGULAR: dict[Kind, str] = {"fixes": "fix", "events": "event", "alerts": "alert"}


def _cell(value: Any) -> str:
    """Text a spreadsheet would run as a formula is neutralized (api/csv_cells.py)."""
    return neutralize(value, _text(value))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _feature(kind: Kind, row: dict[str, Any]) -> dict[str, Any]:
    properties = {"kind": SINGULAR[kind]} | {c: _json(row[c]) for c in exports.COLUMNS[kind]}
    geometry = None
    if properties.get("lat") is not None and properties.get("lon") is not None:
        geometry = {"type": "Point", "coordinates": [properties["lon"], properties["lat"]]}
    return {"type": "Feature", "geometry": geometry, "properties": properties}


class _Chunks:
    """A write-only, unseekable file that a zip is written into and drained from, piece by
    piece (zipfile writes data descriptors when it cannot seek back)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def drain(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


class _Lines:
    """csv.writer target that hands each written line back."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def write(self, text: str) -> int:
        return self.buffer.write(text)

    def take(self) -> str:
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text


def _csv_rows(columns: tuple[str, ...]) -> tuple[Any, _Lines]:
    lines = _Lines()
    writer = csv.writer(lines, lineterminator="\r\n")
    writer.writerow(columns)
    return writer, lines


@router.get(
    "/subjects/{subject_id}/export",
    dependencies=[allow(*EXPORT_ROLES)],
    responses={
        200: {
            "content": {
                "application/geo+json": {"schema": {"type": "object"}},
                "text/csv": {"schema": {"type": "string"}},
                "application/zip": {"schema": {"type": "string", "format": "binary"}},
            },
            "description": "GeoJSON FeatureCollection, one CSV (kind=) or a zip of three CSVs",
        }
    },
)
async def export(
    subject_id: int,
    request: Request,
    conn: Conn,
    user: CurrentUser,
    from_: AwareDatetime = Query(alias="from", description="range start (inclusive)"),
    to: AwareDatetime = Query(description="range end (exclusive); at most 366 days after from"),
    format_: Literal["geojson", "csv"] = Query(default="geojson", alias="format"),
    kind: Kind | None = Query(default=None, description="only this kind (default: all three)"),
    reason: str | None = Query(default=None, max_length=500, description="why, for the audit log"),
) -> StreamingResponse:
    if from_ >= to:
        raise HTTPException(
            422, detail={"reason": "empty_window", "message": "'from' must be before 'to'"}
        )
    if to - from_ > MAX_RANGE:
        raise HTTPException(
            422,
            detail={"reason": "window_too_long", "message": "the range may span at most 366 days"},
        )
    await subject_in_scope(conn, user, subject_id)
    await audit.record(
        conn,
        user,
        "export",
        subject_id,
        start=from_.isoformat(),
        end=to.isoformat(),
        format=format_,
        kind=kind,
        reason=reason,
    )
    await conn.commit()  # the audit row is durable before any data leaves
    kinds: tuple[Kind, ...] = (kind,) if kind else KINDS

    def rows(read: AsyncConnection[Any], each: Kind) -> AsyncIterator[dict[str, Any]]:
        return exports.rows(
            read, each, subject_id, from_, to, late_after_s=LATE_AFTER_S, batch=BATCH
        )

    def cells(each: Kind, row: dict[str, Any]) -> list[str]:
        return [_cell(row[c]) for c in exports.COLUMNS[each]]

    pool = request.app.state.pool
    stem = f"subject-{subject_id}-{from_.date().isoformat()}-{to.date().isoformat()}"

    async def geojson() -> AsyncIterator[bytes]:
        head = {
            "subject_id": subject_id,
            "from": from_.isoformat(),
            "to": to.isoformat(),
            "kinds": list(kinds),
        }
        yield (
            '{"type": "FeatureCollection", "properties": ' + json.dumps(head) + ', "features": ['
        ).encode()
        first = True
        async with pool.connection() as read:
            for each in kinds:
                batch: list[str] = []
                async for row in rows(read, each):
                    text = json.dumps(_feature(each, row), default=str)
                    batch.append(text if first else "," + text)
                    first = False
                    if len(batch) >= BATCH:
                        yield "\n".join(batch).encode()
                        batch = []
                if batch:
                    yield "\n".join(batch).encode()
        yield b"]}\n"

    async def one_csv(only: Kind) -> AsyncIterator[bytes]:
        writer, lines = _csv_rows(exports.COLUMNS[only])
        async with pool.connection() as read:
            count = 0
            async for row in rows(read, only):
                writer.writerow(cells(only, row))
                count += 1
                if count % BATCH == 0:
                    yield lines.take().encode()
        yield lines.take().encode()

    async def zipped() -> AsyncIterator[bytes]:
        sink = _Chunks()
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
            async with pool.connection() as read:
                for each in kinds:
                    writer, lines = _csv_rows(exports.COLUMNS[each])
                    with archive.open(f"{each}.csv", "w", force_zip64=True) as member:
                        member.write(lines.take().encode())
                        count = 0
                        async for row in rows(read, each):
                            writer.writerow(cells(each, row))
                            count += 1
                            if count % BATCH == 0:
                                member.write(lines.take().encode())
                                yield sink.drain()
                        member.write(lines.take().encode())
                    yield sink.drain()
        yield sink.drain()

    if format_ == "geojson":
        body: AsyncIterator[bytes] = geojson()
        media, filename = "application/geo+json", f"{stem}.geojson"
    elif kind is not None:
        body, media, filename = one_csv(kind), "text/csv; charset=utf-8", f"{stem}-{kind}.csv"
    else:
        body, media, filename = zipped(), "application/zip", f"{stem}.zip"
    return StreamingResponse(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
