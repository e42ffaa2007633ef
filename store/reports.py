"""The SQL of the reports: compliance per region and month, absconders, and curfew presence per
subject and night.

Definitions (docs of the API repeat them):

* **Month**: from midnight on its first day to midnight on the next month's first day, in the
  region's time zone (``regions.timezone``), or UTC when the region has none. A month not over
  yet is counted up to now.
* **Region of a subject**: ``report_subject_regions`` (migration 0005) says which region a
  subject was in over time. Subjects keep no region history yet, so today a subject who moved
  counts, for the whole month, in the region it is in now; once a history exists and the view
  follows it, a mover's days and alerts count in the region it was in on those days and at those
  times (a day of a move counts in both regions).
* **Monitored**: the subject held a device as ``offender`` (``device_assignments``) while in the
  region. **Subjects monitored**: subjects monitored at any moment of the month.
  **Monitored subject-days**: pairs (subject, local calendar day of the month) with any monitored
  moment on that day - a subject assigned at noon on the 16th of a 31-day month has 16 days.
* **Alerts** of the month: opened in the month, attributed to the region of their subject at the
  time they opened (the alert's own ``region_id`` when it has no subject).
* **Violations**: those alerts, except the ones resolved as ``false_alarm``,
  ``equipment_fault`` or ``authorised_absence`` (those were not the subject's violations).
* **Time in violation**: for zone violation alerts (exclusion entry, inclusion exit, curfew,
  victim proximity; not the warning bands) that are violations, the part of
  [opened_at, cleared_at) inside the month; an alert not cleared runs until it was resolved, or
  until now, so an alert open across the month end counts up to the month's end.
* **Alerts per subject-day**: alerts / monitored subject-days (null without subject-days).
* **False-alarm share**: alerts of the month resolved as ``false_alarm`` / alerts of the month
  (null without alerts); ``resolved`` gives the other denominator.
* **Fixes** and **subject-days with fixes**: fixes of the held devices while monitored, and the
  monitored subject-days with at least one. With TimescaleDB these come from the continuous
  aggregate ``report_fixes_15m`` (quarter hours per device) plus, where a boundary cuts a
  quarter hour, the fixes themselves; without it, from the fixes alone. Both give the same
  numbers; a real-time aggregate (``materialized_only = false``) covers what the refresh policy
  has not materialized yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection, sql

from tagwatch.alerts import vocabulary as v
from tagwatch.alerts.observe import (
    CONSISTENT,
    UNVERIFIED,
    VERIFIED,
    RawFix,
    active_windows,
    presence_nights,
)
from tagwatch.alerts.rules import ZoneMeta
from tagwatch.alerts.thresholds import DEFAULTS, ThresholdError, layered
from tagwatch.geofence import Zone, ZoneIndex, ZoneValidationError
from tagwatch.store.fix_columns import value

NOT_VIOLATIONS = ("false_alarm", "equipment_fault", "authorised_absence")
ZONE_VIOLATIONS = (v.EXCLUSION_ENTRY, v.INCLUSION_EXIT, v.CURFEW_VIOLATION, v.VICTIM_PROXIMITY)
ALERT_TYPES = tuple(sorted(v.ALERT_TYPES))
CAGG = ("public", "report_fixes_15m")


@dataclass(frozen=True)
class Month:
    """A calendar month in a time zone, with its UTC bounds."""

    first_day: date
    timezone: str

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def next_first_day(self) -> date:
        y, m = self.first_day.year, self.first_day.month
        return date(y + (m == 12), m % 12 + 1, 1)

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first_day, datetime.min.time(), self.tz).astimezone(UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.next_first_day, datetime.min.time(), self.tz).astimezone(UTC)

    @property
    def days(self) -> int:
        return (self.next_first_day - self.first_day).days

    @property
    def label(self) -> str:
        return self.first_day.strftime("%Y-%m")


async def region_timezone(
    conn: AsyncConnection, region: str, regions: list[str] | None
) -> str | None:
    """The region's time zone ('UTC' when it has none), or None if it is unknown or not the
    caller's (``regions`` None means every region): the same answer for both."""
    row = await (
        await conn.execute(
            "SELECT COALESCE(timezone, 'UTC') FROM regions WHERE id = %s"
            " AND (%s::text[] IS NULL OR id = ANY(%s::text[]))",
            (region, regions, regions),
        )
    ).fetchone()
    return None if row is None else str(row[0])


