"""The live overview (`GET /positions`): the latest fix of every subject in the caller's
regions, from the offender devices held now, within their holding period; one audit row per
overview; 401 without a token. And the track's downsampling (`max_points`): at most N points,
evenly thinned by time, the first and the last fix kept."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.support import fresh_id

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)  # reset when the world is built (see `world`)


@pytest.fixture(scope="module")
def as_(login):
    """Log in once per (role, regions) in this module: each login hashes a password."""
    cache: dict[tuple[str, tuple[str, ...]], dict[str, str]] = {}

    def headers(role: str, regions: list[str]) -> dict[str, str]:
        key = (role, tuple(regions))
        if key not in cache:
            cache[key] = login(role, regions)
        return cache[key]

    return headers


def _subject(conn: psycopg.Connection, name: str, region: str) -> int:
    row = conn.execute(
        "INSERT INTO subjects (name, region_id) VALUES (%s, %s) RETURNING id", (name, region)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _device(conn: psycopg.Connection, interval_s: int = 60) -> str:
    device = fresh_id("pos")
    conn.execute(
        "INSERT INTO devices (id, kind, expected_interval_s) VALUES (%s, 'tag', %s)",
        (device, interval_s),
    )
    return device


def _hold(
    conn: psycopg.Connection,
    device: str,
    subject: int,
    start: datetime,
    end: datetime | None = None,
    role: str = "offender",
) -> None:
    conn.execute(
        "INSERT INTO device_assignments (device_id, subject_id, role, during)"
        " VALUES (%s, %s, %s, tstzrange(%s, %s))",
        (device, subject, role, start, end),
    )


def _fix(conn: psycopg.Connection, device: str, ts: datetime, lat: float, lon: float, acc=8.0):
    conn.execute(
        "INSERT INTO fixes (device_id, ts, lat, lon, acc) VALUES (%s, %s, %s, %s, %s)",
        (device, ts, lat, lon, acc),
    )


@pytest.fixture(scope="module")
def world(settings):
    """Two regions. In A: a subject whose latest fix is among older ones (inserted out of
    order), whose earlier device (returned) reported later than its return; a subject whose
    fix is three hours old; a subject without fixes; a subject whose device was taken off; a
    victim's phone. In B: one subject."""
    # "now" is when the fixes are written, not when the module was collected: a long test run
    # in between would age every fix (and make the fresh ones stale)
    global NOW  # noqa: PLW0603
    NOW = datetime.now(UTC).replace(microsecond=0)
    a, b = fresh_id("posa"), fresh_id("posb")
    ids: dict[str, int] = {}
    with psycopg.connect(settings.database_url) as conn:
        for region in (a, b):
            conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (region, region))
        ids["walker"] = walker = _subject(conn, "Walker", a)
        old, current = _device(conn), _device(conn)
        _hold(conn, old, walker, NOW - timedelta(days=3), NOW - timedelta(days=1))
        _fix(conn, old, NOW - timedelta(days=2), -33.0, 18.0)
        # reported after it was returned (someone else's now, or in a drawer): not the walker's
        _fix(conn, old, NOW - timedelta(seconds=5), -34.5, 19.5)
        _hold(conn, current, walker, NOW - timedelta(days=1))
        for minutes, lat in ((30, -33.91), (2, -33.925), (10, -33.92)):  # out of order
            _fix(conn, current, NOW - timedelta(minutes=minutes), lat, 18.42, acc=minutes + 1)
        ids["sleeper"] = sleeper = _subject(conn, "Sleeper", a)
        quiet = _device(conn, interval_s=300)
        _hold(conn, quiet, sleeper, NOW - timedelta(days=1))
        _fix(conn, quiet, NOW - timedelta(hours=3), -33.8, 18.5)
        ids["silent"] = silent = _subject(conn, "No fix yet", a)
        _hold(conn, _device(conn), silent, NOW - timedelta(hours=1))
        ids["released"] = released = _subject(conn, "Released", a)
        taken_off = _device(conn)
        _hold(conn, taken_off, released, NOW - timedelta(days=2), NOW - timedelta(hours=1))
        _fix(conn, taken_off, NOW - timedelta(hours=2), -33.7, 18.6)
        ids["victim"] = victim = _subject(conn, "Victim", a)
        phone = _device(conn)
        _hold(conn, phone, victim, NOW - timedelta(days=1), role="victim")
        _fix(conn, phone, NOW - timedelta(minutes=1), -33.6, 18.7)
        ids["elsewhere"] = elsewhere = _subject(conn, "Elsewhere", b)
        far = _device(conn)
        _hold(conn, far, elsewhere, NOW - timedelta(days=1))
        _fix(conn, far, NOW - timedelta(minutes=1), -26.2, 28.0)
    return {"a": a, "b": b, "ids": ids}


