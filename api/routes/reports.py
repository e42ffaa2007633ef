"""Reports for corrections departments: compliance per region and month, and absconders.

Roles: supervisor and admin. A region that does not exist and a region that is not the caller's
both answer 404 (as a subject elsewhere does); admins (``*``) may ask for any region.

Both reports answer JSON, or CSV with ``?format=csv`` or ``Accept: text/csv`` (as an attachment
with a file name; text cells that a spreadsheet would run as a formula are neutralized, see
api/csv_cells.py). The figures and their definitions are in ``store/reports.py``: months are
bounded by midnights in the region's time zone (UTC when it has none); a subject counts in the
region ``report_subject_regions`` puts it in at each moment (today: its current region).

The absconders report holds last known positions, so reading it is a location read: one audit
row for the report (its region, window, reason and the subjects in it) and one per subject in it.

The absconder reporting template (``/reports/absconders/monthly``, issue 16) is the department's
monthly table per region and nationally, computed by alerts/absconder_template.py from the
cases store/absconder_reports.py reads. Supervisors, operators and admins get it for their
regions; the national roll-up is over those regions only (every region for an admin of ``*``).
It names nobody, but each read is audited all the same (month, regions, format), as the other
reports' reads are. JSON, CSV, or PDF (a page per region and a national page, with a chart).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import AwareDatetime

from tagwatch.alerts.absconder_template import CAUSES, OUTCOMES, Period
from tagwatch.api import audit
from tagwatch.api.csv_cells import neutralize
from tagwatch.api.deps import Conn
from tagwatch.api.schemas import REGION_PATTERN
from tagwatch.api.security import CurrentUser, Role, User, allow
from tagwatch.store import absconder_reports, reports
from tagwatch.store.zones import subject_region

router = APIRouter(tags=["reports"])
REPORT_ROLES: tuple[Role, ...] = ("admin", "supervisor")
MONTH_PATTERN = r"^[12][0-9]{3}-(0[1-9]|1[0-2])$"
MAX_ABSCONDER_WINDOW = timedelta(days=366)
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "JSON, or CSV with ?format=csv or Accept: text/csv",
    }
}

Format = Literal["json", "csv"]


def _refuse(code: int, reason: str, message: str) -> HTTPException:
    return HTTPException(code, detail={"reason": reason, "message": message})


def wants_csv(request: Request, format_: Format | None) -> bool:
    if format_ is not None:
        return format_ == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


def cell(value: Any) -> str:
    """A CSV cell: times in RFC 3339, nothing as empty, lists joined by ';'; text that a
    spreadsheet would run as a formula is neutralized (api/csv_cells.py)."""
    return neutralize(value, _text(value))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ";".join(_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """Nested figures (by type) become columns ``figure.type``."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            for inner, item in value.items():
                flat[f"{key}.{inner}"] = item
        else:
            flat[key] = value
    return flat


def csv_response(rows: Iterable[Mapping[str, Any]], columns: list[str], filename: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([cell(c) for c in columns])
    for row in rows:
        writer.writerow([cell(row.get(c)) for c in columns])
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _region_zone(conn: Conn, user: User, region: str) -> str:
    zone = await reports.region_timezone(conn, region, user.region_filter())
    if zone is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"region {region!r} not found")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"  # a region's zone the database holds but this host does not know
    return zone


@router.get("/reports/compliance", dependencies=[allow(*REPORT_ROLES)], responses=CSV_RESPONSE)
async def compliance(
    request: Request,
    conn: Conn,
    user: CurrentUser,
    region: str = Query(pattern=REGION_PATTERN),
    month: str = Query(pattern=MONTH_PATTERN, description="YYYY-MM, in the region's time zone"),
    format_: Format | None = Query(default=None, alias="format"),
) -> Any:
    """Subjects monitored, monitored subject-days, alerts and violations by type, time in
    violation, alerts per subject-day, false-alarm share, and fixes (see store/reports.py)."""
    zone = await _region_zone(conn, user, region)
    year, number = (int(p) for p in month.split("-"))
    period = reports.Month(date(year, number, 1), zone)
    now = datetime.now(UTC)
    buckets = await reports.timescale_fix_buckets(conn)
    report = await reports.compliance(conn, region, period, now, buckets)
    if wants_csv(request, format_):
        flat = flatten(report)
        return csv_response([flat], list(flat), f"compliance-{region}-{period.label}.csv")
    return report