async def timescale_fix_buckets(conn: AsyncConnection) -> tuple[str, str] | None:
    """The continuous aggregate of fixes per quarter hour, when TimescaleDB made one."""
    row = await (
        await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (".".join(CAGG),))
    ).fetchone()
    return CAGG if row is not None and row[0] else None


# Monitored periods: offender assignments, cut to the region periods and the month (until now).
PERIODS = """
    periods AS (
        SELECT a.subject_id, a.device_id,
               a.during * r.during * tstzrange(%(start)s, %(stop)s) AS during
        FROM device_assignments a
        JOIN report_subject_regions r ON r.subject_id = a.subject_id AND r.region_id = %(region)s
        WHERE a.role = 'offender' AND a.during && r.during
          AND a.during && tstzrange(%(start)s, %(stop)s)
    ),
    days AS (
        SELECT d::date AS day, d AT TIME ZONE %(tz)s AS day_start,
               (d + INTERVAL '1 day') AT TIME ZONE %(tz)s AS day_end
        FROM generate_series(%(first)s::timestamp, %(last)s::timestamp, INTERVAL '1 day') d
    ),
    pieces AS (
        SELECT p.subject_id, p.device_id, d.day,
               greatest(lower(p.during), d.day_start) AS s,
               least(upper(p.during), d.day_end) AS e
        FROM periods p JOIN days d ON p.during && tstzrange(d.day_start, d.day_end)
        WHERE NOT isempty(p.during)
    )
"""

# Fixes per piece (a device held on a day), counted from the fixes.
PLAIN_COUNTS = """
    SELECT pc.subject_id, pc.day,
           (SELECT count(*) FROM fixes f WHERE f.device_id = pc.device_id
             AND f.ts >= pc.s AND f.ts < pc.e) AS n
    FROM pieces pc
"""

