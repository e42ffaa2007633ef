"""The simulated absconder month (simulators/absconder_month.py): the same seed gives the same
rows; every case lies within its subject's holding of the tag and is a case the table accepts;
written through store/ it is written once, and the template over it adds up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import AsyncConnection

from tagwatch.alerts.absconder_template import AbsconderCase, Period
from tagwatch.cli.report import markdown
from tagwatch.simulators.absconder_month import simulate_month
from tagwatch.store.absconder_reports import monthly_template, write_demo_month
from tests.support import fresh_id


def test_the_same_seed_gives_the_same_month_and_the_cases_are_sound():
    first, again = simulate_month("2026-11"), simulate_month("2026-11")
    assert first == again
    assert simulate_month("2026-11", seed=17).cases != first.cases
    assert len({c.subject for c in first.cases}) == len(first.cases)  # one case per subject
    end = datetime(2026, 12, 1, tzinfo=UTC)
    for number, case in enumerate(first.cases):
        subject = first.subjects[case.subject]
        assert subject.held_from <= case.opened_at < (subject.held_until or end)
        record = AbsconderCase(
            number, subject.region_id, case.cause, case.opened_at, case.traced_at,
            case.outcome, case.closed_at,
        )  # fmt: skip
        assert all(t is None or t < end for t in (record.traced_at, record.closed_at))
    november = [c for c in first.cases if c.opened_at >= datetime(2026, 11, 1, tzinfo=UTC)]
    assert 20 <= len(november) <= 90, len(november)


@pytest.mark.integration
def test_written_once_and_the_template_adds_up(settings):
    prefix = fresh_id("simt")
    sim = simulate_month("2026-11", prefix=prefix, scale=0.1)  # 309 subjects: a fast write
    rows = (
        [(r.region_id, r.name) for r in sim.regions],
        [(s.name, s.case_ref, s.region_id, s.device_id, s.held_from, s.held_until)
         for s in sim.subjects],
        [(c.subject, c.cause, c.opened_at, c.traced_at, c.outcome, c.closed_at)
         for c in sim.cases],
    )  # fmt: skip
    with psycopg.connect(settings.database_url) as conn:
        assert write_demo_month(conn, *rows) is True
        assert write_demo_month(conn, *rows) is False

    async def read() -> dict:
        period = Period.month("2026-11", "UTC", datetime(2027, 1, 1, tzinfo=UTC))
        async with await AsyncConnection.connect(settings.database_url) as conn:
            regions = [r.region_id for r in sim.regions]
            found = await monthly_template(conn, period, regions)
        assert found is not None
        return found

    template = asyncio.run(read())
    national = template["national"]
    assert national["new"] + national["opening_balance"] > 0
    assert (
        national["opening_balance"] + national["new"] - national["traced"]
        == (national["closing_balance"])
    )
    assert 250 < national["monitored_subjects"] <= len(sim.subjects)
    table = markdown(template)
    assert table.count("\n") == 2 + 19 and "| National |" in table.splitlines()[0]