ABSCONDER_COLUMNS = [
    "alert_id",
    "subject_id",
    "subject_name",
    "case_ref",
    "region_id",
    "absconded_at",
    "last_known_at",
    "last_known_lat",
    "last_known_lon",
    "last_known_acc",
    "linked_alert_ids",
    "escalated_from",
    "declared_by",
    "status",
    "outcome",
    "resolved_at",
    "days_at_large",
]


@router.get("/reports/absconders", dependencies=[allow(*REPORT_ROLES)], responses=CSV_RESPONSE)
async def absconders(
    request: Request,
    conn: Conn,
    user: CurrentUser,
    region: str = Query(pattern=REGION_PATTERN),
    from_: AwareDatetime = Query(alias="from", description="absconded at or after"),
    to: AwareDatetime = Query(description="absconded before"),
    format_: Format | None = Query(default=None, alias="format"),
    reason: str | None = Query(default=None, max_length=500, description="why, for the audit log"),
) -> Any:
    """One row per absconder alert opened in [from, to): subject, region, when, last known
    position, linked alerts, status (``traced``: resolved as traced; ``outstanding``: not
    resolved; ``closed``: resolved otherwise, e.g. a false alarm) and days at large (until traced,
    or until now while outstanding; none when closed)."""
    if from_ >= to:
        raise _refuse(422, "empty_window", "'from' must be before 'to'")
    if to - from_ > MAX_ABSCONDER_WINDOW:
        raise _refuse(422, "window_too_long", "the window may span at most 366 days")
    await _region_zone(conn, user, region)
    rows = await reports.absconders(conn, region, from_, to, datetime.now(UTC))
    subjects = sorted({r["subject_id"] for r in rows if r["subject_id"] is not None})
    window = {"region": region, "start": from_.isoformat(), "end": to.isoformat()}
    await audit.record(
        conn, user, "report_absconders", None, **window, reason=reason, subject_ids=subjects
    )
    for subject_id in subjects:
        await audit.record(conn, user, "report_absconders", subject_id, **window, reason=reason)
    if wants_csv(request, format_):
        name = f"absconders-{region}-{from_.date().isoformat()}-{to.date().isoformat()}.csv"
        return csv_response(rows, ABSCONDER_COLUMNS, name)
    return {"region": region, "from": from_, "to": to, "rows": rows}


TEMPLATE_ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator")
TemplateFormat = Literal["json", "csv", "pdf"]
TEMPLATE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
        },
        "description": "JSON; CSV with ?format=csv or Accept: text/csv; PDF with ?format=pdf or"
        " Accept: application/pdf (a page per region, then the national page)",
    }
}
TEMPLATE_COLUMNS = [
    "region",
    "name",
    "month",
    "timezone",
    "period_start",
    "period_end",
    "complete",
    "opening_balance",
    "new",
    *(f"new_by_cause.{k}" for k in CAUSES),
    "traced",
    *(f"traced_by_outcome.{k}" for k in OUTCOMES),
    "closed",
    "closing_balance",
    "days_at_large_median",
    "days_at_large_mean",
    "days_outstanding_median",
    "days_outstanding_mean",
    "monitored_subjects",
    "absconding_rate_per_1000",
]


def template_csv(report: Mapping[str, Any]) -> str:
    """A row per region, then the national row (its region cell empty)."""
    common = {k: report[k] for k in ("month", "timezone", "period_start", "period_end")}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(TEMPLATE_COLUMNS)
    for column in [*report["regions"], report["national"]]:
        row = {**common, "complete": report["complete"], **flatten(column)}
        writer.writerow([cell(row.get(c)) for c in TEMPLATE_COLUMNS])
    return out.getvalue()


def template_format(request: Request, format_: TemplateFormat | None) -> TemplateFormat:
    if format_ is not None:
        return format_
    accept = request.headers.get("accept", "")
    if "application/json" in accept:
        return "json"
    if "application/pdf" in accept:
        return "pdf"
    return "csv" if "text/csv" in accept else "json"


