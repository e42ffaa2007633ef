"""A victim's panic through the API (issue 15): operators and tracers see her position at the
press - she asked for help - and each read of it is audited as a read of the victim's data
(a ``victim_zone`` row naming her); the zone's name stays withheld from them as for every alert
of a zone protecting a victim. Raised by the real engine from a stored panic event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tagwatch.alerts.batch import NewEvents, NewFixes
from tagwatch.alerts.engine import AlertEngine
from tagwatch.store.engine_repository import PgEngineRepository
from tagwatch.store.zones import ZoneDraft, create_zone
from tests.support import fresh_id

pytestmark = pytest.mark.integration

HER = (18.4631, -33.9512)  # lon, lat


def test_operators_and_tracers_see_her_position_and_their_reads_are_audited(settings, api, login):
    region = fresh_id("vp-region")
    tag, button = fresh_id("vp-tag"), fresh_id("vp-button")
    since = datetime.now(UTC) - timedelta(minutes=30)
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("INSERT INTO regions (id, name) VALUES (%s, 'panic')", (region,))
        offender, victim = (
            conn.execute(
                "INSERT INTO subjects (name, region_id) VALUES (%s, %s) RETURNING id",
                (fresh_id(name), region),
            ).fetchone()[0]
            for name in ("Off", "Her")
        )
        for device, subject, role in ((tag, offender, "offender"), (button, victim, "victim")):
            conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (device,))
            conn.execute(
                "INSERT INTO device_assignments (device_id, subject_id, role, during)"
                " VALUES (%s, %s, %s, tstzrange(%s, NULL))",
                (device, subject, role, since),
            )
        zone = create_zone(
            conn,
            ZoneDraft(
                name="12 Protea Lane",
                kind="victim",
                radius_m=500.0,
                subject_id=offender,
                victim_subject_id=victim,
            ),
        )
        conn.commit()
        now = datetime.now(UTC).timestamp()
        with conn.transaction():
            AlertEngine().process(
                PgEngineRepository(conn),
                NewFixes.of([(button, now - 5, HER[0], HER[1], 8.0, "gps")]),
                NewEvents.of([(button, now - 2, "panic", None)]),
            )
        [(alert_id, lat, lon)] = conn.execute(
            "SELECT id, lat, lon FROM alerts WHERE subject_id = %s AND type = 'victim_panic'",
            (offender,),
        ).fetchall()
    assert (lon, lat) == pytest.approx(HER)
    for role in ("operator", "tracer"):
        answer = api.get(f"/api/v1/alerts/{alert_id}", headers=login(role, [region]))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["lon"], body["lat"]) == pytest.approx(HER), "help needs to know where"
        assert body["severity"] == "critical"
        assert body["redacted"] is True
        assert "zone_name" not in body["details"]
        assert "12 Protea" not in answer.text
    with psycopg.connect(settings.database_url) as conn:
        audited = conn.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'victim_zone' AND subject_id = %s"
            " AND detail->>'alert_id' = %s",
            (victim, str(alert_id)),
        ).fetchone()[0]
    assert audited == 2, "each read of her position names her in the audit log"
    assert zone is not None