# The same from quarter-hour buckets: whole buckets inside [s, e) from the aggregate, the cut
# buckets at either end from the fixes. lo = first bucket boundary at or after s (at most e),
# hi = last boundary at or before e (at least lo).
#
# Read set-wise, not by three correlated subqueries per piece (a device on a day): those cost
# ~0.35 ms each on a hypertable even when they found nothing (run-time exclusion of every chunk
# twice, and the real-time aggregate's union, per piece): 1.2 s for a region's month at 10M
# fixes. Here each held device's buckets of the month are read once (``whole``: one probe per
# device, kept apart by OFFSET 0 as in store/fixes.HELD_FIXES_IN_WINDOW, and MATERIALIZED: the
# generic plan a prepared statement gets after a few reports cannot estimate the pieces and
# otherwise re-read every device's month once per piece). ``daily`` sums each device's buckets
# per local day of ``days``, those wholly inside it (width_bucket over the days' starts gives
# the day whose [day_start, day_end) holds the bucket, DST days included): for a piece that is
# the whole day (s = day_start, e = day_end) that is exactly its [lo, hi). The other pieces (an
# assignment or region period beginning or ending that day, or now) take their buckets in
# [lo, hi) one by one, and their cut ends from the fixes.
BUCKET_COUNTS = """
    WITH bounds AS (
        SELECT c.*, greatest(c.fl_e, c.lo) AS hi,
               c.s = c.day_start AND c.e = c.day_end AS whole_day
        FROM (
            SELECT pc.*, d.day_start, d.day_end,
                   least(CASE WHEN date_bin(INTERVAL '15 minutes', pc.s, 'epoch') = pc.s
                              THEN pc.s
                              ELSE date_bin(INTERVAL '15 minutes', pc.s, 'epoch')
                                   + INTERVAL '15 minutes' END, pc.e) AS lo,
                   date_bin(INTERVAL '15 minutes', pc.e, 'epoch') AS fl_e
            FROM pieces pc JOIN days d ON d.day = pc.day
        ) c
    ),
    edges AS (
        SELECT array_agg(day_start ORDER BY day) || max(day_end) AS t FROM days
    ),
    whole AS MATERIALIZED (
        SELECT h.device_id, x.bucket, x.fixes
        FROM (SELECT DISTINCT device_id FROM bounds WHERE lo < hi) h
        CROSS JOIN LATERAL (
            SELECT q.bucket, q.fixes FROM {source} q
            WHERE q.device_id = h.device_id AND q.bucket >= %(start)s AND q.bucket < %(stop)s
            OFFSET 0
        ) x
    ),
    daily AS (
        SELECT w.device_id, %(first)s::date + (k.i - 1) AS day, sum(w.fixes) AS fixes
        FROM whole w
        CROSS JOIN LATERAL (SELECT width_bucket(w.bucket, (SELECT t FROM edges)) AS i) k
        WHERE w.bucket + INTERVAL '15 minutes' <= (SELECT t FROM edges)[k.i + 1]
        GROUP BY w.device_id, k.i
    )
    SELECT b.subject_id, b.day, 0::numeric AS n FROM bounds b
    UNION ALL
    SELECT b.subject_id, b.day, dl.fixes
    FROM bounds b JOIN daily dl ON dl.device_id = b.device_id AND dl.day = b.day
    WHERE b.whole_day
    UNION ALL
    SELECT b.subject_id, b.day, w.fixes
    FROM bounds b JOIN whole w ON w.device_id = b.device_id
     AND w.bucket >= b.lo AND w.bucket < b.hi
    WHERE NOT b.whole_day
    UNION ALL
    SELECT b.subject_id, b.day,
           (SELECT count(*) FROM fixes f WHERE f.device_id = b.device_id
             AND f.ts >= b.s AND f.ts < b.lo)
    FROM bounds b WHERE b.s < b.lo
    UNION ALL
    SELECT b.subject_id, b.day,
           (SELECT count(*) FROM fixes f WHERE f.device_id = b.device_id
             AND f.ts >= b.hi AND f.ts < b.e)
    FROM bounds b WHERE b.hi < b.e
"""


def _params(region: str, month: Month, now: datetime) -> dict[str, Any]:
    last = month.next_first_day - timedelta(days=1)
    return {
        "region": region,
        "tz": month.timezone,
        "start": month.start,
        "end": month.end,
        "stop": max(month.start, min(month.end, now)),
        "first": month.first_day,
        "last": last,
        "not_violations": list(NOT_VIOLATIONS),
        "zone_types": list(ZONE_VIOLATIONS),
    }


async def fix_figures(
    conn: AsyncConnection,
    region: str,
    month: Month,
    now: datetime,
    buckets: tuple[str, str] | None,
) -> dict[str, int]:
    """Monitored subjects, subject-days, fixes and subject-days with fixes; ``buckets`` names the
    quarter-hour aggregate to count from (None: count the fixes)."""
    counts = (
        sql.SQL(BUCKET_COUNTS).format(source=sql.Identifier(*buckets))
        if buckets
        else sql.SQL(PLAIN_COUNTS)
    )
    query = sql.SQL(
        "WITH {periods}, counted AS ({counts}),"
        " per_day AS (SELECT subject_id, day, sum(n) AS n FROM counted GROUP BY subject_id, day)"
        " SELECT count(DISTINCT subject_id), count(*), COALESCE(sum(n), 0),"
        " count(*) FILTER (WHERE n > 0) FROM per_day"
    ).format(periods=sql.SQL(PERIODS), counts=counts)
    row = await (await conn.execute(query, _params(region, month, now))).fetchone()
    assert row is not None
    return {
        "subjects_monitored": int(row[0]),
        "subject_days": int(row[1]),
        "fixes": int(row[2]),
        "subject_days_with_fixes": int(row[3]),
    }