@router.get(
    "/reports/absconders/monthly",
    dependencies=[allow(*TEMPLATE_ROLES)],
    responses=TEMPLATE_RESPONSE,
)
async def absconder_template(
    request: Request,
    conn: Conn,
    user: CurrentUser,
    month: str = Query(pattern=MONTH_PATTERN, description="YYYY-MM"),
    region: str | None = Query(
        default=None, pattern=REGION_PATTERN, description="one of your regions; unset: all"
    ),
    format_: TemplateFormat | None = Query(default=None, alias="format"),
    reason: str | None = Query(default=None, max_length=500, description="why, for the audit log"),
) -> Any:
    """The absconder reporting template of a month, per region and nationally: opening balance,
    new by cause, traced by outcome, closed, closing balance, days at large (median and mean,
    of the cases traced in the month), days outstanding of the closing balance, and the
    absconding rate per 1,000 monitored subjects, with a day-by-day series. Months run in
    ``TAGWATCH_ABSCONDER_REPORT_TIMEZONE`` (UTC unless set). Definitions: docs/api.md."""
    zone = request.app.state.settings.absconder_report_timezone
    period = Period.month(month, zone, datetime.now(UTC))
    if region is not None:
        scope = f"region {region}"
    else:
        scope = "every region" if user.all_regions else "your regions"
    report = await absconder_reports.monthly_template(
        conn, period, user.region_filter(), region, scope
    )
    if report is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"region {region!r} not found")
    ids = list(report["national"]["regions_included"])
    chosen = template_format(request, format_)
    await audit.record(
        conn,
        user,
        "report_absconders_monthly",
        None,
        month=period.label,
        timezone=zone,
        regions=ids,
        format=chosen,
        reason=reason,
    )
    name = f"absconders-monthly-{period.label}{f'-{region}' if region else ''}"
    if chosen == "csv":
        return Response(
            template_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    if chosen == "pdf":
        # matplotlib is imported on the first PDF, not with the API (half a second of start-up
        # that JSON and CSV never need); pages render in a worker thread, off the event loop
        from tagwatch.api.absconder_pdf import render_pdf  # noqa: PLC0415

        document = await anyio.to_thread.run_sync(render_pdf, report)
        return Response(
            document,
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{name}.pdf"'},
        )
    return report


MAX_PRESENCE_WINDOW = timedelta(days=93)
# Schedules are evaluated a day either side of the window, on the subject's wall clock: keep
# clear of the ends of the calendar datetime can hold.
PRESENCE_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
PRESENCE_LATEST = datetime(2100, 1, 1, tzinfo=UTC)
PRESENCE_COLUMNS = [
    "zone_id",
    "zone_name",
    "night",
    "start",
    "end",
    "presence",
    "fixes",
    "inside_fixes",
    "overlapping_fixes",
    "away_fixes",
    "beacon",
]


@router.get("/reports/curfew-presence", dependencies=[allow(*REPORT_ROLES)], responses=CSV_RESPONSE)
async def curfew_presence(
    request: Request,
    conn: Conn,
    user: CurrentUser,
    subject_id: int = Query(ge=1),
    from_: AwareDatetime = Query(alias="from", description="nights starting at or after"),
    to: AwareDatetime = Query(description="nights starting before"),
    format_: Format | None = Query(default=None, alias="format"),
    reason: str | None = Query(default=None, max_length=500, description="why, for the audit log"),
) -> Any:
    """Per curfew window ("night") of each of the subject's curfew zones: ``verified`` (a fix
    wholly inside the home, or the approved home beacon in range), ``consistent`` (only fixes
    whose accuracy circle overlaps the home: all GPS can show in a home smaller than indoor
    accuracy) or ``unverified`` (no fix, or none consistent), with the counts behind it.
    Derived from the subject's positions, so reading it is audited like a location read."""
    if from_ >= to:
        raise _refuse(422, "empty_window", "'from' must be before 'to'")
    if to - from_ > MAX_PRESENCE_WINDOW:
        raise _refuse(422, "window_too_long", "the window may span at most 93 days")
    if from_ < PRESENCE_EARLIEST or to > PRESENCE_LATEST:
        raise _refuse(422, "window_out_of_range", "the window must lie within 2000-2100")
    if await subject_region(conn, subject_id, user.region_filter()) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"subject {subject_id} not found")
    report = await reports.curfew_presence(conn, subject_id, from_, to)
    window = {"start": from_.isoformat(), "end": to.isoformat()}
    await audit.record(conn, user, "report_curfew_presence", subject_id, **window, reason=reason)
    if wants_csv(request, format_):
        dates = f"{from_.date().isoformat()}-{to.date().isoformat()}"
        name = f"curfew-presence-{subject_id}-{dates}.csv"
        return csv_response(report["nights"], PRESENCE_COLUMNS, name)
    return {"from": from_, "to": to, **report}
