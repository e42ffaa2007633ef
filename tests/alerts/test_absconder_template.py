"""The absconder template's pure core (alerts/absconder_template.py): balances that always add up,
a roll-up that is the sum of its regions, months that chain (one month's closing balance is the
next one's opening), and balances checked against a second, event-sweep computation. A small
month worked by hand is in tests/api/test_absconder_template.py (through the database and API)."""

from __future__ import annotations

import calendar
import statistics
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagwatch.alerts.absconder_template import (
    CAUSES,
    OUTCOMES,
    ROWS,
    AbsconderCase,
    Period,
    RegionName,
    figures,
    template,
    value,
)

T0 = datetime(2026, 8, 1, tzinfo=UTC)
WINDOW_S = 200 * 86_400  # cases live between August 2026 and mid-February 2027
LONG_AGO_NOW = datetime(2030, 1, 1, tzinfo=UTC)  # every month of the window is over
REGIONS = [RegionName("r1", "One"), RegionName("r2", "Two")]
COUNTS = ("opening_balance", "new", "traced", "closed", "closing_balance")
MONTHS = ["2026-09", "2026-10", "2026-11", "2026-12", "2027-01"]
ZONES = ["UTC", "America/New_York", "Africa/Johannesburg", "Pacific/Auckland"]


@st.composite
def case(draw: st.DrawFn, case_id: int) -> AbsconderCase:
    opened = T0 + timedelta(seconds=draw(st.integers(0, WINDOW_S)))
    traced = outcome = closed = None
    if draw(st.booleans()):
        traced = opened + timedelta(seconds=draw(st.integers(0, 60 * 86_400)))
        outcome = draw(st.sampled_from(OUTCOMES))
        if draw(st.booleans()):
            closed = traced + timedelta(seconds=draw(st.integers(0, 20 * 86_400)))
    return AbsconderCase(
        case_id=case_id,
        region_id=draw(st.sampled_from(["r1", "r2", "r3"])),  # r3: nobody's region here
        cause=draw(st.sampled_from(CAUSES)),
        opened_at=opened,
        traced_at=traced,
        outcome=outcome,
        closed_at=closed,
    )


@st.composite
def cases(draw: st.DrawFn) -> list[AbsconderCase]:
    n = draw(st.integers(0, 40))
    return [draw(case(i)) for i in range(n)]


def outstanding_by_sweep(records: list[AbsconderCase], instant: datetime) -> int:
    """A second computation of a balance: walk the openings (+1) and tracings (-1) in time
    order and stop at the first event at or after ``instant``."""
    events = sorted(
        [(c.opened_at, 1) for c in records]
        + [(c.traced_at, -1) for c in records if c.traced_at is not None],
        key=lambda e: (e[0], -e[1]),  # a case opened and traced at once: open first
    )
    level = 0
    for at, step in events:
        if at >= instant:
            break
        level += step
    return level


@settings(max_examples=80, deadline=None)
@given(records=cases(), month=st.sampled_from(MONTHS), zone=st.sampled_from(ZONES))
def test_balances_add_up_and_the_roll_up_is_the_sum(records, month, zone):
    period = Period.month(month, zone, LONG_AGO_NOW)
    report = template(records, period, REGIONS, {"r1": 100, "r2": 0}, 90)
    columns = [*report["regions"], report["national"]]
    for column in columns:
        assert (
            column["opening_balance"] + column["new"] - column["traced"]
            == (column["closing_balance"])
        )
        assert sum(column["new_by_cause"].values()) == column["new"]
        assert sum(column["traced_by_outcome"].values()) == column["traced"]
        assert all(column[k] >= 0 for k in COUNTS)
        daily = column["daily"]
        assert len(daily) == calendar.monthrange(*map(int, month.split("-")))[1]
        assert sum(d["new"] for d in daily) == column["new"]
        assert sum(d["traced"] for d in daily) == column["traced"]
        assert daily[-1]["outstanding"] == column["closing_balance"]
        if column["traced"] == 0:
            assert column["days_at_large_median"] is None is column["days_at_large_mean"]
        if column["closing_balance"] == 0:
            assert column["days_outstanding_median"] is None
    national = report["national"]
    for key in COUNTS:
        assert national[key] == sum(r[key] for r in report["regions"]), key
    for key in CAUSES:
        assert national["new_by_cause"][key] == sum(r["new_by_cause"][key] for r in columns[:-1])
    assert report["regions"][1]["absconding_rate_per_1000"] is None  # nobody monitored in r2
    r1 = report["regions"][0]
    assert r1["absconding_rate_per_1000"] == round(r1["new"] * 1000 / 100, 2)
    assert national["absconding_rate_per_1000"] == round(national["new"] * 1000 / 90, 2)
    assert national["regions_included"] == ["r1", "r2"]