# Alerts attributed to the region: their subject's region when they opened, else their own.
REGION_ALERTS = """
    region_alerts AS (
        SELECT a.* FROM alerts a
        LEFT JOIN report_subject_regions r
          ON r.subject_id = a.subject_id AND r.during @> a.opened_at
        WHERE COALESCE(r.region_id, CASE WHEN a.subject_id IS NULL THEN a.region_id END)
              = %(region)s
    )
"""


async def alert_figures(
    conn: AsyncConnection, region: str, month: Month, now: datetime
) -> dict[str, Any]:
    params = _params(region, month, now)
    rows = await (
        await conn.execute(
            f"WITH {REGION_ALERTS}"
            " SELECT type, count(*),"
            " count(*) FILTER (WHERE outcome IS NULL OR outcome <> ALL(%(not_violations)s)),"
            " count(*) FILTER (WHERE status = 'resolved'),"
            " count(*) FILTER (WHERE outcome = 'false_alarm')"
            " FROM region_alerts WHERE opened_at >= %(start)s AND opened_at < %(stop)s"
            " GROUP BY type",
            params,
        )
    ).fetchall()
    alerts = dict.fromkeys(ALERT_TYPES, 0)
    violations = dict.fromkeys(ALERT_TYPES, 0)
    resolved = false_alarms = 0
    for alert_type, total, violating, closed, false in rows:
        alerts[alert_type] = alerts.get(alert_type, 0) + int(total)
        violations[alert_type] = violations.get(alert_type, 0) + int(violating)
        resolved += int(closed)
        false_alarms += int(false)
    spans = await (
        await conn.execute(
            f"WITH {REGION_ALERTS}"
            " SELECT type, COALESCE(sum(EXTRACT(EPOCH FROM"
            "   least(COALESCE(cleared_at, resolved_at, %(stop)s), %(stop)s)"
            "   - greatest(opened_at, %(start)s))), 0)"
            " FROM region_alerts WHERE type = ANY(%(zone_types)s)"
            " AND (outcome IS NULL OR outcome <> ALL(%(not_violations)s))"
            " AND opened_at < %(stop)s"
            " AND COALESCE(cleared_at, resolved_at, %(stop)s) > %(start)s"
            " GROUP BY type",
            params,
        )
    ).fetchall()
    by_type = dict.fromkeys(ZONE_VIOLATIONS, 0.0)
    for alert_type, seconds in spans:
        by_type[alert_type] = max(0.0, float(seconds))
    return {
        "alerts": sum(alerts.values()),
        "alerts_by_type": alerts,
        "violations": sum(violations.values()),
        "violations_by_type": violations,
        "time_in_violation_s": round(sum(by_type.values()), 3),
        "time_in_violation_by_type_s": {k: round(s, 3) for k, s in by_type.items()},
        "resolved": resolved,
        "false_alarms": false_alarms,
    }


async def acknowledgement_figures(
    conn: AsyncConnection, region: str, month: Month, now: datetime
) -> dict[str, Any]:
    """Time to acknowledge (``acknowledged_at - raised_at``: from when the platform knew) of the
    month's acknowledged alerts, median and 90th percentile in seconds, and how many alerts
    were escalated for want of acknowledgement (docs/alerts.md "Escalation")."""
    row = await (
        await conn.execute(
            f"WITH {REGION_ALERTS}, waits AS (SELECT EXTRACT(EPOCH FROM"
            " acknowledged_at - raised_at)::float8 AS s FROM region_alerts"
            " WHERE opened_at >= %(start)s AND opened_at < %(stop)s"
            " AND acknowledged_at IS NOT NULL)"
            " SELECT (SELECT count(*) FROM waits),"
            " (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) FROM waits),"
            " (SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY s) FROM waits),"
            " (SELECT count(*) FROM region_alerts WHERE opened_at >= %(start)s"
            "  AND opened_at < %(stop)s AND ack_escalated_at IS NOT NULL)",
            _params(region, month, now),
        )
    ).fetchone()
    count, median, p90, escalated = row if row is not None else (0, None, None, 0)
    return {
        "acknowledged": int(count),
        "median_s": None if median is None else round(max(0.0, float(median)), 3),
        "p90_s": None if p90 is None else round(max(0.0, float(p90)), 3),
        "escalated_unacknowledged": int(escalated),
    }