def _me(api, headers) -> str:
    return api.get("/api/v1/auth/me", headers=headers).json()["username"]


def test_the_latest_fix_of_each_subject_held_now_in_the_callers_regions(api, as_, world):
    ids = world["ids"]
    response = api.get("/api/v1/positions", headers=as_("operator", [world["a"]]))
    assert response.status_code == 200, response.text
    body = response.json()
    by_subject = {item["subject_id"]: item for item in body["items"]}
    # no fix, device taken off, a victim's phone, another region: not on the map
    assert set(by_subject) == {ids["walker"], ids["sleeper"]}
    assert body["count"] == 2
    assert body["truncated"] is False

    walker = by_subject[ids["walker"]]
    assert walker["name"] == "Walker"
    assert walker["region_id"] == world["a"]
    assert datetime.fromisoformat(walker["ts"]) == NOW - timedelta(minutes=2)
    assert (walker["lat"], walker["lon"], walker["acc"]) == (-33.925, 18.42, 3.0)
    assert 115 <= walker["age_s"] < 300
    assert walker["stale"] is False  # two minutes, reporting every minute: within 3 reports

    sleeper = by_subject[ids["sleeper"]]
    assert datetime.fromisoformat(sleeper["ts"]) == NOW - timedelta(hours=3)
    assert sleeper["expected_interval_s"] == 300
    assert sleeper["stale"] is True
    assert 3 * 3600 - 5 <= sleeper["age_s"] < 3 * 3600 + 300


def test_a_subjects_position_is_its_newest_fix_from_a_device_it_held_then(
    api, as_, world, settings
):
    """`GET /subjects/{id}/position` (store.fixes.latest_fix, one backward probe per held
    device): the newest fix of any offender device while the subject held it, current or past;
    a returned device's later fixes, a victim's phone and no fix at all give no position. A tag
    and a phone that fixed at the same instant: the more accurate fix."""
    ids = world["ids"]
    headers = as_("operator", [world["a"]])

    def position(subject: int) -> dict:
        response = api.get(f"/api/v1/subjects/{subject}/position", headers=headers)
        return {"status": response.status_code, **response.json()}

    walker = position(ids["walker"])
    assert walker["status"] == 200
    # the current device's newest (two minutes ago), not the returned device's fix of 5 s ago
    assert datetime.fromisoformat(walker["ts"]) == NOW - timedelta(minutes=2)
    assert (walker["lat"], walker["acc"]) == (-33.925, 3.0)
    assert datetime.fromisoformat(position(ids["sleeper"])["ts"]) == NOW - timedelta(hours=3)
    released = position(ids["released"])  # taken off an hour ago: its last fix while held
    assert datetime.fromisoformat(released["ts"]) == NOW - timedelta(hours=2)
    assert position(ids["silent"])["status"] == 404
    assert position(ids["victim"])["status"] == 404  # a victim's phone is nobody's position

    region = fresh_id("posc")  # its own region: the overview tests count region A's subjects
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (region, region))
        pair = _subject(conn, "Tag and phone", region)
        tag, phone = _device(conn), _device(conn)
        for device in (tag, phone):
            _hold(conn, device, pair, NOW - timedelta(days=1))
        _fix(conn, phone, NOW - timedelta(minutes=1), -33.5, 18.8, acc=21.0)
        _fix(conn, tag, NOW - timedelta(minutes=1), -33.501, 18.801, acc=4.8)
        _fix(conn, phone, NOW - timedelta(minutes=3), -33.4, 18.9, acc=15.0)
    headers = as_("operator", [region])
    both = position(pair)
    assert (both["device_id"], both["acc"]) == (tag, 4.8)
    assert datetime.fromisoformat(both["ts"]) == NOW - timedelta(minutes=1)


