"""The fixture world of the access matrix (tests/api/test_access_matrix.py): two fresh regions, A
and B, each with a subject holding a device, fixes, a subject zone, a global zone, alerts, a
user and a webhook subscription, and a victim (store/migrations/0013_victim_data.sql): a
subject holding a victim's phone with fixes at VICTIM_HOME, the victim zone that follows it, an
exclusion zone around the victim's home protecting them, and a victim_proximity alert; one user
per role holding region A only; and factories for the resources a mutating case consumes (an
alert to acknowledge, a zone to delete...).

Rows are written straight to the database (one password hash for every user: hashing is slow);
zones go through the API as an admin of every region, so that they are stored as the API stores
them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from tagwatch.alerts.vocabulary import SEVERITY
from tagwatch.api.security import ROLES, allow, current_user, hash_password
from tagwatch.store import cases
from tagwatch.store.absconder_reports import insert_case_row
from tests.support import fresh_id

PASSWORD = "matrix-pass-1"
OTHER_PASSWORD = "matrix-pass-2"
MISSING_ID = 9_000_000_000_000  # a bigint no identity column reaches in a test run

# Fixes, all in March 2025 (the compliance month the matrix asks for). A and B both have fixes at
# SCENE at the same minutes, so a leak shows in every count; only B was also at ELSEWHERE, last.
SCENE = (-33.9200, 18.4200)
ELSEWHERE = (-26.2000, 28.0400)
HELD_FROM = datetime(2025, 3, 1, tzinfo=UTC)
FIX_TIMES = [datetime(2025, 3, 10, 10, minute, tzinfo=UTC) for minute in (0, 5, 10)]
B_LAST_FIX = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
# The victim lives at VICTIM_HOME (lat, lon); the offender's alert fix is OFFENDER_NEAR, 3
# decimals away from it in both coordinates, so a leak of the victim's position is a string
# search (VICTIM_MARKS) away.
VICTIM_HOME = (-33.9512, 18.4631)
OFFENDER_NEAR = (-33.9498, 18.4647)
VICTIM_MARKS = ("-33.951", "18.463")
HOME_ADDRESS = "12 Protea Lane"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32  # a subject's photo, as far as magic numbers go
SQUARE = {
    "type": "Polygon",
    "coordinates": [
        [[18.40, -33.93], [18.41, -33.93], [18.41, -33.92], [18.40, -33.92], [18.40, -33.93]]
    ],
}


# ------------------------------------------------------------------ the route table


@dataclass(frozen=True)
class RouteInfo:
    method: str
    path: str
    authenticated: bool  # depends on current_user (directly or through allow)
    roles: tuple[str, ...] | None  # the roles of its allow(...), None when it declares none

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"


_ALLOW_CODE = allow("admin").dependency.__code__


def _route_objects(app: FastAPI) -> Iterator[Any]:
    """Every route as mounted, with the dependencies its routers added (FastAPI >= 0.16x keeps
    included routers as branches: ``iter_route_contexts`` flattens them; older versions copy
    the routes into ``app.routes``)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI
        yield from app.routes
        return
    yield from iter_route_contexts(app.routes)


def _original(route: Any) -> Any:
    return getattr(route, "original_route", route)


def api_routes(app: FastAPI) -> tuple[list[RouteInfo], list[str]]:
    """The app's HTTP API routes (one per method) and what was left out, as 'kind path'."""
    found: list[RouteInfo] = []
    skipped: list[str] = []
    for route in _route_objects(app):
        original = _original(route)
        if isinstance(original, APIWebSocketRoute):
            skipped.append(f"websocket {route.path}")
            continue
        if not isinstance(original, APIRoute):
            skipped.append(f"starlette {route.path}")  # /openapi.json, /docs, /redoc
            continue
        if not original.include_in_schema:
            skipped.append(f"unlisted {route.path} ({original.endpoint.__module__})")
            continue
        dependencies = list(getattr(route, "dependencies", None) or original.dependencies)
        roles: tuple[str, ...] | None = None
        authenticated = False
        for depends in dependencies:
            call = depends.dependency
            if call is current_user:
                authenticated = True
            code = getattr(call, "__code__", None)
            if code is _ALLOW_CODE:
                authenticated = True
                roles = tuple(inspect.getclosurevars(call).nonlocals["roles"])
        for method in sorted(route.methods or ()):
            found.append(RouteInfo(method, route.path, authenticated, roles))
    return found, skipped