async def compliance(
    conn: AsyncConnection,
    region: str,
    month: Month,
    now: datetime,
    buckets: tuple[str, str] | None,
) -> dict[str, Any]:
    fixes = await fix_figures(conn, region, month, now, buckets)
    alerts = await alert_figures(conn, region, month, now)
    acknowledgement = await acknowledgement_figures(conn, region, month, now)
    days = fixes["subject_days"]
    return {
        "region": region,
        "month": month.label,
        "timezone": month.timezone,
        "period_start": month.start,
        "period_end": month.end,
        "complete": now >= month.end,
        **{k: fixes[k] for k in ("subjects_monitored", "subject_days")},
        "alerts": alerts["alerts"],
        "alerts_per_subject_day": round(alerts["alerts"] / days, 4) if days else None,
        "violations": alerts["violations"],
        "violations_by_type": alerts["violations_by_type"],
        "alerts_by_type": alerts["alerts_by_type"],
        "time_in_violation_s": alerts["time_in_violation_s"],
        "time_in_violation_by_type_s": alerts["time_in_violation_by_type_s"],
        "resolved": alerts["resolved"],
        "false_alarms": alerts["false_alarms"],
        "false_alarm_share": (
            round(alerts["false_alarms"] / alerts["alerts"], 4) if alerts["alerts"] else None
        ),
        "time_to_acknowledge": acknowledgement,
        "fixes": fixes["fixes"],
        "subject_days_with_fixes": fixes["subject_days_with_fixes"],
        "fix_source": "timescale_continuous_aggregate" if buckets else "fixes",
    }


