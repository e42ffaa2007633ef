"""Human channels end to end: a real SMTP server (aiosmtpd, on loopback, started here), a channel
holding an Apprise ``mailto://`` URL (sealed in the database), alerts opened the engine's way,
and the dispatcher delivering them as e-mails a tracer reads on a phone.

The SMTP server listens on 127.0.0.1 without TLS, so the dispatchers here allow-list 127.0.0.1,
as the webhook tests do (the refusals are tested without a server, below). Fixtures:
tests/alerts/conftest.py, helpers: tests/alerts/channel_support.py."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from tagwatch.alerts.apprise_channel import channel_problem, parse
from tagwatch.alerts.human_message import About, Recipient, compose, local_time
from tagwatch.alerts.webhook_destination import AllowList
from tagwatch.store.subjects import add_subject, ensure_region
from tagwatch.store.zones import ZoneDraft, create_zone
from tests.alerts.channel_support import (
    CAPE_TOWN,
    CONSOLE,
    delivery_log,
    delivery_status,
    open_alert,
    text_of,
)
from tests.support import fresh_id, wait_for

# serial: timed delivery through a dispatcher that works the whole outbox; run on its own after
# the parallel part (scripts/test.sh), on a fresh database and an idle second core.
pytestmark = [pytest.mark.integration, pytest.mark.serial]


@pytest.fixture
def conn(settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.database_url) as connection:
        yield connection


def test_an_alert_arrives_as_a_readable_email(conn, smtp_server, add_channel, channel_dispatcher):
    region = fresh_id("rg")
    ensure_region(conn, region, "Western Cape")
    name = f"Jan Mokoena {fresh_id('')}"
    sid = add_subject(conn, name=name, region_id=region, timezone="Africa/Johannesburg")
    conn.commit()
    cid = add_channel(smtp_server.url("tracing@example.org"), region)
    channel_dispatcher()
    committed = time.time()
    alert_id = open_alert(conn, sid, "strap_tamper", lat=CAPE_TOWN[0], lon=CAPE_TOWN[1])
    assert wait_for(lambda: smtp_server.to("tracing@example.org"), timeout=15)
    delay = time.time() - committed
    print(f"\ne-mail received {delay:.2f} s after the alert committed")
    (mail,) = smtp_server.to("tracing@example.org")
    assert mail["Subject"] == f"[CRITICAL] Strap tampered with: {name}"
    body = text_of(mail)
    opened_at = conn.execute("SELECT opened_at FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    assert opened_at is not None
    when = local_time(opened_at[0], "Africa/Johannesburg")
    assert "SAST (Africa/Johannesburg)" in when
    # the nearest town or office: an office another test drew near Cape Town serves the
    # position (critical alerts are routed), else the subject's region is named
    (routing,) = conn.execute("SELECT routing FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    office = (routing or {}).get("office")
    place = f"Office: {office}" if office else "Region: Western Cape"
    for expected in (
        name,
        "Strap tampered with",
        f"When: {when}",
        "Status: new",
        place,
        f"Last known position: {CAPE_TOWN[0]:.5f}, {CAPE_TOWN[1]:.5f}",
        f"Open: {CONSOLE}/#/alert/{alert_id}",
    ):
        assert expected in body, (expected, body)
    assert len(body) < 600, "a message for a phone"
    assert wait_for(lambda: delivery_status(conn, alert_id, f"apprise:{cid}") == [("delivered", 1)])
    assert delivery_log(conn, alert_id, f"apprise:{cid}") == [(True, None)]
    # the URL is sealed in the database, never in clear
    stored = conn.execute(
        "SELECT url_sealed, url_shown FROM notification_channels WHERE id = %s", (cid,)
    ).fetchone()
    assert stored is not None and str(smtp_server.port) not in stored[0]


def test_a_victim_alert_carries_no_position_to_a_tracer(
    conn, smtp_server, add_channel, channel_dispatcher
):
    region = fresh_id("rg")
    ensure_region(conn, region, region)
    offender = add_subject(conn, name=f"Offender {fresh_id('')}", region_id=region)
    victim = add_subject(conn, name=f"Victim {fresh_id('')}", region_id=region)
    conn.execute("UPDATE subjects SET victim = true WHERE id = %s", (victim,))
    home = create_zone(
        conn,
        ZoneDraft(
            name="12 Quiet Lane (her home)",
            kind="exclusion",
            geometry={"type": "Point", "coordinates": [CAPE_TOWN[1], CAPE_TOWN[0]]},
            radius_m=300,
            subject_id=offender,
            protects_subject_id=victim,
        ),
    )
    conn.commit()
    tracer = add_channel(smtp_server.url("tracer@example.org"), region)
    supervisor = add_channel(smtp_server.url("supervisor@example.org"), region, role="supervisor")
    channel_dispatcher()
    near = (CAPE_TOWN[0] + 0.001, CAPE_TOWN[1])
    alert_id = open_alert(
        conn, offender, "exclusion_zone_entry", zone_id=home, lat=near[0], lon=near[1]
    )
    panic = open_alert(conn, victim, "victim_panic", lat=CAPE_TOWN[0], lon=CAPE_TOWN[1])
    assert wait_for(lambda: len(smtp_server.to("supervisor@example.org")) >= 2, timeout=15)
    assert wait_for(lambda: smtp_server.to("tracer@example.org"), timeout=5)
    time.sleep(1.0)  # anything else would have arrived by now
    (to_tracer,) = smtp_server.to("tracer@example.org")
    text = to_tracer.as_string()
    assert "Entered an exclusion zone" in text
    for leak in (f"{near[0]:.3f}", f"{near[1]:.3f}", "Quiet Lane", "Victim "):
        assert leak not in text, leak
    assert "Position withheld (victim protection)" in text_of(to_tracer)
    # the victim's own alarm never reaches a tracer-level channel...
    assert delivery_status(conn, panic, f"apprise:{tracer}") == []
    # ... a supervisor gets it, without her position; and the offender's position near her
    by_subject = {m["Subject"]: text_of(m) for m in smtp_server.to("supervisor@example.org")}
    (panic_text,) = [t for s, t in by_subject.items() if "Victim panic alarm" in s]
    assert f"{CAPE_TOWN[0]:.3f}" not in panic_text
    (entry_text,) = [t for s, t in by_subject.items() if "exclusion zone" in s]
    assert f"Last known position: {near[0]:.5f}" in entry_text
    assert delivery_status(conn, alert_id, f"apprise:{supervisor}") == [("delivered", 1)]


def test_a_failing_smtp_server_is_retried_and_every_attempt_recorded(
    conn, smtp_server, add_channel, channel_dispatcher
):
    region = fresh_id("rg")
    ensure_region(conn, region, region)
    sid = add_subject(conn, name=f"Thabo {fresh_id('')}", region_id=region)
    conn.commit()
    cid = add_channel(smtp_server.url("retry@example.org"), region)
    smtp_server.refuse = 2
    channel_dispatcher()
    alert_id = open_alert(conn, sid, "absconder", lat=CAPE_TOWN[0], lon=CAPE_TOWN[1])
    channel = f"apprise:{cid}"
    assert wait_for(lambda: delivery_status(conn, alert_id, channel) == [("delivered", 3)], 20)
    assert smtp_server.refused == 2
    assert len(smtp_server.to("retry@example.org")) == 1
    attempts = delivery_log(conn, alert_id, channel)
    assert [ok for ok, _ in attempts] == [False, False, True]
    assert all(error for _, error in attempts[:2]), attempts


def test_a_server_that_is_down_is_retried_then_delivered(
    conn, smtp_server, add_channel, channel_dispatcher
):
    region = fresh_id("rg")
    ensure_region(conn, region, region)
    sid = add_subject(conn, name=f"Sipho {fresh_id('')}", region_id=region)
    conn.commit()
    smtp_server.controller.stop()
    cid = add_channel(smtp_server.url("down@example.org"), region)
    channel_dispatcher()
    alert_id = open_alert(conn, sid, "strap_tamper")
    channel = f"apprise:{cid}"
    assert wait_for(lambda: len(delivery_log(conn, alert_id, channel)) >= 2, 15)
    assert delivery_status(conn, alert_id, channel)[0][0] == "pending"
    smtp_server.restart()
    assert wait_for(lambda: smtp_server.to("down@example.org"), 15)
    # the server has the mail before the dispatcher records the attempt that sent it
    assert wait_for(lambda: delivery_log(conn, alert_id, channel)[-1][0], 15)
    attempts = delivery_log(conn, alert_id, channel)
    assert attempts[-1] == (True, None) and not any(ok for ok, _ in attempts[:-1])


# ---------------------------------------------------------------------- without a server


def test_internal_or_local_destinations_are_refused():
    none = AllowList()
    for url in (
        "mailtos://user:pw@mail.example.org?smtp=10.1.2.3&to=a@example.org",
        "jsons://169.254.169.254/latest",
        "matrixs://u:p@localhost/#room",
        "mailtos://user:pw@127.0.0.1?from=t@example.org&to=a@example.org",
        "dbus://",
        "no-such-service://x",
    ):
        assert channel_problem(url, "production", none) is not None, url
    # in clear outside development: refused unless allow-listed; a fixed public service is fine
    assert "TLS" in (channel_problem("mailto://u:p@smtp.example.org", "production", none) or "")
    assert (
        channel_problem("mailtos://u:p@smtp.example.org?to=a@example.org", "production", none)
        is None
    )
    assert channel_problem("tgram://123456:ABCDEF/12345", "production", none) is None
    loopback = AllowList.parse("127.0.0.1")
    assert (
        channel_problem(
            "mailto://127.0.0.1:2525?from=t@example.org&to=a@example.org", "test", loopback
        )
        is None
    )
    # the shown form masks the password
    assert "s3cret" not in parse("mailtos://user:s3cret@smtp.example.org?to=a@example.org").shown


def test_the_message_routes_to_an_office_and_says_utc_when_the_zone_is_unknown():
    payload = {
        "alert_id": 7,
        "notification_id": 9,
        "event": "escalated",
        "type": "absconder",
        "severity": "critical",
        "opened_at": "2026-12-05T14:05:00+00:00",
        "routing": {"office": "Bellville Community Corrections"},
        "details": {"last_known": {"lat": -33.9, "lon": 18.6, "acc": 12.0}},
    }
    message = compose(payload, About(subject_name="A. Person"), Recipient())
    assert message.title == "ESCALATED [CRITICAL] Absconder: A. Person"
    assert "When: 2026-12-05 14:05 UTC" in message.body
    assert "Office: Bellville Community Corrections" in message.body
    assert "Last known position: -33.90000, 18.60000 (±12 m)" in message.body
    assert "Nobody acknowledged" in message.body
    assert "Open:" not in message.body  # no console address configured
