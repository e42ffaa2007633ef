"""The department's absconder reporting template for one month, computed from case records:
per region and a national roll-up. Pure: records in, figures out; no database, no clock (the
caller passes ``now``), no I/O. store/absconder_reports.py reads the records, the API and the
CLI present the figures (JSON, CSV, PDF).

Definitions (docs/api.md "The absconder reporting template" repeats them):

* **Month**: from midnight on its first day to midnight on the next month's first day in one
  time zone for every region (``TAGWATCH_ABSCONDER_REPORT_TIMEZONE``, UTC unless set): a
  national roll-up is a sum over regions only when every region's month has the same bounds.
  A month not over yet is counted up to ``as_of`` = now ("figures so far"); a month that has
  not begun has ``as_of`` = its start (all zeros).
* A case is **outstanding at** an instant t when it opened before t and was not traced before
  t: ``opened_at < t`` and (``traced_at`` is none or ``traced_at >= t``). A subject is at large
  from the case's opening until it is traced; ``closed`` (the paperwork) does not change that.
* **Opening balance**: outstanding at the month's start. **Closing balance**: outstanding at
  ``as_of`` (the month's end once it is over). Always
  ``opening + new - traced = closing`` (each case that is outstanding at the start or opens
  in the month is either traced in the month or outstanding at its end).
* **New**: opened in [start, as_of), by cause (strap_tamper, silence, inclusion_exit,
  declared). **Traced**: traced in [start, as_of), by outcome (returned_to_supervision,
  arrested, deceased, other), wherever they opened. **Closed**: closed in [start, as_of).
* **Days at large** (median and mean): of the cases traced in the month, ``traced_at -
  opened_at`` in days (86,400 s). Completed spells only: this is how long tracing took, the
  figure a tracing unit is judged by; averaging in cases still running would mix unfinished
  spells with finished ones (and fall when the backlog grows). None when nothing was traced.
  The backlog has its own figure, **days outstanding** (median and mean): for the cases in
  the closing balance, ``as_of - opened_at`` in days (how long those still at large have been).
  The national figures pool the cases of every region (a median of all cases, not of medians).
* **Monitored subjects**: subjects holding an offender device at any moment of the month while
  in the region (store/absconder_reports.py counts them). **Absconding rate** per 1,000
  monitored subjects: ``new * 1000 / monitored`` (None with no one monitored). Nationally the
  monitored are counted once each, even if a subject moved between regions in the month.
* A case counts for its whole life in ``region_id``, its subject's home region when it opened.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

CAUSES = ("strap_tamper", "silence", "inclusion_exit", "declared")
OUTCOMES = ("returned_to_supervision", "arrested", "deceased", "other")
DAY_S = 86_400.0


@dataclass(frozen=True)
class AbsconderCase:
    """What the template needs of a case (a row of ``absconder_cases``)."""

    case_id: int
    region_id: str
    cause: str
    opened_at: datetime
    traced_at: datetime | None = None
    outcome: str | None = None
    closed_at: datetime | None = None

    def __post_init__(self) -> None:
        """The table's own checks (migration 0022), so that figures from a record the database
        would refuse are an error here too, never a silently wrong balance."""
        if self.cause not in CAUSES:
            raise ValueError(f"case {self.case_id}: unknown cause {self.cause!r}")
        if (self.traced_at is None) != (self.outcome is None):
            raise ValueError(f"case {self.case_id}: traced_at and outcome go together")
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise ValueError(f"case {self.case_id}: unknown outcome {self.outcome!r}")
        if self.traced_at is not None and self.traced_at < self.opened_at:
            raise ValueError(f"case {self.case_id}: traced before it opened")
        if self.closed_at is not None and (
            self.traced_at is None or self.closed_at < self.traced_at
        ):
            raise ValueError(f"case {self.case_id}: closed before it was traced")
        for name in ("opened_at", "traced_at", "closed_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"case {self.case_id}: {name} has no time zone")

    def outstanding_at(self, instant: datetime) -> bool:
        return self.opened_at < instant and (self.traced_at is None or self.traced_at >= instant)


@dataclass(frozen=True)
class Period:
    """A calendar month in a time zone: its UTC bounds, and how far it is counted."""

    label: str
    timezone: str
    start: datetime
    end: datetime
    as_of: datetime

    @classmethod
    def month(cls, label: str, timezone: str, now: datetime) -> Period:
        """``label`` is YYYY-MM; ``now`` bounds a month not over yet."""
        year, number = (int(part) for part in label.split("-"))
        first = date(year, number, 1)
        following = date(year + (number == 12), number % 12 + 1, 1)
        zone = ZoneInfo(timezone)
        start = datetime.combine(first, time.min, zone).astimezone(UTC)
        end = datetime.combine(following, time.min, zone).astimezone(UTC)
        return cls(f"{year:04d}-{number:02d}", timezone, start, end, max(start, min(end, now)))

    @property
    def complete(self) -> bool:
        return self.as_of >= self.end

    def days(self) -> list[tuple[date, datetime, datetime]]:
        """(local date, UTC start, UTC end) of each day of the month that began before as_of;
        the last one is cut at as_of."""
        zone = ZoneInfo(self.timezone)
        out = []
        day = self.start.astimezone(zone).date()
        while True:
            begin = datetime.combine(day, time.min, zone).astimezone(UTC)
            if begin >= self.as_of:
                break
            finish = datetime.combine(day + timedelta(days=1), time.min, zone).astimezone(UTC)
            out.append((day, begin, min(finish, self.as_of)))
            day += timedelta(days=1)
        return out


@dataclass(frozen=True)
class Figures:
    """One column of the template: a region, or the national roll-up."""

    opening_balance: int
    new: int
    new_by_cause: dict[str, int]
    traced: int
    traced_by_outcome: dict[str, int]
    closed: int
    closing_balance: int
    days_at_large_median: float | None
    days_at_large_mean: float | None
    days_outstanding_median: float | None
    days_outstanding_mean: float | None
    monitored_subjects: int
    absconding_rate_per_1000: float | None
    daily: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "opening_balance": self.opening_balance,
            "new": self.new,
            "new_by_cause": dict(self.new_by_cause),
            "traced": self.traced,
            "traced_by_outcome": dict(self.traced_by_outcome),
            "closed": self.closed,
            "closing_balance": self.closing_balance,
            "days_at_large_median": self.days_at_large_median,
            "days_at_large_mean": self.days_at_large_mean,
            "days_outstanding_median": self.days_outstanding_median,
            "days_outstanding_mean": self.days_outstanding_mean,
            "monitored_subjects": self.monitored_subjects,
            "absconding_rate_per_1000": self.absconding_rate_per_1000,
            "daily": [dict(d) for d in self.daily],
        }


def _within(instant: datetime | None, start: datetime, stop: datetime) -> bool:
    return instant is not None and start <= instant < stop


def _days(seconds: Iterable[float]) -> tuple[float | None, float | None]:
    values = [s / DAY_S for s in seconds]
    if not values:
        return None, None
    return round(statistics.median(values), 3), round(statistics.fmean(values), 3)


def figures(cases: Sequence[AbsconderCase], period: Period, monitored: int) -> Figures:
    """The template's figures of ``cases`` (all of one region, or all of the roll-up's)."""
    start, stop = period.start, period.as_of
    new = [c for c in cases if _within(c.opened_at, start, stop)]
    traced = [c for c in cases if _within(c.traced_at, start, stop)]
    at_close = [c for c in cases if c.outstanding_at(stop)]
    at_large = _days((c.traced_at - c.opened_at).total_seconds() for c in traced if c.traced_at)
    outstanding = _days((stop - c.opened_at).total_seconds() for c in at_close)
    daily = [
        {
            "date": day.isoformat(),
            "new": sum(_within(c.opened_at, begin, finish) for c in new),
            "traced": sum(_within(c.traced_at, begin, finish) for c in traced),
            "outstanding": sum(c.outstanding_at(finish) for c in cases),
        }
        for day, begin, finish in period.days()
    ]
    return Figures(
        opening_balance=sum(c.outstanding_at(start) for c in cases),
        new=len(new),
        new_by_cause={k: sum(c.cause == k for c in new) for k in CAUSES},
        traced=len(traced),
        traced_by_outcome={k: sum(c.outcome == k for c in traced) for k in OUTCOMES},
        closed=sum(_within(c.closed_at, start, stop) for c in cases),
        closing_balance=len(at_close),
        days_at_large_median=at_large[0],
        days_at_large_mean=at_large[1],
        days_outstanding_median=outstanding[0],
        days_outstanding_mean=outstanding[1],
        monitored_subjects=monitored,
        absconding_rate_per_1000=round(len(new) * 1000 / monitored, 2) if monitored else None,
        daily=daily,
    )


@dataclass(frozen=True)
class RegionName:
    region_id: str
    name: str


def template(
    cases: Iterable[AbsconderCase],
    period: Period,
    regions: Sequence[RegionName],
    monitored: Mapping[str, int],
    national_monitored: int,
    *,
    national_scope: str = "regions shown",
) -> dict[str, Any]:
    """The template of ``regions`` (in that order; every one gets a column, cases or not) and
    their national roll-up; cases of any other region are left out. ``monitored`` gives each
    region's monitored subjects, ``national_monitored`` the distinct ones over all of them."""
    wanted = {r.region_id for r in regions}
    by_region: dict[str, list[AbsconderCase]] = {r.region_id: [] for r in regions}
    for case in cases:
        if case.region_id in wanted:
            by_region[case.region_id].append(case)
    pooled = [c for r in regions for c in by_region[r.region_id]]
    return {
        "month": period.label,
        "timezone": period.timezone,
        "period_start": period.start,
        "period_end": period.end,
        "as_of": period.as_of,
        "complete": period.complete,
        "regions": [
            {
                "region": r.region_id,
                "name": r.name,
                **figures(by_region[r.region_id], period, monitored.get(r.region_id, 0)).as_dict(),
            }
            for r in regions
        ],
        "national": {
            "region": None,
            "name": "National",
            "scope": national_scope,
            "regions_included": [r.region_id for r in regions],
            **figures(pooled, period, national_monitored).as_dict(),
        },
    }


