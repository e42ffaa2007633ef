"""The SQL of the absconder reporting template (alerts/absconder_template.py computes it): the
regions a caller may report on, the cases that can count in a month, and the monitored subjects.

Every statement is scoped to the caller's regions in SQL (``regions`` None means every region),
as store/reports.py does: a region the caller may not see is never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection

from tagwatch.alerts.absconder_template import AbsconderCase, Period, RegionName, template

_SCOPE = "(%(regions)s::text[] IS NULL OR {column} = ANY(%(regions)s::text[]))"


async def template_regions(
    conn: AsyncConnection[Any], regions: Sequence[str] | None, only: str | None = None
) -> list[RegionName]:
    """The regions of the caller (``only``: that one, if it is the caller's), by id."""
    rows = await (
        await conn.execute(
            "SELECT id, name FROM regions WHERE "
            + _SCOPE.format(column="id")
            + " AND (%(only)s::text IS NULL OR id = %(only)s::text) ORDER BY id",
            {"regions": None if regions is None else list(regions), "only": only},
        )
    ).fetchall()
    return [RegionName(str(r[0]), str(r[1])) for r in rows]


async def month_cases(
    conn: AsyncConnection[Any], regions: Sequence[str], start: datetime, stop: datetime
) -> list[AbsconderCase]:
    """The cases of ``regions`` that can count in [start, stop): opened before ``stop`` and not
    traced and closed before ``start`` (a case traced before the month but closed in it still
    counts as closed in it)."""
    rows = await (
        await conn.execute(
            "SELECT id, region_id, cause, opened_at, traced_at, outcome, closed_at"
            " FROM absconder_cases WHERE region_id = ANY(%(regions)s::text[])"
            " AND opened_at < %(stop)s"
            " AND (traced_at IS NULL OR traced_at >= %(start)s"
            "      OR closed_at >= %(start)s)"
            " ORDER BY id",
            {"regions": list(regions), "start": start, "stop": stop},
        )
    ).fetchall()
    return [AbsconderCase(*row) for row in rows]


# Offender assignments and region stays that overlap each other within [start, stop).
_MONITORED = """
    SELECT r.region_id, a.subject_id FROM device_assignments a
    JOIN report_subject_regions r ON r.subject_id = a.subject_id
    WHERE a.role = 'offender' AND r.region_id = ANY(%(regions)s::text[])
      AND a.during && tstzrange(%(start)s, %(stop)s) AND r.during && tstzrange(%(start)s, %(stop)s)
      AND NOT isempty(a.during * r.during * tstzrange(%(start)s, %(stop)s))
"""


async def monitored_subjects(
    conn: AsyncConnection[Any], regions: Sequence[str], start: datetime, stop: datetime
) -> tuple[dict[str, int], int]:
    """Subjects who held an offender device while in the region at any moment of [start,
    stop): per region, and over all of ``regions`` counting each subject once."""
    params = {"regions": list(regions), "start": start, "stop": stop}
    if start >= stop:
        return dict.fromkeys(regions, 0), 0
    rows = await (
        await conn.execute(
            f"WITH m AS ({_MONITORED}) SELECT region_id, count(DISTINCT subject_id) FROM m"
            " GROUP BY region_id",
            params,
        )
    ).fetchall()
    per_region = dict.fromkeys(regions, 0)
    per_region.update({str(region): int(n) for region, n in rows})
    total = await (
        await conn.execute(
            f"WITH m AS ({_MONITORED}) SELECT count(DISTINCT subject_id) FROM m", params
        )
    ).fetchone()
    return per_region, int(total[0]) if total else 0


async def monthly_template(
    conn: AsyncConnection[Any],
    period: Period,
    regions: Sequence[str] | None,
    only: str | None = None,
    scope: str = "regions shown",
) -> dict[str, Any] | None:
    """The template (alerts.absconder_template.template) of the caller's regions (``only``:
    that one), read in one go for the API and the CLI; None when ``only`` is not the caller's
    region or does not exist (the same answer for both)."""
    shown = await template_regions(conn, regions, only)
    if only is not None and not shown:
        return None
    ids = [r.region_id for r in shown]
    cases = await month_cases(conn, ids, period.start, period.as_of)
    monitored, national = await monitored_subjects(conn, ids, period.start, period.as_of)
    return template(cases, period, shown, monitored, national, national_scope=scope)


# -- writing cases straight into the table: the simulated month and tests only -------------------


def insert_case_row(
    conn: psycopg.Connection[Any],
    subject_id: int,
    region_id: str,
    cause: str,
    opened_at: datetime,
    traced_at: datetime | None = None,
    outcome: str | None = None,
    closed_at: datetime | None = None,
) -> int:
    """One case row as it would stand after its life so far (status from the times). For the
    simulated month (`tagwatch report simulate-absconders`) and tests: the platform's own
    cases open from absconder alerts and change through the case API, which audits them."""
    status = "closed" if closed_at else "traced" if traced_at else "outstanding"
    row = conn.execute(
        "INSERT INTO absconder_cases (subject_id, region_id, cause, opened_at, status, outcome,"
        " traced_at, closed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (subject_id, region_id, cause, opened_at, status, outcome, traced_at, closed_at),
    ).fetchone()
    assert row is not None
    return int(row[0])


def write_demo_month(
    conn: psycopg.Connection[Any],
    regions: Sequence[tuple[str, str]],
    subjects: Sequence[tuple[str, str, str, str, datetime, datetime | None]],
    cases: Sequence[tuple[int, str, datetime, datetime | None, str | None, datetime | None]],
) -> bool:
    """A simulated month (simulators/absconder_month.py) in one transaction: ``regions`` (id,
    name), ``subjects`` (name, case_ref, region, tag id, held from, held until) each holding
    its tag as offender, and ``cases`` (subject index, cause, opened, traced, outcome,
    closed). False, writing nothing, when a subject's case_ref is already there (written
    before: the same seed gives the same rows)."""
    with conn.transaction():
        refs = [s[1] for s in subjects]
        taken = conn.execute(
            "SELECT count(*) FROM subjects WHERE case_ref = ANY(%s)", (refs,)
        ).fetchone()
        if taken and taken[0]:
            return False
        for region_id, name in regions:
            conn.execute(
                "INSERT INTO regions (id, name) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
                (region_id, name),
            )
        # a statement per table (thousands of subjects): unnest the columns
        names, case_refs, region_ids, devices, starts, ends = (
            list(c) for c in zip(*subjects, strict=True)
        )
        made = conn.execute(
            "INSERT INTO subjects (name, case_ref, region_id)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) RETURNING id, case_ref",
            (names, case_refs, region_ids),
        ).fetchall()
        by_ref = {str(ref): int(subject_id) for subject_id, ref in made}
        ids = [by_ref[ref] for ref in case_refs]
        conn.execute(
            "INSERT INTO devices (id, kind) SELECT unnest(%s::text[]), 'tag'"
            " ON CONFLICT (id) DO NOTHING",
            (devices,),
        )
        conn.execute(
            "INSERT INTO device_assignments (device_id, subject_id, role, during)"
            " SELECT d, s, 'offender', tstzrange(f, u) FROM"
            " unnest(%s::text[], %s::bigint[], %s::timestamptz[], %s::timestamptz[])"
            " AS t(d, s, f, u)",
            (devices, ids, starts, ends),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO absconder_cases (subject_id, region_id, cause, opened_at, status,"
                " outcome, traced_at, closed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        ids[subject],
                        region_ids[subject],
                        cause,
                        opened,
                        "closed" if closed else "traced" if traced else "outstanding",
                        outcome,
                        traced,
                        closed,
                    )
                    for subject, cause, opened, traced, outcome, closed in cases
                ],
            )
    return True
