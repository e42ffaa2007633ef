"""Absconder cases through the real engine on the real database (issue 16 item 3).

A subject of region H wears a tag far from home, inside the service area of an office of region
O. The tag's fixes and a strap tamper go through `AlertEngine.process`; the clock passes the
tamper's absconder limit and `AlertEngine.tick` raises the absconder over `PgEngineRepository`.
In the absconder's own transaction a case opens: cause ``strap_tamper``, region H, the tracing
unit of O's office the alert was routed to, the last known position and trail, and an active
grant for that unit (cross-region). An operator's declaration while it is open joins the same
case; after the absconder is resolved, a new declaration while the case is still outstanding
joins it too.

The repository's clock is pinned and its clock reads (due states, escalation candidates) are
limited to this test's subject, so other tests' rows in the shared database are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tagwatch.alerts import lifecycle
from tagwatch.alerts.batch import NewEvents, NewFixes
from tagwatch.alerts.engine import AlertEngine
from tagwatch.alerts.ports import EscalationCandidate, StateRow
from tagwatch.store.cases import cause_of
from tagwatch.store.engine_repository import PgEngineRepository
from tagwatch.store.subjects import add_subject, ensure_region
from tests.support import fresh_id

pytestmark = pytest.mark.integration

# Far from every other test's offices: Musina, Limpopo (lat, lon)
WHERE = (-22.35, 30.04)


class PinnedRepository(PgEngineRepository):
    """The real adapter; the clock is ``now`` and the clock rules see only ``subjects``."""

    def __init__(self, conn: psycopg.Connection, now: float, subjects: Sequence[int]) -> None:
        super().__init__(conn)
        self.now = now
        self.subjects = set(subjects)

    def clock_and_speed(self) -> tuple[float, float]:
        return self.now, 1.0

    def due_states(self, now: float, limit: int) -> list[StateRow]:
        return [r for r in super().due_states(now, limit) if r.subject_id in self.subjects]

    def escalation_candidates(self, types: Sequence[str], now: float) -> list[EscalationCandidate]:
        found = super().escalation_candidates(types, now)
        return [c for c in found if c.subject_id in self.subjects]


def test_an_absconder_from_the_engine_opens_a_case_routed_to_the_unit_where_he_is(settings):
    home, other = fresh_id("cs-h"), fresh_id("cs-o")
    device = fresh_id("cs-tag")
    t0 = datetime.now(UTC).timestamp() - 3600
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        ensure_region(conn, home, "Home")
        ensure_region(conn, other, "Vhembe")
        sid = add_subject(conn, name="Thabo Case", region_id=home)
        conn.execute(
            "UPDATE subjects SET thresholds = %s WHERE id = %s",
            (Jsonb({"absconder_tamper_s": 300}), sid),
        )
        conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (device,))
        conn.execute(
            "INSERT INTO device_assignments (device_id, subject_id, role, during)"
            " VALUES (%s, %s, 'offender', tstzrange(%s, NULL))",
            (device, sid, datetime.fromtimestamp(t0 - 60, UTC)),
        )
        (office,) = conn.execute(
            "INSERT INTO offices (name, region_id, lon, lat, service_radius_m)"
            " VALUES ('Musina', %s, %s, %s, 20000) RETURNING id",
            (other, WHERE[1], WHERE[0]),
        ).fetchone()
        (unit,) = conn.execute(
            "INSERT INTO tracing_units (name, office_id, region_id) VALUES ('Musina TU', %s, %s)"
            " RETURNING id",
            (office, other),
        ).fetchone()

    engine = AlertEngine()
    with psycopg.connect(settings.database_url) as conn:
        repo = PinnedRepository(conn, t0, [sid])
        fixes = [
            (device, t0 + 60 * i, WHERE[1] + 0.001 * i, WHERE[0], 8.0, "gps") for i in range(6)
        ]
        for i, fix in enumerate(fixes):
            repo.now = fix[1]
            events = NewEvents.of([(device, fix[1], "strap_tamper", None)]) if i == 5 else None
            with conn.transaction():
                engine.process(repo, NewFixes.of([fix]), events or NewEvents())
        repo.now = t0 + 300 + 600  # past the tamper's absconder limit
        assert engine.tick(repo) >= 1

        (tamper,) = conn.execute(
            "SELECT id FROM alerts WHERE subject_id = %s AND type = 'strap_tamper'", (sid,)
        ).fetchone()
        (absconder, details, routing) = conn.execute(
            "SELECT id, details, routing FROM alerts WHERE subject_id = %s AND type = 'absconder'",
            (sid,),
        ).fetchone()
        assert details["escalated_from"] == "strap_tamper" and details["source_alert_id"] == tamper
        assert [u["id"] for u in routing["tracing_units"]] == [unit]
        case = conn.execute(
            "SELECT id, cause, region_id, alert_id, status, tracing_unit_id, last_known, trail,"
            " opened_at FROM absconder_cases WHERE subject_id = %s",
            (sid,),
        ).fetchall()
        assert len(case) == 1, case
        case_id, cause, region, alert_id, status, case_unit, last_known, trail, opened = case[0]
        assert (cause, region, alert_id, status, case_unit) == (
            "strap_tamper", home, absconder, "outstanding", unit,
        )  # fmt: skip
        assert last_known["lat"] == WHERE[0] and abs(last_known["lon"] - fixes[-1][2]) < 1e-9
        assert len(trail) == len(fixes)
        assert opened.timestamp() == pytest.approx(repo.now)
        # the grant: explicit, the unit's region named, by the engine
        grants = conn.execute(
            "SELECT tracing_unit_id, unit_region_id, case_region_id, granted_by, revoked_at"
            " FROM absconder_case_grants WHERE case_id = %s",
            (case_id,),
        ).fetchall()
        assert grants == [(unit, other, home, "engine", None)]

        # a declaration while the absconder is open records on it: the same case
        conn.commit()
        declared = lifecycle.declare_absconder(conn, sid, "op-1", "seen at the border")
        assert (declared.raised, declared.case_id) == (False, case_id)
        # resolved, yet the subject is still at large: a new declaration joins the case
        lifecycle.resolve(conn, absconder, "op-1", "confirmed", "handed to tracing")
        again = lifecycle.declare_absconder(conn, sid, "op-2", "still not found")
        assert again.raised and again.case_id == case_id and again.alert_id != absconder
        linked = conn.execute(
            "SELECT alert_id FROM absconder_case_alerts WHERE case_id = %s ORDER BY alert_id",
            (case_id,),
        ).fetchall()
        assert [r[0] for r in linked] == [absconder, again.alert_id]
        assert conn.execute(
            "SELECT count(*) FROM absconder_cases WHERE subject_id = %s", (sid,)
        ).fetchone() == (1,)
        conn.commit()


def test_the_cause_is_what_the_absconder_escalated_from_or_a_declaration():
    assert cause_of({"escalated_from": "strap_tamper"}) == "strap_tamper"
    assert cause_of({"escalated_from": "no_communication"}) == "silence"
    assert cause_of({"escalated_from": "inclusion_zone_exit"}) == "inclusion_exit"
    assert cause_of({"declared_by": "op-1"}) == "declared"
    assert cause_of({"escalated_from": None}) == "declared"
    assert cause_of(None) == "declared"
