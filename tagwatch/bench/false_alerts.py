"""`tagwatch bench false-alerts`: false alerts per subject-day on a compliant population.

The field's figure is about 1.25 alerts per supervisee per day, most of them not violations
(FIELD.md); issue 14's target is at most 0.02 false alerts per subject-day where the field gets
the most (curfews in small homes, drift indoors at night, signal loss). The population
(`simulators/population.py`) is a thousand ordinary weeks nobody tuned the rules on, and nobody
in it violates anything, so every alert is false.

**Engine only** (default): each cohort's timeline is replayed through the real `AlertEngine`
over the in-memory repository, in arrival order and ingest's batches, with the clock rules
ticking in between: `offline_scoring.replay`, what `tagwatch score-offline` runs. The naive
tracker (`scoring.naive_alerts`) runs on the same decoded traces. Both are scored by
`scoring.score_run` against the cohort's `[[forbid]] alerts = "*"`. One cohort's traces are
held at a time, so memory stays flat however many subjects.

**--pipeline**: the same population (by default a small one) played through the real broker,
ingest and database by the scenario runner (`runner.play_runs`, on private services), scored
from the alerts table; the engine-only figure for the very same timelines is printed beside it,
so a difference is the pipeline's (batching, lateness, clock rules on the rule clock), not the
population's.

The noise model is one argument (`timeline`): "gaussian" is the device model as it stands; a
heavy-tailed model is passed through to `build_timeline` where the branch has it.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import psycopg

from tagwatch.bench.harness import Child, private_services
from tagwatch.settings import Settings
from tagwatch.simulators import noise_models
from tagwatch.simulators.offline_scoring import replay
from tagwatch.simulators.population import (
    COHORT_SIZE,
    DEVICE_CLASSES,
    Cohort,
    Member,
    population,
)
from tagwatch.simulators.runner import default_date, play_runs, raised_alerts, run_ids
from tagwatch.simulators.scenario import Scenario, ScenarioRun, build_timeline
from tagwatch.simulators.scoring import RaisedAlert, naive_alerts, score_run
from tagwatch.simulators.wire import read_trace

NOISE_MODELS = tuple(noise_models.NOISE_MODELS)
TARGET_PER_SUBJECT_DAY = 0.02  # issue 14
FIELD_PER_SUBJECT_DAY = 1.25  # FIELD.md: US programmes, alerts per supervisee per day
RUN_ID = "pop"


def timeline(
    scenario: Scenario, run_id: str, noise_model: str = "gaussian", on_date: date | None = None
) -> ScenarioRun:
    """The one place the noise model is chosen (simulators.noise_models)."""
    return build_timeline(scenario, run_id, on_date=on_date, noise_model=noise_model)


@dataclass
class Tally:
    """Figures for one noise model (and one way of running the engine)."""

    noise: str
    subjects: int = 0
    subject_days: float = 0.0
    fixes: int = 0
    engine: Counter[str] = field(default_factory=Counter)  # false alerts by type
    naive: Counter[str] = field(default_factory=Counter)
    engine_by_device: Counter[str] = field(default_factory=Counter)
    subjects_by_device: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # per stage

    def per_day(self, count: float) -> float:
        return count / self.subject_days if self.subject_days else 0.0

    @property
    def engine_total(self) -> int:
        return sum(self.engine.values())

    @property
    def naive_total(self) -> int:
        return sum(self.naive.values())


def _member_of(run: ScenarioRun, members: Sequence[Member]) -> dict[str, Member]:
    """Subject references as the engine (ids "1".."n" in plan order) and the naive tracker
    (scenario keys) report them, to the population's member."""
    by_key = {m.key: m for m in members}
    out = dict(by_key)
    for number, subject in enumerate(run.plan.subjects, start=1):
        out[str(number)] = by_key[subject.key]
    return out


def false_alerts(run: ScenarioRun, raised: Iterable[RaisedAlert]) -> list[RaisedAlert]:
    """What the scorer calls false on the run: here, everything (nothing is expected)."""
    ids = {str(i + 1): s.key for i, s in enumerate(run.plan.subjects)}
    return list(score_run(run, raised, subject_ids=ids).false)


