"""Routing by where the subject is (issue 16), end to end: the strap-cut-flight scenario's
subject (home region City of Cape Town) cuts his strap and drives over Sir Lowry's Pass towards
Grabouw, into another region (the Overberg). Through the real broker, ingest (under its own
database role), alert engine, outbox and dispatcher, the absconder alert reaches both the home
region's subscription and the webhook of the Overberg's tracing unit whose office serves where
he was last seen, with the routing reason in the payload."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tagwatch.alerts.dispatcher import Dispatcher, DispatcherConfig
from tagwatch.bench.harness import WebhookReceiver, allowing_loopback
from tagwatch.simulators.runner import run_scenarios
from tests.alerts.channel_support import without_escalation
from tests.support import fresh_id, wait_for

# serial: timed delivery through a dispatcher that works the whole outbox; run on its own after
# the parallel part (scripts/test.sh), on a fresh database and an idle second core.
pytestmark = [pytest.mark.integration, pytest.mark.serial]

HOME_REGION = "za-wc-cpt"  # the scenario's region
# Corrections regions are not municipalities (FIELD.md): the department's City of Cape Town
# region ends at 18.75 E, and the Overberg region takes in the Helderberg east of it, where the
# metro (the subject's inclusion zone) still runs up to the pass. So the subject, still inside
# his jurisdiction zone when the absconder alert is raised (about 18.80 E, on the N2 before the
# pass), is already in another region, and its Grabouw office serves that stretch of road.
HOME_BOUNDARY = [[18.30, -34.36], [18.50, -34.36], [18.75, -34.25], [18.75, -33.55],
                 [18.60, -33.45], [18.40, -33.45], [18.30, -33.60], [18.30, -34.36]]  # fmt: skip
OVERBERG = [[18.75, -34.25], [18.75, -33.55], [19.60, -33.55], [19.60, -34.45], [18.75, -34.45],
            [18.75, -34.25]]  # fmt: skip
GRABOUW_AREA = [[18.75, -33.95], [19.30, -33.95], [19.30, -34.30], [18.75, -34.30],
                [18.75, -33.95]]  # fmt: skip
GRABOUW_OFFICE = (19.0150, -34.1520)  # lon, lat
# An office of the home region in the city: further away, and its area does not reach the pass.
CITY_OFFICE = (18.4241, -33.9249)


def polygon(ring: list[list[float]]) -> str:
    return json.dumps({"type": "Polygon", "coordinates": [ring]})


def test_an_absconder_in_another_region_reaches_that_regions_tracing_unit_and_home(
    settings, running_ingest, tmp_path: Path
):
    overberg = fresh_id("za-wc-ob")
    home_secret, unit_secret = fresh_id("home-secret"), fresh_id("unit-secret")
    config = dataclasses.replace(
        DispatcherConfig(),
        mqtt_client_id=fresh_id("dispatch"),
        poll_interval_s=0.5,
        backoff_base_s=0.2,
        backoff_cap_s=1.0,
    )
    stop = threading.Event()
    with (
        WebhookReceiver() as home_receiver,
        WebhookReceiver() as unit_receiver,
        psycopg.connect(settings.database_url) as conn,
    ):
        conn.execute(
            "INSERT INTO regions (id, name) VALUES (%s, 'City of Cape Town')"
            " ON CONFLICT (id) DO NOTHING",
            (HOME_REGION,),
        )
        old_boundary = conn.execute(
            "SELECT boundary FROM regions WHERE id = %s", (HOME_REGION,)
        ).fetchone()[0]
        conn.execute(
            "UPDATE regions SET boundary = %s WHERE id = %s", (polygon(HOME_BOUNDARY), HOME_REGION)
        )
        conn.execute(
            "INSERT INTO regions (id, name, boundary) VALUES (%s, 'Overberg', %s)",
            (overberg, polygon(OVERBERG)),
        )
        (grabouw,) = conn.execute(
            "INSERT INTO offices (name, region_id, lon, lat, service_area)"
            " VALUES ('Grabouw office', %s, %s, %s, %s) RETURNING id",
            (overberg, *GRABOUW_OFFICE, polygon(GRABOUW_AREA)),
        ).fetchone()
        (city,) = conn.execute(
            "INSERT INTO offices (name, region_id, lon, lat, service_radius_m)"
            " VALUES ('Cape Town office', %s, %s, %s, 15000) RETURNING id",
            (HOME_REGION, *CITY_OFFICE),
        ).fetchone()
        (unit,) = conn.execute(
            "INSERT INTO tracing_units (name, office_id, region_id)"
            " VALUES ('Overberg tracing unit', %s, %s) RETURNING id",
            (grabouw, overberg),
        ).fetchone()
        (home_hook,) = conn.execute(
            "INSERT INTO webhook_subscriptions (name, url, secret, regions, types, min_severity)"
            " VALUES ('home region', %s, %s, %s, '{absconder}', 'critical') RETURNING id",
            (home_receiver.url, home_secret, [HOME_REGION]),
        ).fetchone()
        (unit_hook,) = conn.execute(
            "INSERT INTO webhook_subscriptions"
            " (name, url, secret, regions, types, min_severity, tracing_unit_id)"
            " VALUES ('overberg unit', %s, %s, %s, '{absconder}', 'critical', %s) RETURNING id",
            (unit_receiver.url, unit_secret, [overberg], unit),
        ).fetchone()
        conn.commit()
        dispatcher = Dispatcher(without_escalation(allowing_loopback(settings)), config)
        thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
        thread.start()
        try:
            manifest = run_scenarios(
                settings,
                ["strap-cut-flight"],
                speedup=1800,
                manifest_path=tmp_path / "run.json",
                echo=lambda _line: None,
            )
            assert manifest.finished
            ids = list(manifest.subjects["strap-cut-flight"].values())
            query = (
                "SELECT id, raised_at, routing FROM alerts WHERE subject_id = ANY(%s)"
                " AND type = 'absconder'"
            )
            assert wait_for(lambda: conn.execute(query, (ids,)).fetchone() is not None, 10)
            (alert_id, raised_at, routing) = conn.execute(query, (ids,)).fetchone()
            conn.commit()

            def arrived(receiver: WebhookReceiver) -> list:
                return [r for r in receiver.ok() if r.json["alert_id"] == alert_id]

            assert wait_for(lambda: arrived(unit_receiver) and arrived(home_receiver), 30), (
                "the absconder did not reach both subscriptions"
            )
            # the absconder case opened in the alert's transaction, for the unit where he is,
            # with a grant that lets that other region's tracers reach the case
            case = conn.execute(
                "SELECT c.id, c.cause, c.region_id, c.tracing_unit_id, c.status,"
                " (SELECT count(*) FROM absconder_case_grants g WHERE g.case_id = c.id"
                "  AND g.tracing_unit_id = %s AND g.revoked_at IS NULL)"
                " FROM absconder_cases c JOIN absconder_case_alerts ca ON ca.case_id = c.id"
                " WHERE ca.alert_id = %s",
                (unit, alert_id),
            ).fetchone()
            conn.commit()
            assert case is not None and case[1:] == (
                "strap_tamper",
                HOME_REGION,
                unit,
                "outstanding",
                1,
            ), case
        finally:
            stop.set()
            thread.join(30)
            conn.rollback()
            conn.execute(
                "UPDATE webhook_subscriptions SET active = false, tracing_unit_id = NULL"
                " WHERE id = ANY(%s)",
                ([home_hook, unit_hook],),
            )
            conn.execute("DELETE FROM tracing_units WHERE id = %s", (unit,))
            conn.execute("DELETE FROM offices WHERE id = ANY(%s)", ([grabouw, city],))
            conn.execute(
                "UPDATE regions SET boundary = %s WHERE id = %s",
                (None if old_boundary is None else json.dumps(old_boundary), HOME_REGION),
            )
            conn.commit()

    [to_unit] = arrived(unit_receiver)
    [to_home] = arrived(home_receiver)
    assert to_unit.signed_by(unit_secret) and not to_unit.signed_by(home_secret)
    assert to_home.signed_by(home_secret)
    body = to_unit.json
    assert body["type"] == "absconder" and body["region"] == HOME_REGION
    last = body["details"]["last_known"]
    route = body["routing"]
    print(  # the figures for the report
        f"\nabsconder {alert_id}: last known {last['lon']:.4f}, {last['lat']:.4f};"
        f" routing: {route['reason']}; unit webhook"
        f" {to_unit.at - raised_at.timestamp():.2f} s, home webhook"
        f" {to_home.at - raised_at.timestamp():.2f} s after the alert"
    )
    assert route == routing, "the payload carries the routing kept on the alert"
    assert route["office"] == "Grabouw office" and route["office_id"] == grabouw
    assert route["office_region"] == overberg and route["home_region"] == HOME_REGION
    assert route["tracing_units"] == [{"id": unit, "name": "Overberg tracing unit"}]
    assert route["within_service_area"] is True and route["outside_home_region"] is True
    assert route["position_regions"] == [overberg]
    assert route["reason"].startswith("position ") and "from Grabouw office" in route["reason"]
    assert route["reason"].endswith(f"in region {overberg}, outside the home region")
    assert 0 < route["distance_m"] < 30_000
    assert to_home.json["routing"] == route  # the home region learns where it went too
    for note in (to_unit, to_home):
        assert 0 <= note.at - raised_at.timestamp() < 5
    assert time.time() > raised_at.timestamp()