@settings(max_examples=80, deadline=None)
@given(records=cases(), month=st.sampled_from(MONTHS), zone=st.sampled_from(ZONES))
def test_balances_match_an_event_sweep_and_days_are_what_was_traced(records, month, zone):
    period = Period.month(month, zone, LONG_AGO_NOW)
    mine = [c for c in records if c.region_id == "r1"]
    found = figures(mine, period, 10)
    assert found.opening_balance == outstanding_by_sweep(mine, period.start)
    assert found.closing_balance == outstanding_by_sweep(mine, period.end)
    spells = [
        (c.traced_at - c.opened_at).total_seconds() / 86_400
        for c in mine
        if c.traced_at is not None and period.start <= c.traced_at < period.end
    ]
    if spells:
        assert found.days_at_large_median == pytest.approx(statistics.median(spells), abs=1e-3)
        assert found.days_at_large_mean == pytest.approx(sum(spells) / len(spells), abs=1e-3)
    ages = [(period.end - c.opened_at).total_seconds() / 86_400 for c in mine
            if c.outstanding_at(period.end)]  # fmt: skip
    if ages:
        assert found.days_outstanding_mean == pytest.approx(statistics.fmean(ages), abs=1e-3)


@settings(max_examples=60, deadline=None)
@given(records=cases(), index=st.integers(0, len(MONTHS) - 2), zone=st.sampled_from(ZONES))
def test_one_months_closing_balance_is_the_next_months_opening(records, index, zone):
    this = figures(records, Period.month(MONTHS[index], zone, LONG_AGO_NOW), 0)
    following = figures(records, Period.month(MONTHS[index + 1], zone, LONG_AGO_NOW), 0)
    assert this.closing_balance == following.opening_balance


@settings(max_examples=60, deadline=None)
@given(records=cases(), offset_s=st.integers(-86_400, 40 * 86_400))
def test_a_month_not_over_counts_up_to_now(records, offset_s):
    """Figures so far: balances up to now, and still adding up."""
    now = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=offset_s)
    period = Period.month("2026-11", "UTC", now)
    assert period.as_of == max(period.start, min(period.end, now))
    assert period.complete is (now >= period.end)
    found = figures(records, period, 0)
    assert found.opening_balance + found.new - found.traced == found.closing_balance
    assert found.closing_balance == outstanding_by_sweep(records, period.as_of)
    assert found.new == sum(period.start <= c.opened_at < period.as_of for c in records)
    assert len(found.daily) == len(period.days())


def test_month_bounds_in_a_time_zone():
    period = Period.month("2026-11", "Africa/Johannesburg", LONG_AGO_NOW)
    assert period.start == datetime(2026, 10, 31, 22, tzinfo=UTC)
    assert period.end == datetime(2026, 11, 30, 22, tzinfo=UTC)
    assert len(period.days()) == 30
    # New York leaves daylight saving time on 1 November 2026: the month is an hour longer
    ny = Period.month("2026-11", "America/New_York", LONG_AGO_NOW)
    assert ny.end - ny.start == timedelta(days=30, hours=1)
    assert Period.month("2026-12", "UTC", LONG_AGO_NOW).end == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"cause": "bored"}, "unknown cause"),
        ({"traced_at": datetime(2026, 11, 2, tzinfo=UTC)}, "go together"),
        ({"traced_at": datetime(2026, 10, 1, tzinfo=UTC), "outcome": "arrested"}, "before it"),
        ({"closed_at": datetime(2026, 11, 9, tzinfo=UTC)}, "closed before"),
        ({"opened_at": datetime(2026, 11, 1)}, "no time zone"),  # noqa: DTZ001
    ],
)
def test_records_the_table_would_refuse_are_refused(changes, reason):
    base = {
        "case_id": 1,
        "region_id": "r1",
        "cause": "silence",
        "opened_at": datetime(2026, 11, 1, tzinfo=UTC),
    }
    with pytest.raises(ValueError, match=reason):
        AbsconderCase(**{**base, **changes})


def test_every_row_of_the_template_names_a_figure():
    column = figures([], Period.month("2026-11", "UTC", LONG_AGO_NOW), 0).as_dict()
    for key, label in ROWS:
        assert label
        outer = key.split(".")[0]
        assert outer in column, key
        assert value(column, key) is not None or key.startswith(("days_", "absconding"))