def score_cohort(tally: Tally, cohort: Cohort, run: ScenarioRun, days: float) -> None:
    """Replay one cohort's timeline through the engine and the naive tracker, and count."""
    members = _member_of(run, cohort.members)
    t0 = time.perf_counter()
    engine = false_alerts(run, replay(run))
    t1 = time.perf_counter()
    naive = false_alerts(run, naive_alerts(run))
    t2 = time.perf_counter()
    fixes, _ = read_trace(run.publications)
    tally.seconds["engine"] += t1 - t0
    tally.seconds["naive"] += t2 - t1
    tally.subjects += len(cohort.members)
    tally.subject_days += len(cohort.members) * days
    tally.fixes += len(fixes)
    tally.subjects_by_device.update(m.device for m in cohort.members)
    tally.engine.update(a.type for a in engine)
    tally.naive.update(a.type for a in naive)
    tally.engine_by_device.update(members[a.subject].device for a in engine)


def run_engine(
    subjects: int,
    days: float,
    seed: int,
    noise: str,
    *,
    cohort_size: int = COHORT_SIZE,
    progress_every: int = 100,
    echo: Callable[[str], object] = print,
) -> Tally:
    """The engine-only benchmark for one noise model."""
    tally = Tally(noise)
    started = time.perf_counter()
    next_report = progress_every
    for cohort in population(subjects, days, seed, cohort_size):
        t0 = time.perf_counter()
        run = timeline(cohort.scenario, RUN_ID, noise)
        tally.seconds["timeline"] += time.perf_counter() - t0
        score_cohort(tally, cohort, run, days)
        if tally.subjects >= next_report or tally.subjects == subjects:
            next_report = (tally.subjects // progress_every + 1) * progress_every
            echo(
                f"  [{noise}] {tally.subjects:,}/{subjects:,} subjects, {tally.fixes:,} fixes:"
                f" engine {tally.engine_total:,} false"
                f" ({tally.per_day(tally.engine_total):.4f}/subject-day),"
                f" naive {tally.naive_total:,} ({tally.per_day(tally.naive_total):.2f});"
                f" {time.perf_counter() - started:.0f} s"
            )
    return tally


def table(tallies: Sequence[Tally], label: str = "engine") -> list[str]:
    """The figures: per noise model, false alerts by type, total and per subject-day, beside
    the naive tracker's on the same traces; then the engine's by device class."""
    lines: list[str] = []
    for t in tallies:
        lines.append(
            f"noise {t.noise}: {t.subjects:,} subjects, {t.subject_days:,.0f} subject-days,"
            f" {t.fixes:,} fixes"
        )
        head = ["alert type", label, "per subj-day", "naive", "per subj-day"]
        rows: list[list[str]] = []
        for kind in sorted(set(t.engine) | set(t.naive)):
            e, n = t.engine[kind], t.naive[kind]
            rows.append([kind, f"{e:,}", f"{t.per_day(e):.4f}", f"{n:,}", f"{t.per_day(n):.3f}"])
        e, n = t.engine_total, t.naive_total
        rows.append(["total", f"{e:,}", f"{t.per_day(e):.4f}", f"{n:,}", f"{t.per_day(n):.3f}"])
        lines += _columns(head, rows)
        parts = []
        for device in DEVICE_CLASSES:
            count = t.subjects_by_device[device]
            if count:
                days = t.subject_days * count / t.subjects
                rate = t.engine_by_device[device] / days if days else 0.0
                parts.append(f"{device} {t.engine_by_device[device]} ({rate:.4f}, {count} subj)")
        lines.append(f"{label} false alerts by device: " + ", ".join(parts))
        verdict = "met" if t.per_day(e) <= TARGET_PER_SUBJECT_DAY else "NOT met"
        lines.append(
            f"false alerts per subject-day: {label} {t.per_day(e):.4f}, naive {t.per_day(n):.3f}"
            f" (field ~{FIELD_PER_SUBJECT_DAY}; target <= {TARGET_PER_SUBJECT_DAY}: {verdict})"
        )
        if t.seconds:
            spent = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(t.seconds.items()))
            lines.append(f"time: {spent}")
        lines.append("")
    return lines


def _columns(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [head, *rows]
    ]


def run_benchmark(
    subjects: int = 1000,
    days: float = 7.0,
    seed: int = 1,
    noise: str = "gaussian",
    *,
    cohort_size: int = COHORT_SIZE,
    progress_every: int = 100,
    echo: Callable[[str], object] = print,
) -> list[Tally]:
    """Engine only, for `noise` ("gaussian", "heavy" or "both"); prints the table."""
    models = list(NOISE_MODELS) if noise == "both" else [noise]
    echo(
        f"compliant population: {subjects:,} subjects x {days:g} days (seed {seed});"
        f" the real alert engine over the in-memory repository; every alert is false"
    )
    tallies = []
    for model in models:
        tallies.append(
            run_engine(
                subjects,
                days,
                seed,
                model,
                cohort_size=cohort_size,
                progress_every=progress_every,
                echo=echo,
            )
        )
    for line in table(tallies):
        echo(line)
    return tallies


