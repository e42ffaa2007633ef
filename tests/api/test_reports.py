"""Compliance and absconder reports on a small month computed by hand; CSV equals JSON; the
quarter-hour bucket path (TimescaleDB's continuous aggregate) gives the same numbers as the
fixes; region isolation; the absconders report is audited."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tagwatch.store import reports
from tagwatch.store.subjects import approve_home_beacon
from tests.support import fresh_id

pytestmark = pytest.mark.integration

MARCH = {"month": "2025-03"}


@pytest.fixture(scope="module")
def as_(login):
    """Log in once per (role, regions) in this module: each login hashes a password."""
    cache: dict[tuple[str, tuple[str, ...]], dict[str, str]] = {}

    def headers(role: str, regions: list[str]) -> dict[str, str]:
        key = (role, tuple(regions))
        if key not in cache:
            cache[key] = login(role, regions)
        return cache[key]

    return headers


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Seed:
    """Rows written directly, with fresh ids."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def region(self, timezone: str | None = None) -> str:
        region = fresh_id("rr")
        self.conn.execute(
            "INSERT INTO regions (id, name, timezone) VALUES (%s, %s, %s)",
            (region, region, timezone),
        )
        return region

    def subject(self, region: str, name: str = "S") -> int:
        row = self.conn.execute(
            "INSERT INTO subjects (name, region_id) VALUES (%s, %s) RETURNING id", (name, region)
        ).fetchone()
        assert row is not None
        return int(row[0])

    def device(self, subject: int, start: str, end: str | None, role: str = "offender") -> str:
        device = fresh_id("rd")
        self.conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (device,))
        self.conn.execute(
            "INSERT INTO device_assignments (device_id, subject_id, role, during)"
            " VALUES (%s, %s, %s, tstzrange(%s, %s))",
            (device, subject, role, at(start), at(end) if end else None),
        )
        return device

    def fixes(self, device: str, *times: str) -> None:
        for ts in times:
            self.conn.execute(
                "INSERT INTO fixes (device_id, ts, lat, lon, acc) VALUES (%s, %s, 48.1, 11.5, 9)",
                (device, at(ts)),
            )

    def alert(
        self,
        subject: int | None,
        kind: str,
        opened: str,
        cleared: str | None = None,
        outcome: str | None = None,
        resolved: str | None = None,
        region: str | None = None,
        details: str = "{}",
        lat: float | None = None,
        lon: float | None = None,
    ) -> int:
        row = self.conn.execute(
            "INSERT INTO alerts (subject_id, type, severity, status, opened_at, cleared_at,"
            " outcome, resolved_at, region_id, details, lat, lon)"
            " VALUES (%s, %s, 'warning', %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s) RETURNING id",
            (
                subject,
                kind,
                "resolved" if outcome else "open",
                at(opened),
                cleared and at(cleared),
                outcome,
                (resolved and at(resolved)) or (at(opened) if outcome else None),
                region,
                details,
                lat,
                lon,
            ),
        ).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture(scope="module")
