"""Human channels through the API (admin only; the Apprise URL sealed, never read back, never
audited in clear; internal or local destinations refused with a reason), and what the API shows
of acknowledgement: an alert's deadline and time left, time to acknowledge in the compliance
report and in /metrics (issue 16)."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from tagwatch.alerts import lifecycle
from tagwatch.store.subjects import add_subject, ensure_region
from tagwatch.store.webhook_secrets import SecretBox
from tests.alerts.channel_support import open_alert
from tests.support import fresh_id

pytestmark = pytest.mark.integration

PASSWORD = "sm7p-pa55word-x"
URL = f"mailtos://tracing:{PASSWORD}@smtp.example.org?to=tracing@example.org"


@pytest.fixture(scope="module")
def admin(login) -> dict[str, str]:
    return login("admin", ["*"])


@pytest.fixture(scope="module")
def region(api, admin) -> str:
    name = fresh_id("ch")
    assert api.post("/api/v1/regions", json={"id": name, "name": name}, headers=admin).is_success
    return name


def test_a_channel_url_is_sealed_and_never_shown_again(api, admin, login, settings, region):
    created = api.post(
        "/api/v1/channels",
        json={
            "name": "tracing unit e-mail",
            "url": URL,
            "regions": [region],
            "types": ["absconder"],
            "min_severity": "critical",
            "active": False,  # no later test's alert should go out to example.org
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert PASSWORD not in created.text
    assert body["scheme"] == "mailtos" and body["role"] == "tracer"
    assert body["escalation"] is False
    assert "smtp.example.org" in body["url_shown"]
    changed = api.patch(
        f"/api/v1/channels/{body['id']}",
        json={"role": "supervisor", "escalation": True},
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["role"], changed.json()["escalation"]) == ("supervisor", True)
    for response in (
        api.get(f"/api/v1/channels/{body['id']}", headers=admin),
        api.get("/api/v1/channels", params={"limit": 1000}, headers=admin),
    ):
        assert response.status_code == 200
        assert PASSWORD not in response.text
    with psycopg.connect(settings.database_url) as conn:
        sealed = conn.execute(
            "SELECT url_sealed FROM notification_channels WHERE id = %s", (body["id"],)
        ).fetchone()
        audited = conn.execute(
            "SELECT string_agg(detail::text, ' ') FROM audit_log WHERE action LIKE 'channel_%%'"
        ).fetchone()
    assert sealed is not None and PASSWORD not in sealed[0]
    assert SecretBox(settings.webhook_secret_key).open(sealed[0]) == URL
    assert audited is not None and PASSWORD not in audited[0]
    assert api.delete(f"/api/v1/channels/{body['id']}", headers=admin).status_code == 204
    for role in ("supervisor", "operator", "tracer"):
        other = login(role, [region])
        assert api.get("/api/v1/channels", headers=other).status_code == 403


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mailtos://u:p@mail.example.org?smtp=10.0.0.5&to=a@example.org", "private"),
        ("jsons://169.254.169.254/latest/meta-data", "metadata"),
        ("matrixs://u:p@localhost/#room", "loopback"),
        ("mailto://u:p@smtp.example.org?to=a@example.org", "TLS"),
        ("dbus://", "understands"),
        ("gopher://example.org/", "understands"),
    ],
)
def test_internal_local_or_clear_destinations_are_422_with_the_reason(api, admin, url, reason):
    response = api.post("/api/v1/channels", json={"name": "x", "url": url}, headers=admin)
    assert response.status_code == 422, response.text
    assert reason in response.text
    assert "u:p@" not in response.text  # the URL is not echoed: it holds credentials


def test_the_deadline_time_left_and_time_to_acknowledge(api, admin, login, settings, region):
    with psycopg.connect(settings.database_url) as conn:
        ensure_region(conn, region, region)
        sid = add_subject(conn, name=fresh_id("subject"), region_id=region)
        conn.commit()
        waiting = open_alert(conn, sid, "strap_tamper")
        taken = open_alert(conn, sid, "absconder")
        conn.execute(
            "UPDATE alerts SET raised_at = now() - interval '120 seconds' WHERE id = %s", (taken,)
        )
        conn.commit()
        lifecycle.acknowledge(conn, taken, "operator-7")
    operator = login("operator", [region])
    alert = api.get(f"/api/v1/alerts/{waiting}", headers=operator).json()
    deadline = datetime.fromisoformat(alert["ack_deadline"])
    raised = datetime.fromisoformat(alert["raised_at"])
    assert (deadline - raised).total_seconds() == settings.ack_deadline_critical_s
    assert 0 < alert["ack_seconds_left"] <= settings.ack_deadline_critical_s
    done = api.get(f"/api/v1/alerts/{taken}", headers=operator).json()
    assert done["ack_seconds_left"] is None and done["ack_deadline"] is not None
    listed = api.get("/api/v1/alerts", params={"subject_id": sid}, headers=operator).json()
    assert {a["id"]: a["ack_seconds_left"] is not None for a in listed["items"]} == {
        waiting: True,
        taken: False,
    }

    supervisor = login("supervisor", [region])
    month = datetime.now(UTC).strftime("%Y-%m")
    report = api.get(
        "/api/v1/reports/compliance", params={"region": region, "month": month}, headers=supervisor
    ).json()
    figures = report["time_to_acknowledge"]
    assert figures["acknowledged"] == 1
    assert 119 <= figures["median_s"] <= 130 and 119 <= figures["p90_s"] <= 130
    assert figures["escalated_unacknowledged"] == 0
    metrics = api.get("/metrics").text
    line = f'tagwatch_alert_time_to_acknowledge_seconds{{quantile="0.5",region="{region}"}}'
    assert line in metrics
    assert f'tagwatch_alerts_acknowledged_24h{{region="{region}"}} 1.0' in metrics
