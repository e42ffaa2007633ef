"""One engine, two repositories: over the whole scenario library, the alert engine raises the
same alerts at the same times whether its repository is the in-memory one (`score-offline`) or
PostgreSQL (ingest). Each scenario's timeline is fed to the engine directly, batch by batch with
the clock ticking in between (`simulators/offline_scoring.steps`), once per repository; the
PostgreSQL side stores the batch's fixes and events first, in the same transaction, as ingest's
writer does."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from tagwatch.alerts.engine import AlertEngine
from tagwatch.ingest.decode import engine_events, engine_fixes
from tagwatch.simulators.offline_scoring import provision, raised, steps
from tagwatch.simulators.runner import provision_holdings
from tagwatch.simulators.scenario import ScenarioRun, build_timeline, load_library
from tagwatch.simulators.scoring import RaisedAlert
from tagwatch.store.devices import register_device
from tagwatch.store.engine_repository import PgEngineRepository
from tagwatch.store.subjects import add_subject, approve_home_beacon, ensure_region

pytestmark = pytest.mark.integration


class ReplayRepository(PgEngineRepository):
    """PostgreSQL with the replay's clock (the rule_clock row is shared with other tests)."""

    now = 0.0

    def clock_and_speed(self) -> tuple[float, float]:
        return self.now, 1.0


def _provision_pg(conn: psycopg.Connection, run: ScenarioRun) -> dict[int, str]:
    """The plan as `simulators/runner.provision` writes it (without broker accounts); the
    subject ids back to the scenario's keys."""
    plan = run.plan
    group = f"scenario-{run.run_id}"
    ids: dict[str, int] = {}
    with conn.transaction():
        for region in plan.regions:
            ensure_region(conn, region.id, region.name)
        for s in plan.subjects:
            ids[s.key] = add_subject(
                conn,
                name=s.display_name,
                case_ref=s.case_ref,
                region_id=s.region_id,
                timezone=s.timezone,
                groups=[group],
            )
            if s.home_beacon is not None:
                approve_home_beacon(conn, ids[s.key], s.home_beacon, "scenario-runner")
        for d in plan.devices:
            register_device(conn, d.device_id, d.kind, d.owntracks_topic, d.expected_interval_s)
        provision_holdings(conn, run, ids)
    return {sid: key for key, sid in ids.items()}


def _pg_alerts(conn: psycopg.Connection, keys: dict[int, str]) -> list[RaisedAlert]:
    return [
        RaisedAlert(t, keys[sid], opened, late=late, first_fix_at=first, alert_id=str(i))
        for i, t, sid, opened, late, first in conn.execute(
            "SELECT id, type, subject_id, opened_at, late, first_fix_at FROM alerts"
            " WHERE subject_id = ANY(%s) ORDER BY id",
            (list(keys),),
        )
    ]


def _comparable(alerts: list[RaisedAlert]) -> list[tuple[object, ...]]:
    """What must agree: type, subject, when opened and from which fix (to the millisecond: the
    database keeps microseconds), late or not."""

    def ms(at: datetime | None) -> int | None:
        return None if at is None else round(at.astimezone(UTC).timestamp() * 1000)

    return sorted((a.type, a.subject, ms(a.opened_at), ms(a.first_fix_at), a.late) for a in alerts)


LIBRARY = load_library()


def _pg_due(conn: psycopg.Connection, subjects: list[int], now: float) -> bool:
    """Whether a PostgreSQL tick at ``now`` has anything to do for these subjects (a state due
    or an alert that may escalate); a tick without either writes nothing, so the test skips it
    (ticking every 30 s of a day-long scenario is most of the statements)."""
    at = datetime.fromtimestamp(now, UTC)
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM rule_state WHERE subject_id = ANY(%s) AND due_at <= %s)"
        " OR EXISTS (SELECT 1 FROM alerts WHERE subject_id = ANY(%s) AND NOT escalated"
        " AND cleared_at IS NULL AND status <> 'resolved')",
        (subjects, at, subjects),
    ).fetchone()
    return bool(row and row[0])


def test_the_library_is_all_here() -> None:
    assert LIBRARY
    assert len(LIBRARY) == len(list(Path(LIBRARY[0].source).parent.glob("*.toml")))


# CI's budget (20 minutes on 2 cores) does not hold the whole library twice over; the suite
# replays one scenario per rule family and hard case, and TAGWATCH_TEST_FULL_LIBRARY=1 replays
# every scenario (as before each release; the library grows faster than the budget).
REPRESENTATIVE = frozenset(
    {
        "curfew-breach",
        "small-home-25m-breach",
        "exclusion-entry",
        "inclusion-exit",
        "victim-proximity",
        "victim-panic",
        "strap-cut-flight",
        "order-ends-tag-removed",
        "tag-swap",
        "store-forward-8h",
        "dst-london-autumn",
        "tag-and-phone",
        "coverage-gap-late",
    }
)
REPLAYED = (
    LIBRARY
    if os.environ.get("TAGWATCH_TEST_FULL_LIBRARY") == "1"
    else [s for s in LIBRARY if s.name in REPRESENTATIVE]
)