def month(settings) -> dict[str, Any]:
    """March 2025 in a UTC region, with its answers worked out by hand:

    * s1 holds a device all month (31 days), s2 from the 16th at 12:05 (16 days), s3 from the
      5th to the 7th at 23:52:30 (3 days); a victim's phone, an April assignment and a subject of
      another region do not count: 3 subjects, 50 subject-days.
    * alerts opened in March: an exclusion entry (30 min, confirmed), a curfew violation resolved
      as false alarm, an inclusion exit opened at 23:00 on the 31st and still open (1 h to the
      month's end), a battery_low: 4 alerts, 3 violations, 2 resolved, 1 false alarm (0.25),
      4 / 50 = 0.08 alerts per subject-day; an exclusion entry from 23:30 on 28 February to
      00:30 on 1 March adds 30 min: 2 h in violation.
    * fixes while monitored: s1 3 (days 1, 1, 2), s2 3 (day 16, after 12:05), s3 2 (days 5 and
      7, before 23:52:30): 8 fixes on 5 subject-days.
    """
    with psycopg.connect(settings.database_url) as conn:
        seed = Seed(conn)
        region, other = seed.region(), seed.region()
        s1, s2, s3, s4, s5 = (seed.subject(region, f"s{i}") for i in range(1, 6))
        s6 = seed.subject(other, "s6")
        d1 = seed.device(s1, "2025-02-10T00:00:00Z", None)
        d2 = seed.device(s2, "2025-03-16T12:05:00Z", None)
        d3 = seed.device(s3, "2025-03-05T00:00:00Z", "2025-03-07T23:52:30Z")
        d4 = seed.device(s4, "2025-02-01T00:00:00Z", None, role="victim")
        d5 = seed.device(s5, "2025-04-02T00:00:00Z", None)
        d6 = seed.device(s6, "2025-03-01T00:00:00Z", None)
        seed.fixes(
            d1,
            "2025-02-28T23:59:59Z",
            "2025-03-01T00:00:00Z",
            "2025-03-01T00:07:00Z",
            "2025-03-02T12:00:00Z",
            "2025-04-01T00:00:00Z",
        )
        seed.fixes(
            d2,
            "2025-03-16T12:04:59Z",
            "2025-03-16T12:05:00Z",
            "2025-03-16T12:10:00Z",
            "2025-03-16T12:20:00Z",
        )
        seed.fixes(d3, "2025-03-05T08:00:00Z", "2025-03-07T23:50:00Z", "2025-03-07T23:55:00Z")
        seed.fixes(d4, "2025-03-03T10:00:00Z")
        seed.fixes(d5, "2025-03-20T10:00:00Z", "2025-04-03T10:00:00Z")
        seed.fixes(d6, "2025-03-20T10:00:00Z")
        seed.alert(
            s1,
            "exclusion_zone_entry",
            "2025-03-03T10:00:00Z",
            "2025-03-03T10:30:00Z",
            "confirmed",
            "2025-03-03T11:00:00Z",
        )
        seed.alert(
            s1,
            "curfew_violation",
            "2025-03-10T22:00:00Z",
            "2025-03-10T23:00:00Z",
            "false_alarm",
            "2025-03-11T08:00:00Z",
        )
        seed.alert(s2, "inclusion_zone_exit", "2025-03-31T23:00:00Z")
        seed.alert(s2, "battery_low", "2025-03-20T06:00:00Z")
        seed.alert(s1, "exclusion_zone_entry", "2025-02-28T23:30:00Z", "2025-03-01T00:30:00Z")
        seed.alert(s3, "strap_tamper", "2025-04-01T00:00:00Z")
        seed.alert(s6, "exclusion_zone_entry", "2025-03-04T10:00:00Z", "2025-03-04T12:00:00Z")
    return {"region": region, "other": other}


EXPECTED = {
    "subjects_monitored": 3,
    "subject_days": 50,
    "alerts": 4,
    "violations": 3,
    "resolved": 2,
    "false_alarms": 1,
    "false_alarm_share": 0.25,
    "alerts_per_subject_day": 0.08,
    "time_in_violation_s": 7200.0,
    "fixes": 8,
    "subject_days_with_fixes": 5,
    "complete": True,
    "timezone": "UTC",
}