def test_other_regions_stay_invisible_even_when_asked_for(api, as_, world):
    ids = world["ids"]
    only_a = as_("tracer", [world["a"]])  # every role may read the overview
    asked = api.get("/api/v1/positions", params={"region": world["b"]}, headers=only_a)
    assert asked.status_code == 200
    assert asked.json()["items"] == []  # the same answer as for a region that does not exist
    missing = api.get("/api/v1/positions", params={"region": fresh_id("nope")}, headers=only_a)
    assert missing.json()["items"] == []

    only_b = api.get("/api/v1/positions", headers=as_("supervisor", [world["b"]])).json()
    assert [i["subject_id"] for i in only_b["items"]] == [ids["elsewhere"]]

    both = as_("operator", [world["a"], world["b"]])
    narrowed = api.get("/api/v1/positions", params={"region": world["b"]}, headers=both).json()
    assert [i["subject_id"] for i in narrowed["items"]] == [ids["elsewhere"]]

    everyone = api.get(
        "/api/v1/positions", params={"region": world["a"]}, headers=as_("admin", ["*"])
    )
    assert {i["subject_id"] for i in everyone.json()["items"]} == {ids["walker"], ids["sleeper"]}


def test_one_audit_row_per_overview_with_the_subjects_and_the_reason(api, as_, world, settings):
    headers = as_("supervisor", [world["a"]])
    username = _me(api, headers)
    with psycopg.connect(settings.database_url) as conn:
        before = conn.execute(
            "SELECT coalesce(max(id), 0) FROM audit_log WHERE username = %s", (username,)
        ).fetchone()[0]
    response = api.get("/api/v1/positions", params={"reason": "shift handover"}, headers=headers)
    assert response.status_code == 200
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT role, action, subject_id, detail FROM audit_log"
            " WHERE username = %s AND id > %s ORDER BY id",
            (username, before),
        ).fetchall()
    assert len(rows) == 1, rows
    role, action, subject_id, detail = rows[0]
    assert (role, action, subject_id) == ("supervisor", "positions_overview", None)
    assert sorted(detail["subject_ids"]) == sorted(
        [world["ids"]["walker"], world["ids"]["sleeper"]]
    )
    assert detail["reason"] == "shift handover"
    assert detail["count"] == 2