def test_the_representative_scenarios_exist() -> None:
    assert {s.name for s in LIBRARY} >= REPRESENTATIVE


@pytest.mark.parametrize("scenario", REPLAYED, ids=lambda s: s.name)
def test_memory_and_postgresql_raise_the_same_alerts(settings, scenario) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        run = build_timeline(scenario, secrets.token_hex(4))
        memory = provision(run)
        mem_engine, pg_engine = AlertEngine(), AlertEngine()
        keys = _provision_pg(conn, run)
        subjects = sorted(keys)
        repo = ReplayRepository(conn)
        for step in steps(run):
            memory.now = repo.now = step.now
            if step.is_tick:
                mem_engine.tick(memory)
                if _pg_due(conn, subjects, step.now):
                    pg_engine.tick(repo)
                continue
            memory.store(step.fixes, step.events)
            mem_engine.process(memory, engine_fixes(step.fix_rows), engine_events(step.event_rows))
            with conn.transaction():
                with conn.cursor() as cur:
                    if step.fix_rows:
                        cur.executemany(
                            "INSERT INTO fixes (device_id, ts, seq, lat, lon, acc, alt, spd,"
                            " hdg, sats, batt, src) VALUES"
                            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                            step.fix_rows,
                        )
                    if step.event_rows:
                        cur.executemany(
                            "INSERT INTO device_events (device_id, ts, seq, type, batt,"
                            " detail) VALUES (%s, %s, %s, %s, %s, %s)",
                            step.event_rows,
                        )
                pg_engine.process(repo, engine_fixes(step.fix_rows), engine_events(step.event_rows))
        mem_keys = {str(i + 1): s.key for i, s in enumerate(run.plan.subjects)}
        in_memory = [
            RaisedAlert(
                a.type, mem_keys[a.subject], a.opened_at, late=a.late, first_fix_at=a.first_fix_at
            )
            for a in raised(memory)
        ]
        in_pg = _pg_alerts(conn, keys)
        assert _comparable(in_memory) == _comparable(in_pg)
        assert in_pg or not run.expectations, "a scenario that expects alerts raised none"


BEACONS = [s for s in LIBRARY if any(d.home_beacon for d in s.devices)]


@pytest.mark.parametrize("scenario", BEACONS[:1], ids=lambda s: s.name)
def test_both_repositories_carry_the_approved_beacon_and_the_beacon_each_event_names(
    settings, scenario
) -> None:
    """The approval reaches the engine's sync and the stored beacon events keep the beacon they
    name, alike in memory and in PostgreSQL (the rules trust nothing else, issue 14)."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        run = build_timeline(scenario, secrets.token_hex(4))
        memory = provision(run)
        keys = _provision_pg(conn, run)
        repo = PgEngineRepository(conn)
        mem_ids = {str(s.subject_id): s for s in memory.subjects}
        pg_beacons = {
            keys[s.subject_id]: s.home_beacon
            for s in repo.subjects_since(0)
            if s.subject_id in keys
        }
        mem_beacons = {
            s.key: mem_ids[str(i + 1)].home_beacon for i, s in enumerate(run.plan.subjects)
        }
        assert pg_beacons == mem_beacons
        assert any(mem_beacons.values())
        rows = [r for step in steps(run) for r in step.event_rows]
        stored = [e for step in steps(run) for e in step.events]
        with conn.transaction():
            conn.cursor().executemany(
                "INSERT INTO device_events (device_id, ts, seq, type, batt, detail)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                rows,
            )
        memory.store([], stored)
        sid = next(sid for sid, key in keys.items() if pg_beacons[key])
        mem_sid = 1 + [s.key for s in run.plan.subjects].index(keys[sid])
        lo, hi = run.start.timestamp() - 3600, run.end.timestamp() + 3600

        def beacon_events(events):
            return sorted(
                (e.device_id, round(e.ts, 3), e.type, e.beacon)
                for e in events
                if e.type.startswith("beacon_home_")
            )

        in_pg = beacon_events(repo.offender_events(sid, lo, hi))
        in_memory = beacon_events(memory.offender_events(mem_sid, lo, hi))
        assert in_pg == in_memory
        assert in_pg and all(b == pg_beacons[keys[sid]] for *_, b in in_pg)