def test_compliance_matches_the_hand_computed_month(api, as_, month):
    response = api.get(
        "/api/v1/reports/compliance",
        params={"region": month["region"], **MARCH},
        headers=as_("supervisor", [month["region"]]),
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert {k: report[k] for k in EXPECTED} == EXPECTED
    assert {k: n for k, n in report["alerts_by_type"].items() if n} == {
        "exclusion_zone_entry": 1,
        "curfew_violation": 1,
        "inclusion_zone_exit": 1,
        "battery_low": 1,
    }
    assert {k: n for k, n in report["violations_by_type"].items() if n} == {
        "exclusion_zone_entry": 1,
        "inclusion_zone_exit": 1,
        "battery_low": 1,
    }
    assert report["time_in_violation_by_type_s"] == {
        "exclusion_zone_entry": 3600.0,
        "inclusion_zone_exit": 3600.0,
        "curfew_violation": 0.0,
        "victim_proximity": 0.0,
    }
    assert at(report["period_start"]) == at("2025-03-01T00:00:00Z")
    assert at(report["period_end"]) == at("2025-04-01T00:00:00Z")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


def _same_time_or_value(csv_text: str, json_value: Any) -> bool:
    if isinstance(json_value, str) and csv_text and json_value[:4].isdigit() and "T" in json_value:
        return at(csv_text) == at(json_value)
    if isinstance(json_value, float) and csv_text:
        return float(csv_text) == pytest.approx(json_value, abs=1e-3)
    return csv_text == _cell(json_value)


def test_compliance_csv_parses_and_matches_json(api, as_, month):
    headers = as_("admin", ["*"])
    params = {"region": month["region"], **MARCH}
    report = api.get("/api/v1/reports/compliance", params=params, headers=headers).json()
    by_query = api.get(
        "/api/v1/reports/compliance", params={**params, "format": "csv"}, headers=headers
    )
    by_accept = api.get(
        "/api/v1/reports/compliance", params=params, headers={**headers, "Accept": "text/csv"}
    )
    for response in (by_query, by_accept):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        disposition = response.headers["content-disposition"]
        assert disposition == f'attachment; filename="compliance-{month["region"]}-2025-03.csv"'
    assert by_query.text == by_accept.text
    rows = list(csv.DictReader(io.StringIO(by_query.text)))
    assert len(rows) == 1
    flat: dict[str, Any] = {}
    for key, value in report.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            flat[key] = value
    assert set(rows[0]) == set(flat)
    for key, value in flat.items():
        assert _same_time_or_value(rows[0][key], value), (key, rows[0][key], value)


def _compliance(settings, region: str, buckets: tuple[str, str] | None) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
            return await reports.compliance(
                conn, region, reports.Month(date(2025, 3, 1), "UTC"), datetime.now(UTC), buckets
            )

    return asyncio.run(run())


def test_quarter_hour_buckets_give_the_same_numbers_as_the_fixes(settings, month):
    """The continuous aggregate's query path, against a plain materialized view of the same
    quarter-hour counts: whole buckets from the view, cut ones from the fixes."""
    schema = fresh_id("buckets").replace("-", "_")
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(
            f"CREATE MATERIALIZED VIEW {schema}.report_fixes_15m AS"
            " SELECT date_bin(INTERVAL '15 minutes', ts, 'epoch') AS bucket, device_id,"
            " count(*) AS fixes FROM fixes GROUP BY 1, 2"
        )
    try:
        plain = _compliance(settings, month["region"], None)
        bucketed = _compliance(settings, month["region"], (schema, "report_fixes_15m"))
    finally:
        with psycopg.connect(settings.database_url) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    assert plain.pop("fix_source") == "fixes"
    assert bucketed.pop("fix_source") == "timescale_continuous_aggregate"
    assert bucketed == plain
    assert (plain["fixes"], plain["subject_days_with_fixes"]) == (8, 5)


@pytest.mark.timescale
def test_timescale_continuous_aggregate_agrees_with_plain_sql(settings, month):
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        if (
            conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
            is None
        ):
            pytest.skip(
                "the timescaledb extension is not installed in the test database: the continuous"
                " aggregate path is compared with plain SQL only where it is"
            )
        assert conn.execute("SELECT reports_enable_timescale()").fetchone() == (True,)
        assert conn.execute("SELECT reports_enable_timescale()").fetchone() == (True,)  # again
        # the covering index the report's read needs (migration timescale_0004)
        assert (
            conn.execute(
                "SELECT indexdef FROM pg_indexes"
                " WHERE indexname = 'report_fixes_15m_device_bucket_fixes'"
            ).fetchone()
            is not None
        )
        conn.execute("CALL refresh_continuous_aggregate('report_fixes_15m', NULL, NULL)")
    plain = _compliance(settings, month["region"], None)
    aggregated = _compliance(settings, month["region"], reports.CAGG)
    assert aggregated.pop("fix_source") == "timescale_continuous_aggregate"
    plain.pop("fix_source")
    assert aggregated == plain


def test_month_boundaries_follow_the_region_time_zone(api, as_, settings):
    """In Europe/Berlin, March runs from 28 Feb 23:00 UTC to 31 Mar 22:00 UTC (DST began)."""
    with psycopg.connect(settings.database_url) as conn:
        seed = Seed(conn)
        region = seed.region("Europe/Berlin")
        subject = seed.subject(region)
        seed.device(subject, "2025-03-31T21:30:00Z", None)  # 23:30 local on the 31st
        seed.alert(subject, "battery_low", "2025-02-28T23:30:00Z")  # 1 March, 00:30 local
        seed.alert(subject, "battery_low", "2025-03-31T22:30:00Z")  # 1 April, 00:30 local
    report = api.get(
        "/api/v1/reports/compliance",
        params={"region": region, **MARCH},
        headers=as_("admin", ["*"]),
    ).json()
    assert report["timezone"] == "Europe/Berlin"
    assert at(report["period_start"]) == at("2025-02-28T23:00:00Z")
    assert at(report["period_end"]) == at("2025-03-31T22:00:00Z")
    assert (report["subject_days"], report["alerts"]) == (1, 1)


@pytest.fixture(scope="module")
def absconding(settings) -> dict[str, Any]:
    with psycopg.connect(settings.database_url) as conn:
        seed = Seed(conn)
        region, other = seed.region(), seed.region()
        traced_subject, outstanding_subject, closed_subject = (
            seed.subject(region, n) for n in ("traced", "outstanding", "closed")
        )
        elsewhere = seed.subject(other, "elsewhere")
        tamper = seed.alert(traced_subject, "strap_tamper", "2025-03-05T09:00:00Z")
        details = json.dumps(
            {
                "escalated_from": "strap_tamper",
                "source_alert_id": tamper,
                "last_known": {"ts": 1741165200, "lat": 48.2, "lon": 16.37, "acc": 12},
                "trail": [],
                "open_alerts": [{"id": tamper, "type": "strap_tamper"}],
            }
        )
        traced = seed.alert(
            traced_subject,
            "absconder",
            "2025-03-05T10:00:00Z",
            outcome="traced",
            resolved="2025-03-07T10:00:00Z",
            details=details,
        )
        outstanding = seed.alert(
            outstanding_subject,
            "absconder",
            "2025-03-20T00:00:00Z",
            details='{"declared_by": "op1", "last_known": null}',
            lat=48.3,
            lon=16.4,
        )
        closed = seed.alert(
            closed_subject,
            "absconder",
            "2025-03-21T00:00:00Z",
            outcome="false_alarm",
            resolved="2025-03-21T02:00:00Z",
        )
        seed.alert(elsewhere, "absconder", "2025-03-10T00:00:00Z")
        seed.alert(traced_subject, "absconder", "2025-04-10T00:00:00Z")  # after the window
    return {
        "region": region,
        "subjects": (traced_subject, outstanding_subject, closed_subject),
        "alerts": (traced, outstanding, closed),
        "tamper": tamper,
    }


WINDOW = {"from": "2025-03-01T00:00:00Z", "to": "2025-04-01T00:00:00Z"}


def test_absconders_traced_outstanding_and_days_at_large(api, as_, absconding, settings):
    reason = fresh_id("monthly")
    response = api.get(
        "/api/v1/reports/absconders",
        params={"region": absconding["region"], **WINDOW, "reason": reason},
        headers=as_("supervisor", [absconding["region"]]),
    )
    assert response.status_code == 200, response.text
    rows = response.json()["rows"]
    traced, outstanding, closed = absconding["alerts"]
    assert [r["alert_id"] for r in rows] == [traced, outstanding, closed]
    first, second, third = rows
    assert first["status"] == "traced"
    assert first["days_at_large"] == 2.0
    assert (first["last_known_lat"], first["last_known_lon"], first["last_known_acc"]) == (
        48.2,
        16.37,
        12,
    )
    assert at(first["last_known_at"]) == at("2025-03-05T09:00:00Z")
    assert first["linked_alert_ids"] == [absconding["tamper"]]
    assert first["escalated_from"] == "strap_tamper"
    assert first["subject_id"] == absconding["subjects"][0]
    assert first["region_id"] == absconding["region"]
    assert second["status"] == "outstanding"
    assert second["declared_by"] == "op1"
    assert (second["last_known_lat"], second["last_known_lon"]) == (48.3, 16.4)
    at_large = (datetime.now(UTC) - at("2025-03-20T00:00:00Z")).total_seconds() / 86400
    assert second["days_at_large"] == pytest.approx(at_large, abs=0.01)
    assert third["status"] == "closed"
    assert third["outcome"] == "false_alarm"
    assert third["days_at_large"] is None

    with psycopg.connect(settings.database_url) as conn:
        audited = conn.execute(
            "SELECT role, action, subject_id, detail FROM audit_log"
            " WHERE detail->>'reason' = %s ORDER BY id",
            (reason,),
        ).fetchall()
    assert [a[2] for a in audited] == [None, *sorted(absconding["subjects"])]
    assert {(a[0], a[1]) for a in audited} == {("supervisor", "report_absconders")}
    assert audited[0][3]["region"] == absconding["region"]


def test_absconders_csv_parses_and_matches_json(api, as_, absconding):
    headers = as_("admin", ["*"])
    params = {"region": absconding["region"], **WINDOW}
    rows = api.get("/api/v1/reports/absconders", params=params, headers=headers).json()["rows"]
    response = api.get(
        "/api/v1/reports/absconders", params={**params, "format": "csv"}, headers=headers
    )
    assert response.status_code == 200
    assert response.headers["content-disposition"] == (
        f'attachment; filename="absconders-{absconding["region"]}-2025-03-01-2025-04-01.csv"'
    )
    parsed = list(csv.DictReader(io.StringIO(response.text)))
    assert len(parsed) == len(rows) == 3
    for row, line in zip(rows, parsed, strict=True):
        assert set(line) == set(row)
        for key, value in row.items():
            assert _same_time_or_value(line[key], value), (key, line[key], value)


@pytest.mark.parametrize("path", ["compliance", "absconders"])
def test_reports_are_region_scoped_and_for_supervisors(api, as_, month, path):
    params = {"region": month["region"], **MARCH, **WINDOW}
    url = f"/api/v1/reports/{path}"
    assert (
        api.get(url, params=params, headers=as_("supervisor", [month["other"]])).status_code == 404
    )
    assert (
        api.get(
            url, params={**params, "region": "no-such"}, headers=as_("admin", ["*"])
        ).status_code
        == 404
    )
    for role in ("operator", "tracer"):
        assert api.get(url, params=params, headers=as_(role, [month["region"]])).status_code == 403
    assert api.get(url, params=params).status_code == 401
    assert api.get(url, params=params, headers=as_("admin", ["*"])).status_code == 200


def test_report_input_is_checked(api, as_, month):
    headers = as_("admin", ["*"])
    for bad in ("2025-13", "2025-3", "25-03", "march"):
        response = api.get(
            "/api/v1/reports/compliance",
            params={"region": month["region"], "month": bad},
            headers=headers,
        )
        assert response.status_code == 422, bad
    for window, reason in (
        ({"from": "2025-04-01T00:00:00Z", "to": "2025-03-01T00:00:00Z"}, "empty_window"),
        ({"from": "2024-01-01T00:00:00Z", "to": "2025-03-01T00:00:00Z"}, "window_too_long"),
    ):
        response = api.get(
            "/api/v1/reports/absconders",
            params={"region": month["region"], **window},
            headers=headers,
        )
        assert response.status_code == 422
        assert response.json()["detail"]["reason"] == reason
    naive = api.get(
        "/api/v1/reports/absconders",
        params={"region": month["region"], "from": "2025-03-01T00:00:00", "to": WINDOW["to"]},
        headers=headers,
    )
    assert naive.status_code == 422


# -- curfew presence per night (issue 14) -------------------------------------------------------

HOME_LON, HOME_LAT = 18.4722, -33.9379
M_LAT = 1 / 110_540
M_LON = 1 / (111_320 * 0.8297)  # cos(33.94 degrees)


def test_curfew_presence_says_verified_consistent_or_unverified_night_by_night(api, as_, settings):
    """A home 20 m across under a 19:00-07:00 curfew (UTC), four nights of March 2025:
    the 3rd with indoor fixes of 40-150 m overlapping the home (consistent: all GPS can show
    there), the 4th with one 3 m fix inside it (verified), the 5th without a fix (unverified),
    the 6th without a fix but the approved home beacon in range (verified); the 7th and 8th
    without a fix and with beacon events that name no beacon or another one (unverified: a
    tag's credentials are the wearer's, so only the approved beacon counts)."""
    with psycopg.connect(settings.database_url) as conn:
        seed = Seed(conn)
        region = seed.region()
        subject = seed.subject(region, "small home")
        device = seed.device(subject, "2025-02-01T00:00:00Z", None)
        d_lon, d_lat = 10 * M_LON, 10 * M_LAT
        ring = [
            [HOME_LON - d_lon, HOME_LAT - d_lat],
            [HOME_LON + d_lon, HOME_LAT - d_lat],
            [HOME_LON + d_lon, HOME_LAT + d_lat],
            [HOME_LON - d_lon, HOME_LAT + d_lat],
            [HOME_LON - d_lon, HOME_LAT - d_lat],
        ]
        conn.execute(
            "INSERT INTO zones (name, kind, geometry, subject_id, schedule)"
            " VALUES ('home', 'curfew', %s, %s, %s)",
            (
                json.dumps({"type": "Polygon", "coordinates": [ring]}),
                subject,
                json.dumps({"weekly": [{"start": "19:00", "end": "07:00"}]}),
            ),
        )

        def fix(ts: str, north_m: float, acc: float) -> None:
            conn.execute(
                "INSERT INTO fixes (device_id, ts, lat, lon, acc) VALUES (%s, %s, %s, %s, %s)",
                (device, at(ts), HOME_LAT + north_m * M_LAT, HOME_LON, acc),
            )

        for hour, (north, acc) in enumerate([(30, 60), (-50, 90), (5, 40), (120, 150)]):
            fix(f"2025-03-03T2{hour}:00:00Z", north, acc)  # consistent
        fix("2025-03-03T18:00:00Z", 0, 3)  # inside, but before the window: not that night's
        fix("2025-03-04T22:00:00Z", 0, 3)  # verified
        fix("2025-03-04T23:00:00Z", 80, 40)
        fix("2025-03-05T12:00:00Z", 0, 3)  # the 5th: only a fix by day
        approve_home_beacon(conn, subject, "HB-0042", "a supervisor")

        def stored(ts: str, detail: dict[str, str] | None) -> Jsonb | None:
            """The 6th's enter as ingest stored details before migration 0019: double-encoded
            (a jsonb string holding the JSON text); still read as naming its beacon."""
            if detail is None:
                return None
            return Jsonb(json.dumps(detail) if ts.startswith("2025-03-06") else detail)

        for ts, kind, detail in (
            ("2025-03-06T20:00:00Z", "enter", {"beacon": "HB-0042"}),
            ("2025-03-07T06:00:00Z", "leave", {"beacon": "HB-0042"}),
            ("2025-03-07T20:00:00Z", "enter", None),
            ("2025-03-08T06:00:00Z", "leave", None),
            ("2025-03-08T20:00:00Z", "enter", {"beacon": "HB-9999"}),
            ("2025-03-09T06:00:00Z", "leave", {"beacon": "HB-9999"}),
        ):
            conn.execute(
                "INSERT INTO device_events (device_id, ts, type, detail) VALUES (%s, %s, %s, %s)",
                (device, at(ts), f"beacon_home_{kind}", stored(ts, detail)),
            )
        conn.commit()

    headers = as_("supervisor", [region])
    params = {"subject_id": subject, "from": "2025-03-03T00:00:00Z", "to": "2025-03-09T00:00:00Z"}
    response = api.get("/api/v1/reports/curfew-presence", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    nights = {n["night"]: n for n in body["nights"]}
    assert sorted(nights) == [f"2025-03-0{d}" for d in range(3, 9)]
    assert nights["2025-03-03"]["presence"] == "consistent"
    assert nights["2025-03-03"]["overlapping_fixes"] == 4
    assert nights["2025-03-04"]["presence"] == "verified"
    assert nights["2025-03-04"]["inside_fixes"] == 1
    assert nights["2025-03-05"]["presence"] == "unverified"
    assert nights["2025-03-05"]["fixes"] == 0
    assert nights["2025-03-06"]["presence"] == "verified"
    assert nights["2025-03-06"]["beacon"] is True
    for forged in ("2025-03-07", "2025-03-08"):
        assert nights[forged]["presence"] == "unverified"
        assert nights[forged]["beacon"] is False
    assert body["home_beacon"] == "HB-0042"
    assert body["summary"] == {"verified": 2, "consistent": 1, "unverified": 3}

    csv_body = api.get(
        "/api/v1/reports/curfew-presence", params={**params, "format": "csv"}, headers=headers
    )
    rows = list(csv.DictReader(io.StringIO(csv_body.text)))
    assert [r["presence"] for r in rows] == [n["presence"] for n in body["nights"]]

    elsewhere = as_("supervisor", [fresh_id("rr-other")])
    hidden = api.get("/api/v1/reports/curfew-presence", params=params, headers=elsewhere)
    assert hidden.status_code == 404


def test_curfew_presence_input_is_checked(api, as_):
    headers = as_("admin", ["*"])
    path = "/api/v1/reports/curfew-presence"
    for params, reason in (
        ({"from": "2025-03-02T00:00:00Z", "to": "2025-03-01T00:00:00Z"}, "empty_window"),
        ({"from": "2025-01-01T00:00:00Z", "to": "2025-06-01T00:00:00Z"}, "window_too_long"),
        ({"from": "0001-01-01T00:00:00Z", "to": "0001-01-05T00:00:00Z"}, "window_out_of_range"),
        ({"from": "9999-12-20T00:00:00Z", "to": "9999-12-31T00:00:00Z"}, "window_out_of_range"),
    ):
        response = api.get(path, params={"subject_id": 1, **params}, headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["detail"]["reason"] == reason
    unknown = {"subject_id": 2**62, "from": "2025-03-01T00:00:00Z", "to": "2025-03-02T00:00:00Z"}
    assert api.get(path, params=unknown, headers=headers).status_code == 404
