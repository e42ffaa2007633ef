"""A simulated month of absconder cases, for the README's picture of the reporting template and
for demos: three regions with monitored subjects, and the cases they had over the months before
and during the month, from a seed (the same seed and month give the same rows).

Plain data only: `tagwatch report simulate-absconders` writes it through store/ (regions,
subjects holding tags, and cases as the case API would have left them), and the template is
then read the way the API reads it.

Why the numbers: a caseload of 600-1,400 subjects per region; in the field around one
supervisee in a hundred absconds in a month (strap cuts and going silent dominate, jurisdiction
exits and operators' declarations are rarer); most are traced within days (about 5 days median
here, a long tail of weeks), about one in eight is not traced for months; most return to
supervision or are arrested, a few end otherwise. Each subject absconds at most once in the
simulation, so no subject ever has two cases outstanding (the table allows one).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

REGIONS = (("north", "North"), ("central", "Central"), ("south", "South"))
SUBJECTS = (1400, 1050, 640)  # per region
RATE = (0.012, 0.009, 0.015)  # absconders per subject and month, per region
LOOKBACK_MONTHS = 6  # cases of the months before build the opening balance
CAUSE_WEIGHTS = {"strap_tamper": 35, "silence": 35, "inclusion_exit": 20, "declared": 10}
OUTCOME_WEIGHTS = {"returned_to_supervision": 55, "arrested": 35, "deceased": 2, "other": 8}
NEVER_TRACED = 0.12  # share not traced within the simulation
TRACE_MEDIAN_DAYS = 5.0


@dataclass(frozen=True)
class SimRegion:
    region_id: str
    name: str


@dataclass(frozen=True)
class SimSubject:
    name: str
    case_ref: str
    region_id: str
    device_id: str
    held_from: datetime
    held_until: datetime | None


@dataclass(frozen=True)
class SimCase:
    subject: int  # index into SimMonth.subjects
    cause: str
    opened_at: datetime
    traced_at: datetime | None
    outcome: str | None
    closed_at: datetime | None


@dataclass(frozen=True)
class SimMonth:
    month: str
    regions: list[SimRegion]
    subjects: list[SimSubject]
    cases: list[SimCase]


def _first_day(label: str, shift: int = 0) -> date:
    year, number = (int(p) for p in label.split("-"))
    index = year * 12 + number - 1 + shift
    return date(index // 12, index % 12 + 1, 1)


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def simulate_month(label: str, seed: int = 16, prefix: str = "sim", scale: float = 1.0) -> SimMonth:
    """The regions ``{prefix}-north`` etc., their subjects (``scale`` times SUBJECTS) and their
    cases up to the end of the month ``label`` (YYYY-MM, months in UTC)."""
    rng = random.Random(f"{seed}:{label}:{prefix}")
    begin = _at(_first_day(label, -LOOKBACK_MONTHS))
    end = _at(_first_day(label, 1))
    span = (end - begin).total_seconds()
    regions = [SimRegion(f"{prefix}-{key}", name) for key, name in REGIONS]
    subjects: list[SimSubject] = []
    cases: list[SimCase] = []
    for region, full, rate in zip(regions, SUBJECTS, RATE, strict=True):
        count = max(1, round(full * scale))
        first = len(subjects)
        for n in range(count):
            # most hold their tag since before the simulation; some start or end within it
            start = begin - timedelta(days=rng.randint(1, 400))
            if rng.random() < 0.15:
                start = begin + timedelta(seconds=rng.uniform(0, span))
            until = None
            if rng.random() < 0.08:
                until = start + timedelta(days=rng.uniform(20, 200))
            short = region.region_id
            subjects.append(
                SimSubject(
                    name=f"{region.name} subject {n + 1:03d}",
                    case_ref=f"{short}-{n + 1:03d}".upper(),
                    region_id=region.region_id,
                    device_id=f"{short}-tag-{n + 1:03d}",
                    held_from=start,
                    held_until=until,
                )
            )
        expected = count * rate * (LOOKBACK_MONTHS + 1)
        absconders = max(1, round(rng.gauss(expected, expected**0.5)))
        chosen = rng.sample(range(first, len(subjects)), k=min(absconders, count))
        for index in sorted(chosen):
            subject = subjects[index]
            earliest = max(begin, subject.held_from)
            latest = min(end, subject.held_until or end)
            if latest <= earliest:
                continue
            opened = earliest + timedelta(
                seconds=rng.uniform(0, (latest - earliest).total_seconds())
            )
            opened = opened.replace(microsecond=0)
            cause = rng.choices(list(CAUSE_WEIGHTS), weights=list(CAUSE_WEIGHTS.values()))[0]
            traced = outcome = closed = None
            if rng.random() >= NEVER_TRACED:
                days = rng.lognormvariate(0, 1.0) * TRACE_MEDIAN_DAYS
                candidate = opened + timedelta(days=days)
                if candidate < end:
                    traced = candidate.replace(microsecond=0)
                    outcome = rng.choices(
                        list(OUTCOME_WEIGHTS), weights=list(OUTCOME_WEIGHTS.values())
                    )[0]
                    paperwork = traced + timedelta(days=rng.uniform(0.5, 15))
                    closed = paperwork.replace(microsecond=0) if paperwork < end else None
            cases.append(SimCase(index, cause, opened, traced, outcome, closed))
    return SimMonth(label, regions, subjects, cases)