# ------------------------------------------------------------------ the world


@dataclass
class Side:
    """One region's resources."""

    region: str
    subject: int = 0
    device: str = ""
    zone: int = 0
    global_zone: int = 0
    alert: int = 0
    absconder_alert: int = 0
    regionless_alert: int = 0  # no subject: in its own region_id
    user: int = 0
    webhook: int = 0
    channel: int = 0  # a human channel (Apprise URL), inactive: nothing is sent to it
    fixes: int = 0
    victim: int = 0  # a victim subject
    victim_phone: str = ""
    victim_zone: int = 0  # kind victim, owned by `subject`, following the victim's phone
    protected_zone: int = 0  # exclusion zone around the victim's home (protects_subject_id)
    victim_alert: int = 0  # victim_proximity on victim_zone
    office: int = 0  # an office with a service radius (issue 16)
    unit: int = 0  # a tracing unit working from `office`
    case: int = 0  # the absconder case of `absconder_alert` (outstanding; the subject has a photo)
    # an absconder case of `subject`, opened and traced in March 2025 (the absconder template);
    # traced, so that it never stands in the way of a case another test opens for the subject
    report_case: int = 0


@dataclass
class World:
    api: TestClient
    database_url: str
    password_hash: str
    a: Side
    b: Side
    usernames: dict[str, str] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    admin_all: dict[str, str] = field(default_factory=dict)

    def side(self, region: str) -> Side:
        return self.a if region == "A" else self.b

    # -------------------------------------------------------------- users and tokens

    def add_user(self, role: str, regions: list[str], prefix: str = "mx") -> tuple[int, str]:
        username = fresh_id(f"{prefix}-{role}")
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(
                "INSERT INTO users (username, password_hash, role, regions)"
                " VALUES (%s, %s, %s, %s) RETURNING id",
                (username, self.password_hash, role, regions),
            ).fetchone()
        assert row is not None
        return int(row[0]), username

    def token(self, username: str, password: str = PASSWORD) -> dict[str, str]:
        response = self.api.post(
            "/api/v1/auth/token", data={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    def fresh_token(self, role: str) -> dict[str, str]:
        """Another token of the role's matrix user (for logout, which revokes it)."""
        return self.token(self.usernames[role])

    def throwaway(self, role: str) -> dict[str, str]:
        """A token of a new user of the role in region A (for a password change, which revokes
        every token of the user)."""
        _, username = self.add_user(role, [self.a.region], prefix="mxpw")
        return self.token(username)

    # -------------------------------------------------------------- resources on demand

    def new_device(self) -> str:
        device = fresh_id("mxdev")
        with psycopg.connect(self.database_url) as conn:
            conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (device,))
        return device

    def new_alert(self, region: str, alert_type: str = "battery_low", **columns: Any) -> int:
        side = self.side(region)
        return insert_alert(self.database_url, side.subject, side.region, alert_type, **columns)

    def zone_body(self, region: str, **overrides: Any) -> dict[str, Any]:
        return {
            "name": fresh_id("mxzone"),
            "kind": "exclusion",
            "geometry": SQUARE,
            "buffer_m": 100,
            "subject_id": self.side(region).subject,
            **overrides,
        }

    def new_zone(self, region: str, **overrides: Any) -> int:
        response = self.api.post(
            "/api/v1/zones", json=self.zone_body(region, **overrides), headers=self.admin_all
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def new_webhook(self, region: str) -> int:
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(
                "INSERT INTO webhook_subscriptions (name, url, secret, regions)"
                " VALUES (%s, 'https://hooks.example.org/in', %s, %s) RETURNING id",
                (fresh_id("mxhook"), "s" * 32, [self.side(region).region]),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def new_office(self, region: str) -> int:
        """An office at the scene with a 5 km service radius, in the side's region."""
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(
                "INSERT INTO offices (name, region_id, lon, lat, service_radius_m)"
                " VALUES (%s, %s, %s, %s, 5000) RETURNING id",
                (fresh_id("mxoffice"), self.side(region).region, SCENE[1], SCENE[0]),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def new_unit(self, region: str) -> int:
        """A tracing unit of the side's office."""
        side = self.side(region)
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(
                "INSERT INTO tracing_units (name, office_id, region_id) VALUES (%s, %s, %s)"
                " RETURNING id",
                (fresh_id("mxunit"), side.office, side.region),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def new_case(self, region: str, *, traced: bool = False) -> int:
        """An outstanding (or traced) absconder case of a new subject of the side's region,
        opened for its absconder alert as the engine opens one."""
        side = self.side(region)
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(
                "INSERT INTO subjects (name, region_id) VALUES (%s, %s) RETURNING id",
                (fresh_id("mxcase"), side.region),
            ).fetchone()
            assert row is not None
            conn.commit()  # insert_alert connects anew
            # opened now: outside the month the absconder report's case counts
            alert = insert_alert(
                self.database_url,
                row[0],
                side.region,
                "absconder",
                details={"declared_by": "mx"},
                opened_at=datetime.now(UTC),
            )
            opened = cases.open_for_alert(conn, alert, "mx")
            assert opened is not None
            if traced:
                conn.execute(
                    "UPDATE absconder_cases SET status = 'traced', outcome = 'arrested',"
                    " traced_at = now() WHERE id = %s",
                    (opened.case_id,),
                )
        return opened.case_id

    def new_channel(self, region: str) -> int:
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(
                "INSERT INTO notification_channels"
                " (name, url_sealed, url_shown, scheme, regions, active)"
                " VALUES (%s, 'not-a-token', 'mailtos://smtp.example.org', 'mailtos', %s, false)"
                " RETURNING id",
                (fresh_id("mxchan"), [self.side(region).region]),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def one(self, sql: str, params: tuple[Any, ...]) -> Any:
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(sql, params).fetchone()
        return None if row is None else row[0]


def insert_alert(
    database_url: str, subject_id: int | None, region: str, alert_type: str, **columns: Any
) -> int:
    """An alert row as the engine writes one (row and an 'opened' history entry)."""
    values = {
        "subject_id": subject_id,
        "region_id": region,
        "type": alert_type,
        "severity": SEVERITY[alert_type],
        "opened_at": FIX_TIMES[0],
        "episode_key": fresh_id(alert_type),
        **columns,
    }
    if "details" in values:
        values["details"] = Jsonb(values["details"])
    names = ", ".join(values)
    marks = ", ".join(f"%({n})s" for n in values)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            f"INSERT INTO alerts ({names}) VALUES ({marks}) RETURNING id", values
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO alert_history (alert_id, actor, action) VALUES (%s, 'engine', 'opened')",
            (row[0],),
        )
    return int(row[0])


def build_world(api: TestClient, database_url: str) -> World:
    world = World(
        api=api,
        database_url=database_url,
        password_hash=hash_password(PASSWORD),
        a=Side(fresh_id("mxa")),
        b=Side(fresh_id("mxb")),
    )
    with psycopg.connect(database_url) as conn:
        for side in (world.a, world.b):
            conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (side.region, "x"))
            row = conn.execute(
                "INSERT INTO subjects (name, region_id) VALUES (%s, %s) RETURNING id",
                (fresh_id("mxsubject"), side.region),
            ).fetchone()
            assert row is not None
            side.subject = int(row[0])
            side.device = fresh_id("mxtag")
            conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (side.device,))
            conn.execute(
                "INSERT INTO device_assignments (device_id, subject_id, role, during)"
                " VALUES (%s, %s, 'offender', tstzrange(%s, NULL))",
                (side.device, side.subject, HELD_FROM),
            )
            fixes = [(ts, SCENE) for ts in FIX_TIMES]
            if side is world.b:
                fixes.append((B_LAST_FIX, ELSEWHERE))
            for ts, (lat, lon) in fixes:
                conn.execute(
                    "INSERT INTO fixes (device_id, ts, lat, lon, acc) VALUES (%s, %s, %s, %s, 8)",
                    (side.device, ts, lat, lon),
                )
            side.fixes = len(fixes)
    for side in (world.a, world.b):
        side.user, _ = world.add_user("operator", [side.region], prefix="mxtarget")
        side.webhook = world.new_webhook("A" if side is world.a else "B")
        side.office = world.new_office("A" if side is world.a else "B")
        side.unit = world.new_unit("A" if side is world.a else "B")
        side.channel = world.new_channel("A" if side is world.a else "B")
        side.alert = insert_alert(
            database_url,
            side.subject,
            side.region,
            "battery_low",
            device_id=side.device,
            first_fix_at=FIX_TIMES[0],
            last_fix_at=FIX_TIMES[-1],
        )
        side.absconder_alert = insert_alert(
            database_url,
            side.subject,
            side.region,
            "absconder",
            opened_at=datetime(2025, 3, 10, 11, 0, tzinfo=UTC),
        )
        side.regionless_alert = insert_alert(database_url, None, side.region, "battery_low")
        with psycopg.connect(database_url) as conn:
            opened = cases.open_for_alert(conn, side.absconder_alert, "mx")
            assert opened is not None
            side.case = opened.case_id
            conn.execute(
                "INSERT INTO subject_photos (subject_id, content_type, data) VALUES (%s, %s, %s)",
                (side.subject, "image/png", PNG),
            )
            side.report_case = insert_case_row(
                conn,
                side.subject,
                side.region,
                "strap_tamper",
                datetime(2025, 3, 10, 11, 0, tzinfo=UTC),
                datetime(2025, 3, 12, 11, 0, tzinfo=UTC),
                "arrested",
            )
    for role in ROLES:
        _, world.usernames[role] = world.add_user(role, [world.a.region])
        world.headers[role] = world.token(world.usernames[role])
    _, everything = world.add_user("admin", ["*"], prefix="mxsetup")
    world.admin_all = world.token(everything)
    for name, side in (("A", world.a), ("B", world.b)):
        side.zone = world.new_zone(name)
        side.global_zone = world.new_zone(name, subject_id=None, region_id=side.region)
        add_victim(world, name)
    return world


def add_victim(world: World, name: str) -> None:
    """A victim with a phone (fixes at VICTIM_HOME) in the side's region, protected from the
    side's subject by a victim zone and an exclusion zone around the home; an alert of each."""
    side = world.side(name)
    with psycopg.connect(world.database_url) as conn:
        row = conn.execute(
            "INSERT INTO subjects (name, region_id) VALUES (%s, %s) RETURNING id",
            (fresh_id("mxvictim"), side.region),
        ).fetchone()
        assert row is not None
        side.victim = int(row[0])
        side.victim_phone = fresh_id("mxvphone")
        conn.execute(
            "INSERT INTO devices (id, kind, owntracks_topic) VALUES (%s, 'victim_phone', %s)",
            (side.victim_phone, f"owntracks/{side.victim_phone}/phone"),
        )
        conn.execute(
            "INSERT INTO device_assignments (device_id, subject_id, role, during)"
            " VALUES (%s, %s, 'victim', tstzrange(%s, NULL))",
            (side.victim_phone, side.victim, HELD_FROM),
        )
        for ts in FIX_TIMES:
            conn.execute(
                "INSERT INTO fixes (device_id, ts, lat, lon, acc) VALUES (%s, %s, %s, %s, 5)",
                (side.victim_phone, ts, *VICTIM_HOME),
            )
    side.victim_zone = world.new_zone(
        name,
        name=f"{HOME_ADDRESS} (victim phone)",
        kind="victim",
        geometry=None,
        radius_m=500,
        buffer_m=300,
        victim_subject_id=side.victim,
    )
    side.protected_zone = world.new_zone(
        name,
        name=f"{HOME_ADDRESS} (victim home)",
        geometry={"type": "Point", "coordinates": [VICTIM_HOME[1], VICTIM_HOME[0]]},
        radius_m=300,
        buffer_m=200,
        protects_subject_id=side.victim,
    )
    side.victim_alert = insert_alert(
        world.database_url,
        side.subject,
        side.region,
        "victim_proximity",
        device_id=side.device,
        zone_id=side.victim_zone,
        first_fix_at=FIX_TIMES[0],
        last_fix_at=FIX_TIMES[-1],
        lat=OFFENDER_NEAR[0],
        lon=OFFENDER_NEAR[1],
        worst_distance_m=180.0,
        details={"zone_name": f"{HOME_ADDRESS} (victim phone)"},
    )