# -- through the real broker and database ------------------------------------------------------


@dataclass
class PipelineResult:
    pipeline: Tally
    engine: Tally


def run_pipeline(
    settings: Settings,
    subjects: int = 20,
    days: float = 1.0,
    seed: int = 1,
    noise: str = "gaussian",
    *,
    speedup: float = 720.0,
    manifest_path: Path,
    echo: Callable[[str], object] = print,
) -> PipelineResult:
    """Play the population through a running platform (ingest must be running on `settings`),
    then count what the alerts table holds for its subjects, beside the engine-only replay of
    the very same timelines (same date, same ids, same noise)."""
    cohorts = list(population(subjects, days, seed))
    if len(cohorts) > 99:  # run ids are <run><two digits>
        raise ValueError("the pipeline plays at most 99 cohorts")
    day = default_date([days * 86400.0])
    run_id = secrets.token_hex(3)
    runs = [
        timeline(c.scenario, rid, noise, on_date=day)
        for c, rid in zip(cohorts, run_ids(run_id, len(cohorts)), strict=True)
    ]
    manifest = play_runs(
        settings, runs, run_id, day, speedup=speedup, manifest_path=manifest_path, echo=echo
    )
    if not manifest.finished:
        raise RuntimeError("the pipeline run did not finish")
    piped, offline = Tally(noise), Tally(noise)
    with psycopg.connect(settings.database_url) as conn:
        for cohort, run in zip(cohorts, runs, strict=True):
            ids = manifest.subjects[run.scenario]
            raised = raised_alerts(conn, ids.values(), run.end.timestamp())
            by_id = {str(v): k for k, v in ids.items()}
            false = list(score_run(run, raised, subject_ids=by_id).false)
            naive = false_alerts(run, naive_alerts(run))
            members = {m.key: m for m in cohort.members}
            fixes, _ = read_trace(run.publications)
            piped.subjects += len(cohort.members)
            piped.subject_days += len(cohort.members) * days
            piped.fixes += len(fixes)
            piped.subjects_by_device.update(m.device for m in cohort.members)
            piped.engine.update(a.type for a in false)
            piped.naive.update(a.type for a in naive)
            piped.engine_by_device.update(members[by_id[a.subject]].device for a in false)
            score_cohort(offline, cohort, run, days)
    echo(
        f"stored {manifest.stored_fixes:,} of {manifest.expected_fixes:,} fixes;"
        f" published {manifest.published:,} messages"
    )
    for line in table([piped], label="pipeline") + table([offline], label="engine"):
        echo(line)
    return PipelineResult(piped, offline)


@contextmanager
def private_platform(directory: Path | None) -> Iterator[tuple[Settings, Path]]:
    """Mosquitto, PostgreSQL and `tagwatch ingest` on private ports in a temporary directory
    (or `directory`, kept), as `tagwatch bench alerts` runs them."""
    with private_services(directory, "tagwatch-bench-false-") as (base, env):
        log_dir = base / "bench-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        ingest: Child | None = None
        try:
            settings = Settings.for_services(env, environment="test")
            child_env = {
                **os.environ,
                **env,
                "TAGWATCH_ENVIRONMENT": "test",
                "TAGWATCH_INGEST_CLIENT_ID": f"tagwatch-bench-false-{secrets.token_hex(3)}",
            }
            child_env.pop("TAGWATCH_ENV_FILE", None)
            ingest = Child("ingest", ["tagwatch", "ingest"], child_env, log_dir)
            ingest.wait_for_log("subscribed to", 120)
            yield settings, base
        finally:
            if ingest is not None:
                ingest.stop()


def run_pipeline_benchmark(
    subjects: int = 20,
    days: float = 1.0,
    seed: int = 1,
    noise: str = "gaussian",
    *,
    speedup: float = 720.0,
    directory: Path | None = None,
    echo: Callable[[str], object] = print,
) -> list[PipelineResult]:
    models = list(NOISE_MODELS) if noise == "both" else [noise]
    where = f"kept in {directory}" if directory else "temporary"
    echo(f"starting private services ({where}) ...")
    results = []
    with private_platform(directory) as (settings, base):
        for model in models:
            echo(f"pipeline: {subjects} subjects x {days:g} days, noise {model}, x{speedup:g}")
            results.append(
                run_pipeline(
                    settings,
                    subjects,
                    days,
                    seed,
                    model,
                    speedup=speedup,
                    manifest_path=base / f"false-alerts-{model}.json",
                    echo=echo,
                )
            )
    return results