def test_a_token_is_required(api):
    assert api.get("/api/v1/positions").status_code == 401
    bad = api.get("/api/v1/positions", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401


# ------------------------------------------------------------------ track downsampling


def expected_thinning(times: list[datetime], n: int) -> list[datetime]:
    """The rule of the OpenAPI description, independently: for each of n instants evenly
    spaced from the first to the last fix, the first fix at or after it."""
    if len(times) <= n:
        return times
    t0, t1 = times[0], times[-1]
    kept: list[datetime] = []
    for i in range(n):
        instant = t0 + (t1 - t0) * i / (n - 1)
        pick = times[bisect.bisect_left(times, instant)]
        if not kept or kept[-1] != pick:
            kept.append(pick)
    return kept


@pytest.fixture(scope="module")
def long_track(settings, world):
    """100 fixes a minute apart, then a 3-hour gap, then 20 more."""
    start = NOW - timedelta(hours=6)
    times = [start + timedelta(minutes=i) for i in range(100)]
    times += [start + timedelta(minutes=100 + 180 + i) for i in range(20)]
    with psycopg.connect(settings.database_url) as conn:
        subject = _subject(conn, "Long walk", world["a"])
        device = _device(conn)
        _hold(conn, device, subject, start - timedelta(days=1))
        for i, ts in enumerate(times):
            _fix(conn, device, ts, -33.9 + i * 1e-4, 18.4 + i * 1e-4)
    return subject, times


def _track(api, headers, subject: int, **params):
    response = api.get(
        f"/api/v1/subjects/{subject}/track",
        params={"from": (NOW - timedelta(hours=7)).isoformat(), "to": NOW.isoformat(), **params},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    points = [f for f in body["features"] if f["geometry"]["type"] == "Point"]
    lines = [f for f in body["features"] if f["geometry"]["type"] == "LineString"]
    return body["properties"], points, lines


def test_max_points_thins_evenly_by_time_keeping_the_first_and_the_last(
    api, as_, long_track, world
):
    subject, times = long_track
    headers = as_("operator", [world["a"]])
    props, points, lines = _track(api, headers, subject)
    assert len(points) == len(times) == props["fixes"]  # without max_points: every fix
    assert "downsampled" not in props

    for n in (2, 3, 10, 25, 60):
        props, points, lines = _track(api, headers, subject, max_points=n)
        got = [datetime.fromisoformat(p["properties"]["ts"]) for p in points]
        assert got == expected_thinning(times, n), n
        assert len(got) <= n
        assert got[0] == times[0] and got[-1] == times[-1]
        assert got == sorted(got)
        assert props["fixes"] == len(got)
        assert props["fixes_in_range"] == len(times)
        assert props["downsampled"] is True
        assert props["max_points"] == n
        assert len(lines) == 1 and len(lines[0]["geometry"]["coordinates"]) == len(got)
    # the gap: the 3 hours without fixes take most instants, so fewer points than asked
    _, points, _ = _track(api, headers, subject, max_points=10)
    assert len(points) < 10

    props, points, _ = _track(api, headers, subject, max_points=500)
    assert len(points) == len(times)
    assert props["downsampled"] is False
    # limit still selects the first fixes of the range, which are then thinned
    props, points, _ = _track(api, headers, subject, max_points=5, limit=50)
    got = [datetime.fromisoformat(p["properties"]["ts"]) for p in points]
    assert got == expected_thinning(times[:50], 5)
    assert props["truncated"] is True and props["fixes_in_range"] == 50


def test_max_points_is_validated(api, as_, long_track, world):
    subject, _ = long_track
    headers = as_("operator", [world["a"]])
    for bad in ("1", "0", "10001", "many"):
        response = api.get(
            f"/api/v1/subjects/{subject}/track", params={"max_points": bad}, headers=headers
        )
        assert response.status_code == 422, (bad, response.text)


# ------------------------------------------------------------------ late fixes


def test_track_and_position_show_when_each_fix_arrived_and_which_were_late(
    api, as_, world, settings
):
    """A fix stored minutes after it was taken (a tag's buffered upload) is marked late in the
    track and the position; one that arrived at once is not."""
    with psycopg.connect(settings.database_url) as conn:
        subject = _subject(conn, "Store and forward", world["a"])
        device = _device(conn)
        _hold(conn, device, subject, NOW - timedelta(days=1))
        for minutes, delay_s in ((40, 3), (30, 2 * 3600), (20, 301), (10, 299)):
            ts = NOW - timedelta(minutes=minutes)
            conn.execute(
                "INSERT INTO fixes (device_id, ts, lat, lon, acc, received_at)"
                " VALUES (%s, %s, -33.9, 18.4, 8, %s)",
                (device, ts, ts + timedelta(seconds=delay_s)),
            )
    headers = as_("operator", [world["a"]])
    properties, points, _ = _track(api, headers, subject)
    assert [p["properties"]["late"] for p in points] == [False, True, True, False]
    assert properties["late_fixes"] == 2
    second = points[1]["properties"]
    assert datetime.fromisoformat(second["received_at"]) - datetime.fromisoformat(
        second["ts"]
    ) == timedelta(hours=2)
    position = api.get(f"/api/v1/subjects/{subject}/position", headers=headers).json()
    assert position["late"] is False
    assert datetime.fromisoformat(position["received_at"]) == NOW - timedelta(seconds=301)