def _epoch_or_time(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


async def absconders(
    conn: AsyncConnection, region: str, start: datetime, end: datetime, now: datetime
) -> list[dict[str, Any]]:
    """One row per absconder alert opened in [start, end) in the region (the alert's region as
    the alert queue scopes it: its subject's current region, its own without a subject)."""
    rows = await (
        await conn.execute(
            "SELECT a.id, a.subject_id, s.name, s.case_ref, COALESCE(s.region_id, a.region_id),"
            " a.opened_at, a.status, a.outcome, a.resolved_at, a.lat, a.lon, a.last_fix_at,"
            " a.details"
            " FROM alerts a LEFT JOIN subjects s ON s.id = a.subject_id"
            " WHERE a.type = 'absconder' AND COALESCE(s.region_id, a.region_id) = %s"
            " AND a.opened_at >= %s AND a.opened_at < %s ORDER BY a.opened_at, a.id",
            (region, start, end),
        )
    ).fetchall()
    report = []
    for (
        alert_id,
        subject_id,
        name,
        case_ref,
        region_id,
        opened_at,
        status,
        outcome,
        resolved_at,
        lat,
        lon,
        last_fix_at,
        raw_details,
    ) in rows:
        details: dict[str, Any] = raw_details or {}
        known = details.get("last_known")
        if (
            isinstance(known, dict)
            and _number(known.get("lat")) is not None
            and _number(known.get("lon")) is not None
        ):
            position = {
                "at": _epoch_or_time(known.get("ts")),
                "lat": _number(known.get("lat")),
                "lon": _number(known.get("lon")),
                "acc": _number(known.get("acc")),
            }
        elif lat is not None and lon is not None:
            position = {"at": last_fix_at, "lat": lat, "lon": lon, "acc": None}
        else:
            position = {"at": None, "lat": None, "lon": None, "acc": None}
        linked: set[int] = set()
        source = details.get("source_alert_id")
        if isinstance(source, int) and not isinstance(source, bool):
            linked.add(source)
        for other in details.get("open_alerts") or ():
            if isinstance(other, dict) and isinstance(other.get("id"), int):
                linked.add(other["id"])
        linked.discard(alert_id)
        if status == "resolved" and outcome == "traced":
            state, until = "traced", resolved_at
        elif status == "resolved":
            state, until = "closed", None
        else:
            state, until = "outstanding", now
        report.append(
            {
                "alert_id": alert_id,
                "subject_id": subject_id,
                "subject_name": name,
                "case_ref": case_ref,
                "region_id": region_id,
                "absconded_at": opened_at,
                "last_known_at": position["at"],
                "last_known_lat": position["lat"],
                "last_known_lon": position["lon"],
                "last_known_acc": position["acc"],
                "linked_alert_ids": sorted(linked),
                "escalated_from": details.get("escalated_from"),
                "declared_by": details.get("declared_by"),
                "status": state,
                "outcome": outcome,
                "resolved_at": resolved_at,
                "days_at_large": (
                    round(max(0.0, (until - opened_at).total_seconds()) / 86400, 3)
                    if until is not None
                    else None
                ),
            }
        )
    return report


# -- curfew presence per night ------------------------------------------------------------------

BEACON_EVENTS = ("beacon_home_enter", "beacon_home_leave")


def beacon_spans(
    events: list[tuple[float, str, str | None]], approved: str | None, start: float, end: float
) -> list[tuple[float, float]]:
    """The intervals of [start, end) in which the approved home beacon was in range, from the
    (ts, type, beacon named) enter and leave events in time order (the events before ``start``
    give the state it starts in). As the engine judges them (alerts.rules.Evaluator.beacon):
    only an enter naming ``approved`` opens a span, any leave ends one; no approved beacon, no
    span. The subject's current approval judges every night of the report."""
    spans: list[tuple[float, float]] = []
    since: float | None = None
    if approved is None:
        return spans
    for ts, kind, beacon in events:
        if kind == "beacon_home_enter" and since is None and beacon == approved:
            since = ts
        elif kind == "beacon_home_leave" and since is not None:
            spans.append((since, ts))
            since = None
    if since is not None:
        spans.append((since, end))
    return [(max(a, start), min(b, end)) for a, b in spans if b > start and a < end]


async def curfew_presence(
    conn: AsyncConnection, subject_id: int, start: datetime, end: datetime
) -> dict[str, Any]:
    """Night by night (each curfew window of each of the subject's curfew zones that starts in
    [start, end)), what GPS and the home beacon say of the subject's presence at home:
    ``verified`` (a fix wholly inside the home, or the approved beacon in range: events of any
    other beacon, or naming none, are stored but never verify), ``consistent`` (only
    fixes whose accuracy circle overlaps the home: a home smaller than indoor accuracy never
    gives better) or ``unverified`` (no fix, or none consistent). See alerts.observe.PresenceNight.
    """
    subject = await (
        await conn.execute(
            "SELECT timezone, thresholds, home_beacon FROM subjects WHERE id = %s", (subject_id,)
        )
    ).fetchone()
    if subject is None:
        return {"subject_id": subject_id, "nights": []}
    timezone, subject_thresholds, approved = str(subject[0]), subject[1] or {}, subject[2]
    glob = await (
        await conn.execute("SELECT values FROM alert_thresholds WHERE scope = 'global'")
    ).fetchone()
    try:
        base = layered(glob[0] if glob else None)
    except ThresholdError:
        base = DEFAULTS  # as the engine does with a global row it cannot use
    zone_rows = await (
        await conn.execute(
            "SELECT id, name, geometry, radius_m, schedule, thresholds FROM zones"
            " WHERE subject_id = %s AND kind = 'curfew' AND deleted_at IS NULL ORDER BY id",
            (subject_id,),
        )
    ).fetchall()
    t0, t1 = start.timestamp(), end.timestamp()
    index = ZoneIndex()
    index.set_subject(subject_id, timezone=timezone)
    metas: dict[int, ZoneMeta] = {}
    windows: dict[int, list[tuple[float, float]]] = {}
    names: dict[int, str] = {}
    for zone_id, name, geometry, radius_m, schedule, zone_thresholds in zone_rows:
        try:
            zone = Zone.from_json(
                {
                    "zone_id": zone_id,
                    "kind": "curfew",
                    "geometry": geometry,
                    "radius_m": radius_m,
                    "subject_id": subject_id,
                    "schedule": schedule,
                }
            )
            thresholds = layered(subject_thresholds, zone_thresholds, base=base)
            index.upsert(zone)
        except (ZoneValidationError, ThresholdError):
            continue  # a zone the engine cannot load either (it logs it): no nights to report
        metas[zone_id] = ZoneMeta(zone_id, "curfew", thresholds=thresholds, name=name)
        names[zone_id] = name
        # a window that starts in [start, end) is reported whole: look a day either side
        spans = active_windows(zone.schedule, timezone, t0 - 86_400.0, t1 + 86_400.0)
        windows[zone_id] = [(a, b) for a, b in spans if t0 <= a < t1]
    horizon = max((b for spans in windows.values() for _, b in spans), default=t1)
    fix_rows = await (
        await conn.execute(
            f"SELECT f.device_id, EXTRACT(EPOCH FROM f.ts)::float8, {value('lon', 'f')},"
            f" {value('lat', 'f')}, ({value('acc', 'f')})::float8,"
            " f.src FROM fixes f JOIN device_assignments a ON a.device_id = f.device_id"
            " AND a.during @> f.ts AND a.role = 'offender'"
            " WHERE a.subject_id = %s AND f.ts >= to_timestamp(%s) AND f.ts < to_timestamp(%s)"
            f" AND {value('acc', 'f')} IS NOT NULL ORDER BY f.ts",
            (subject_id, t0, horizon),
        )
    ).fetchall()
    fixes = [RawFix(subject_id, *row) for row in fix_rows]
    event_rows = await (
        await conn.execute(
            "SELECT EXTRACT(EPOCH FROM e.ts)::float8, e.type, beacon_of(e.detail)"
            " FROM device_events e"
            " JOIN device_assignments a ON a.device_id = e.device_id AND a.during @> e.ts"
            " AND a.role = 'offender'"
            " WHERE a.subject_id = %s AND e.type = ANY(%s) AND e.ts < to_timestamp(%s)"
            " ORDER BY e.ts",
            (subject_id, list(BEACON_EVENTS), horizon),
        )
    ).fetchall()
    beacon = beacon_spans(
        [(float(ts), str(kind), b) for ts, kind, b in event_rows], approved, t0, horizon
    )
    nights = presence_nights(index, metas, windows, fixes, beacon)
    tz = ZoneInfo(timezone)
    out = [
        {
            "zone_id": n.zone_id,
            "zone_name": names[n.zone_id],
            "night": datetime.fromtimestamp(n.start, tz).date().isoformat(),
            "start": datetime.fromtimestamp(n.start, UTC),
            "end": datetime.fromtimestamp(n.end, UTC),
            "presence": n.presence,
            "fixes": n.fixes,
            "inside_fixes": n.inside,
            "overlapping_fixes": n.overlapping,
            "away_fixes": n.away,
            "beacon": n.beacon,
        }
        for n in sorted(nights, key=lambda n: (n.start, n.zone_id))
    ]
    summary = dict.fromkeys((VERIFIED, CONSISTENT, UNVERIFIED), 0)
    for night in nights:
        summary[night.presence] += 1
    return {
        "subject_id": subject_id,
        "timezone": timezone,
        "home_beacon": approved,
        "nights": out,
        "summary": summary,
    }