# The template's rows, in the department's order: (key in the figures, label).
ROWS: tuple[tuple[str, str], ...] = (
    ("opening_balance", "Opening balance (outstanding at month start)"),
    ("new", "New absconders"),
    *((f"new_by_cause.{k}", f"  new: {k.replace('_', ' ')}") for k in CAUSES),
    ("traced", "Traced"),
    *((f"traced_by_outcome.{k}", f"  traced: {k.replace('_', ' ')}") for k in OUTCOMES),
    ("closed", "Cases closed"),
    ("closing_balance", "Closing balance (outstanding at month end)"),
    ("days_at_large_median", "Days at large, median (traced in month)"),
    ("days_at_large_mean", "Days at large, mean (traced in month)"),
    ("days_outstanding_median", "Days outstanding, median (closing balance)"),
    ("days_outstanding_mean", "Days outstanding, mean (closing balance)"),
    ("monitored_subjects", "Monitored subjects"),
    ("absconding_rate_per_1000", "Absconding rate per 1,000 monitored"),
)


def value(column: Mapping[str, Any], key: str) -> Any:
    """A figure of a column by its row key (``new_by_cause.silence``)."""
    outer, _, inner = key.partition(".")
    found = column.get(outer)
    return found.get(inner) if inner and isinstance(found, Mapping) else found
