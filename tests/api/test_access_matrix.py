"""Role x route x region: every HTTP route of the app, every role, in and out of region.

The routes come from the app's own route table (``app.routes``, dependencies included), so a
route added without an entry in ``MATRIX`` is a failing case, and the allowed roles come from
the route's ``allow(...)`` (``api/security.py``), not from this file. Every case runs as a user
of one role holding region A only (see ``tests/api/matrix_support.py`` for the world):

* a role the route's ``allow(...)`` leaves out gets 403 ("role ... may not do this"), in and out
  of region alike;
* an allowed role gets the route's success status for a resource of region A, and for the same
  request on region B's resource the answer of the rule below; where the rule is 404 the body
  must be exactly the body for a resource that does not exist (ids aside).

Left out of the matrix: the WebSocket feed ``/api/v1/alerts/stream`` (its own tests,
tests/api/test_alert_stream.py), the console's static routes (``include_in_schema=False``,
public, no data), FastAPI's ``/openapi.json``, ``/docs``, ``/redoc``, and the public routes
(``PUBLIC``: no token, no role; ``test_public_routes_need_no_token``), and the phones' HTTP
intake (``DEVICE``: a device's own credentials, never a user's token;
tests/api/test_http_intake.py).

Open to every authenticated role by design (no ``allow(...)``; docs/api.md "who: all"):
``GET /regions``, ``GET /subjects``, ``GET /subjects/{id}``, ``GET /subjects/{id}/regions``,
``GET /subjects/{id}/assignments``, ``GET /devices``, ``GET /devices/{id}``,
``GET /devices/{id}/commands``, ``GET /devices/{id}/commands/{command_id}``.

Exceptions to "out of region answers 404" (the B column is what an allowed role gets):

=================================================  ======================  ==================
route                                              B variant               answer for B
=================================================  ======================  ==================
GET /regions, /subjects, /zones, /alerts,          the list (filtered by   200, no B item in
/positions, /users, /webhooks, /channels, /cases   region=B where the      it (lists are
                                                   route has the filter)   filtered in SQL)
GET /proximity                                     search where only B's   200, no subject
                                                   subject was             found
POST /regions                                      a new region            201: creates, not
                                                                           region-scoped
POST /subjects                                     region_id B             403 "not yours",
                                                                           as for a missing
                                                                           region
POST /users, /webhooks, /channels                  regions [B]             403 "not yours"
                                                                           (users.py; a missing
                                                                           region is a 422)
GET /offices, /tracing-units                       the list                200, no B item
POST /offices                                      region_id B             403 "not yours"
POST /tracing-units                                office_id of B's        422 unknown_office
                                                   office                  as for a missing one
GET /places/locate                                 at B's office           200, B's office not
                                                                           named
POST /zones                                        subject_id of B's       422 unknown_subject
                                                   subject                 as for a missing
                                                                           subject
GET /devices, POST /devices                        the list / a new one    200 without B's
                                                                           held device / 201
POST /auth/logout, POST /auth/password,            (the caller's own       204 / 200 / 200:
GET /auth/me                                       session)                not region-scoped
=================================================  ======================  ==================

Allowed, in region A, and still 403 by a documented region rule (``test_region_rules``): moving
region A's subject to B (PATCH /subjects/{id}), writing a global zone (POST, PATCH, DELETE
/zones: only users with every region), granting region B (PATCH /users/{id}).

Every other route answers 404 for B's resource, with the body of a missing one. Mutating cases
work on resources made for the case (an alert to acknowledge, a zone to delete...) or change
nothing that later cases read (a rename); they run after the reads, deletes last.

Victims' data (``test_victim_data``, store/migrations/0013_victim_data.sql), for every role, in
and out of region, on every route that could show it:

=====================================  ===========================  ===========================
what (region A)                        admin, supervisor            operator, tracer
=====================================  ===========================  ===========================
GET /zones, /zones/{id} of a victim    whole; one ``victim_zone``   listed, ``redacted``: no
zone / exclusion zone protecting one   audit row per victim         name, geometry, radius,
                                                                    buffer, schedule, victim id
GET /subjects/{victim} and its         200 (``victim_subject``      404, the body of a missing
/regions, /assignments, /position,     audit row)                   subject
/track, /export
GET /subjects                          the victim listed (audited)  the victim left out
GET /alerts                            victim alert ``redacted``    the same
GET /alerts/{victim alert}             zone name, distance;         ``redacted``; the
                                       ``victim_zone`` audit row    offender's lat/lon only
GET /proximity at the victim's home,   no victim's phone fix        the same
GET /positions
=====================================  ===========================  ===========================

Region B's victim data answers every role as any of B's resources does (404, or absent).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from tagwatch.api.app import DEVICE_ROUTES, create_app
from tagwatch.api.security import ROLES
from tagwatch.settings import Settings
from tests.api.matrix_support import (
    ELSEWHERE,
    FIX_TIMES,
    HOME_ADDRESS,
    MISSING_ID,
    OFFENDER_NEAR,
    OTHER_PASSWORD,
    PASSWORD,
    PNG,
    SCENE,
    VICTIM_HOME,
    VICTIM_MARKS,
    RouteInfo,
    World,
    api_routes,
    build_world,
)
from tests.support import fresh_id

pytestmark = pytest.mark.integration

V1 = "/api/v1"
PUBLIC = frozenset({"POST /api/v1/auth/token", "GET /healthz", "GET /readyz", "GET /metrics"})
# Phones' HTTP intake: no user token and no role, the device's own credentials instead
# (api/routes/intake.py; its behaviour is tests/api/test_http_intake.py).
DEVICE = frozenset({"POST /owntracks", "GET /osmand/{token}", "POST /osmand/{token}"})
OPEN_TO_ALL_ROLES = frozenset(
    {
        "GET /api/v1/regions",
        "GET /api/v1/subjects",
        "GET /api/v1/subjects/{subject_id}",
        "GET /api/v1/subjects/{subject_id}/regions",
        "GET /api/v1/subjects/{subject_id}/assignments",
        "GET /api/v1/devices",
        "GET /api/v1/devices/{device_id}",
        "GET /api/v1/devices/{device_id}/commands",
        "GET /api/v1/devices/{device_id}/commands/{command_id}",
    }
)
# The policy of docs/api.md, pinned: the matrix takes the roles from allow(...), so widening a
# route's roles would pass it; this table makes such a change a deliberate one.
POLICY: dict[tuple[str, ...], frozenset[str]] = {
    ("admin",): frozenset(
        {
            "POST /api/v1/regions",
            "GET /api/v1/users",
            "POST /api/v1/users",
            "GET /api/v1/users/{user_id}",
            "PATCH /api/v1/users/{user_id}",
            "POST /api/v1/users/{user_id}/password",
            "GET /api/v1/webhooks",
            "POST /api/v1/webhooks",
            "GET /api/v1/webhooks/{webhook_id}",
            "PATCH /api/v1/webhooks/{webhook_id}",
            "DELETE /api/v1/webhooks/{webhook_id}",
            "POST /api/v1/webhooks/{webhook_id}/secret",
            "GET /api/v1/regions/{region_id}",
            "PUT /api/v1/regions/{region_id}/boundary",
            "DELETE /api/v1/regions/{region_id}/boundary",
            "GET /api/v1/offices",
            "POST /api/v1/offices",
            "GET /api/v1/offices/{office_id}",
            "PATCH /api/v1/offices/{office_id}",
            "DELETE /api/v1/offices/{office_id}",
            "GET /api/v1/tracing-units",
            "POST /api/v1/tracing-units",
            "GET /api/v1/tracing-units/{unit_id}",
            "PATCH /api/v1/tracing-units/{unit_id}",
            "DELETE /api/v1/tracing-units/{unit_id}",
            "GET /api/v1/places/locate",
            "GET /api/v1/channels",
            "POST /api/v1/channels",
            "GET /api/v1/channels/{channel_id}",
            "PATCH /api/v1/channels/{channel_id}",
            "DELETE /api/v1/channels/{channel_id}",
        }
    ),
    ("admin", "supervisor"): frozenset(
        {
            "POST /api/v1/subjects",
            "PATCH /api/v1/subjects/{subject_id}",
            "POST /api/v1/subjects/{subject_id}/assignments",
            "PATCH /api/v1/subjects/{subject_id}/assignments/{assignment_id}",
            "POST /api/v1/devices",
            "POST /api/v1/devices/{device_id}/secret",
            "DELETE /api/v1/devices/{device_id}/secret",
            "POST /api/v1/zones",
            "PUT /api/v1/zones/{zone_id}",
            "PATCH /api/v1/zones/{zone_id}",
            "DELETE /api/v1/zones/{zone_id}",
            "GET /api/v1/reports/compliance",
            "GET /api/v1/reports/absconders",
            "GET /api/v1/reports/curfew-presence",
            "GET /api/v1/subjects/{subject_id}/export",
            "PUT /api/v1/subjects/{subject_id}/photo",
        }
    ),
    ("admin", "supervisor", "operator"): frozenset(
        {
            "POST /api/v1/alerts/{alert_id}/acknowledge",
            "POST /api/v1/alerts/{alert_id}/resolve",
            "POST /api/v1/subjects/{subject_id}/absconder",
            "POST /api/v1/devices/{device_id}/commands",
            "POST /api/v1/cases/{case_id}/close",
            "GET /api/v1/reports/absconders/monthly",
        }
    ),
}
MARCH = {"from": "2025-03-01T00:00:00Z", "to": "2025-04-01T00:00:00Z"}
MISSING_REGION = "mx-no-such-region"


@dataclass
class Call:
    """One request; ``missing`` is the same request on a resource that does not exist, and
    ``hidden`` / ``missing.hidden`` the ids that may differ between the two answers."""

    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] | None = None  # instead of the role's token
    content: bytes | None = None  # a raw body (sent with content_type, and the role's token)
    content_type: str | None = None
    hidden: str | None = None
    missing: Call | None = None
    check: Callable[[httpx.Response], None] | None = None


Builder = Callable[[World, str, str], Call]


@dataclass(frozen=True)
class Entry:
    build: Builder
    ok: frozenset[int]  # what an allowed role gets in region A
    out: frozenset[int]  # ... and for region B's resource


def entry(build: Builder, ok: int | set[int], out: int | set[int] = 404, **kw: Any) -> Entry:
    def as_set(value: int | set[int]) -> frozenset[int]:
        return frozenset({value}) if isinstance(value, int) else frozenset(value)

    return Entry(build, as_set(ok), as_set(out), **kw)


# ------------------------------------------------------------------ checks on answers


def ids(response: httpx.Response, key: str | None = None) -> set[Any]:
    body = response.json()
    items = body[key] if key else body
    return {item["id"] for item in items}


def lists(present: Callable[[World], set[Any]], absent: Callable[[World], set[Any]], key=None):
    def make(w: World) -> Callable[[httpx.Response], None]:
        def check(response: httpx.Response) -> None:
            found = ids(response, key)
            assert present(w) <= found, f"missing from the list: {present(w) - found}"
            assert not absent(w) & found, f"region B leaked into the list: {absent(w) & found}"

        return check

    return make


def empty(key: str | None = None) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        assert ids(response, key) == set(), response.text

    return check


def path_call(w: World, region: str, template: str, value: Callable[[Any], Any], **kw) -> Call:
    """A call on the region's resource, with its missing twin for region B."""
    side = w.side(region)
    resource = value(side)
    call = Call(V1 + template.format(resource), hidden=str(resource), **kw)
    if region == "B":
        call.check = None  # the checks are on what region A's resource answers
        missing_value = MISSING_ID if isinstance(resource, int) else "mx-no-such-device"
        call.missing = Call(
            V1 + template.format(missing_value),
            hidden=str(missing_value),
            **{k: v for k, v in kw.items() if k != "check"},
        )
    return call


def on(template: str, value: Callable[[Any], Any], **kw: Any) -> Builder:
    def build(w: World, _role: str, region: str) -> Call:
        return path_call(w, region, template, value, **kw)

    return build


# ------------------------------------------------------------------ builders


def regions_list(w: World, _role: str, region: str) -> Call:
    check = lists(lambda w: {w.a.region}, lambda w: {w.b.region})(w)
    return Call(V1 + "/regions", check=check)


def region_create(w: World, _role: str, _region: str) -> Call:
    return Call(V1 + "/regions", json={"id": fresh_id("mxnew"), "name": "new"})


def subjects_list(w: World, _role: str, region: str) -> Call:
    if region == "A":
        check = lists(lambda w: {w.a.subject}, lambda w: {w.b.subject})(w)
        return Call(V1 + "/subjects", params={"limit": 1000}, check=check)
    return Call(V1 + "/subjects", params={"region": w.b.region}, check=empty())


def devices_list(w: World, _role: str, region: str) -> Call:
    if region == "A":
        check = lists(lambda w: {w.a.device}, lambda w: {w.b.device})(w)
        return Call(V1 + "/devices", params={"limit": 1000}, check=check)
    check = lists(lambda w: set(), lambda w: {w.b.device})(w)
    return Call(V1 + "/devices", params={"limit": 1000}, check=check)


def subject_create(w: World, _role: str, region: str) -> Call:
    target = w.side(region).region
    body = {"name": fresh_id("mxs"), "region_id": target}
    call = Call(V1 + "/subjects", json=body, hidden=target)
    if region == "B":
        call.missing = Call(
            V1 + "/subjects", json={**body, "region_id": MISSING_REGION}, hidden=MISSING_REGION
        )
    return call


def assignment_create(w: World, role: str, region: str) -> Call:
    # role offender: a victim device would make region A's subject a victim (migration 0013),
    # hidden from the operator and tracer cases that follow; victims have test_victim_data
    def body() -> dict[str, Any]:
        return {"device_id": w.new_device(), "role": "offender", "from": "2026-01-01T00:00:00Z"}

    call = path_call(w, region, "/subjects/{}/assignments", lambda s: s.subject, json=body())
    if call.missing:
        call.missing.json = body()
    return call


def assignment_end(w: World, _role: str, region: str) -> Call:
    """End a fresh assignment of the region's subject (ending one in B must leave it open)."""
    side = w.side(region)
    device = w.new_device()
    with psycopg.connect(w.database_url) as conn:
        row = conn.execute(
            "INSERT INTO device_assignments (device_id, subject_id, role, during) VALUES"
            " (%s, %s, 'offender', tstzrange('2026-01-01T00:00:00Z', NULL)) RETURNING id",
            (device, side.subject),
        ).fetchone()
    assert row is not None
    path = f"/subjects/{{}}/assignments/{row[0]}"
    call = Call(V1 + path.format(side.subject), json={}, hidden=str(side.subject))
    if region == "B":
        call.missing = Call(V1 + path.format(MISSING_ID), json={}, hidden=str(MISSING_ID))

        def still_open(_response: httpx.Response) -> None:
            upper = w.one("SELECT upper(during) FROM device_assignments WHERE id = %s", (row[0],))
            assert upper is None

        call.check = still_open
    return call


def assignments_check(w: World) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        assert w.a.device in {a["device_id"] for a in response.json()}

    return check


def device_create(w: World, _role: str, _region: str) -> Call:
    return Call(V1 + "/devices", json={"id": fresh_id("mxprov")})


def position(w: World, role: str, region: str) -> Call:
    def check(response: httpx.Response) -> None:
        body = response.json()
        assert body["device_id"] == w.a.device and (body["lat"], body["lon"]) == SCENE

    return path_call(w, region, "/subjects/{}/position", lambda s: s.subject, check=check)


def track(w: World, role: str, region: str) -> Call:
    def check(response: httpx.Response) -> None:
        assert response.json()["properties"]["fixes"] == w.a.fixes, "B's fixes counted?"

    return path_call(
        w, region, "/subjects/{}/track", lambda s: s.subject, params=dict(MARCH), check=check
    )


def zones_list(w: World, _role: str, region: str) -> Call:
    if region == "A":
        check = lists(lambda w: {w.a.zone, w.a.global_zone}, lambda w: {w.b.zone, w.b.global_zone})(
            w
        )
        return Call(V1 + "/zones", params={"limit": 1000}, check=check)
    return Call(V1 + "/zones", params={"region": w.b.region, "limit": 1000}, check=empty())


def zone_create(w: World, _role: str, region: str) -> Call:
    subject = w.side(region).subject
    call = Call(V1 + "/zones", json=w.zone_body(region), hidden=str(subject))
    if region == "B":
        call.missing = Call(
            V1 + "/zones", json=w.zone_body(region, subject_id=MISSING_ID), hidden=str(MISSING_ID)
        )
    return call


def zone_replace(w: World, _role: str, region: str) -> Call:
    # The body is region A's in both variants: only the zone in the path differs.
    return path_call(w, region, "/zones/{}", lambda s: s.zone, json=w.zone_body("A"))


def zone_delete(w: World, _role: str, region: str) -> Call:
    zone = w.new_zone(region)
    call = Call(V1 + f"/zones/{zone}", hidden=str(zone))
    if region == "B":
        call.missing = Call(V1 + f"/zones/{MISSING_ID}", hidden=str(MISSING_ID))

        def kept(_response: httpx.Response) -> None:
            assert w.one("SELECT deleted_at FROM zones WHERE id = %s", (zone,)) is None

        call.check = kept
    return call


def alerts_list(w: World, _role: str, region: str) -> Call:
    if region == "A":
        check = lists(
            lambda w: {w.a.alert, w.a.absconder_alert, w.a.regionless_alert},
            lambda w: {w.b.alert, w.b.absconder_alert, w.b.regionless_alert},
            key="items",
        )(w)
        return Call(V1 + "/alerts", params={"limit": 1000}, check=check)
    return Call(V1 + "/alerts", params={"region": w.b.region}, check=empty("items"))


def alert_detail(w: World, _role: str, region: str) -> Call:
    def check(response: httpx.Response) -> None:
        devices = {f["properties"]["device_id"] for f in response.json()["fixes"]["features"]}
        assert devices == {w.a.device}, devices

    return path_call(w, region, "/alerts/{}", lambda s: s.alert, check=check)


def alert_action(action: str, body: dict[str, Any] | None = None) -> Builder:
    """On an open alert made for the case, so that no case sees another's action."""

    def build(w: World, _role: str, region: str) -> Call:
        alert = w.new_alert(region)
        call = Call(V1 + f"/alerts/{alert}/{action}", json=body, hidden=str(alert))
        if region == "B":
            call.missing = Call(
                V1 + f"/alerts/{MISSING_ID}/{action}", json=body, hidden=str(MISSING_ID)
            )

            def untouched(_response: httpx.Response) -> None:
                assert w.one("SELECT status FROM alerts WHERE id = %s", (alert,)) == "open"

            call.check = untouched
        return call

    return build


def logout(w: World, role: str, _region: str) -> Call:
    headers = w.fresh_token(role)

    def check(_response: httpx.Response) -> None:
        assert w.api.get(V1 + "/auth/me", headers=headers).status_code == 401

    return Call(V1 + "/auth/logout", headers=headers, check=check)


def password_change(w: World, role: str, _region: str) -> Call:
    return Call(
        V1 + "/auth/password",
        headers=w.throwaway(role),
        json={"old": PASSWORD, "new": OTHER_PASSWORD},
    )


def me(w: World, role: str, _region: str) -> Call:
    def check(response: httpx.Response) -> None:
        assert response.json()["role"] == role and response.json()["regions"] == [w.a.region]

    return Call(V1 + "/auth/me", check=check)


def users_list(w: World, _role: str, _region: str) -> Call:
    check = lists(lambda w: {w.a.user}, lambda w: {w.b.user})(w)
    return Call(V1 + "/users", params={"limit": 1000}, check=check)


def user_create(w: World, _role: str, region: str) -> Call:
    body = {
        "username": fresh_id("mxnew"),
        "role": "tracer",
        "regions": [w.side(region).region],
        "password": OTHER_PASSWORD,
    }
    return Call(V1 + "/users", json=body)


def webhooks_list(w: World, _role: str, _region: str) -> Call:
    check = lists(lambda w: {w.a.webhook}, lambda w: {w.b.webhook})(w)
    return Call(V1 + "/webhooks", params={"limit": 1000}, check=check)


def webhook_create(w: World, _role: str, region: str) -> Call:
    body = {
        "name": fresh_id("mxhook"),
        "url": "https://hooks.example.org/new",
        "regions": [w.side(region).region],
    }
    return Call(V1 + "/webhooks", json=body)


def channels_list(w: World, _role: str, _region: str) -> Call:
    check = lists(lambda w: {w.a.channel}, lambda w: {w.b.channel})(w)
    return Call(V1 + "/channels", params={"limit": 1000}, check=check)


def channel_create(w: World, _role: str, region: str) -> Call:
    body = {
        "name": fresh_id("mxchan"),
        "url": "mailtos://unit:pw@smtp.example.org?to=tracing@example.org",
        "regions": [w.side(region).region],
        "active": False,
    }
    return Call(V1 + "/channels", json=body)


def channel_delete(w: World, _role: str, region: str) -> Call:
    channel = w.new_channel(region)
    call = Call(V1 + f"/channels/{channel}", hidden=str(channel))
    if region == "B":
        call.missing = Call(V1 + f"/channels/{MISSING_ID}", hidden=str(MISSING_ID))
    return call


def webhook_delete(w: World, _role: str, region: str) -> Call:
    webhook = w.new_webhook(region)
    call = Call(V1 + f"/webhooks/{webhook}", hidden=str(webhook))
    if region == "B":
        call.missing = Call(V1 + f"/webhooks/{MISSING_ID}", hidden=str(MISSING_ID))

        def kept(_response: httpx.Response) -> None:
            query = "SELECT active FROM webhook_subscriptions WHERE id = %s"
            assert w.one(query, (webhook,)) is True

        call.check = kept
    return call


def positions(w: World, _role: str, region: str) -> Call:
    def check(response: httpx.Response) -> None:
        body = response.json()
        found = {item["subject_id"] for item in body["items"]}
        assert body["count"] == len(found), body
        if region == "A":
            assert w.a.subject in found and w.b.subject not in found, found
        else:
            assert found == set(), "region B's subject listed"

    params = {} if region == "A" else {"region": w.b.region}
    return Call(V1 + "/positions", params=params, check=check)


def proximity(w: World, _role: str, region: str) -> Call:
    window = {"from": "2025-03-10T00:00:00Z", "to": "2025-03-11T00:00:00Z", "radius_m": 200}
    if region == "A":
        lat, lon = SCENE

        def check(response: httpx.Response) -> None:
            found = {s["subject_id"]: s for s in response.json()["subjects"]}
            assert w.b.subject not in found, "region B's subject found"
            assert found[w.a.subject]["fixes_within"] == len(FIX_TIMES)

    else:
        lat, lon = ELSEWHERE

        def check(response: httpx.Response) -> None:
            assert response.json()["subjects"] == [], response.text

    return Call(V1 + "/proximity", params={**window, "lat": lat, "lon": lon}, check=check)


def report(name: str, params: dict[str, Any]) -> Builder:
    def build(w: World, _role: str, region: str) -> Call:
        target = w.side(region).region
        if name == "compliance":

            def check(response: httpx.Response) -> None:
                body = response.json()
                assert body["subjects_monitored"] == 1, body
                assert body["fixes"] == w.a.fixes, body

        else:

            def check(response: httpx.Response) -> None:
                rows = response.json()["rows"]
                assert {r["alert_id"] for r in rows} == {w.a.absconder_alert}, rows

        call = Call(
            V1 + f"/reports/{name}",
            params={**params, "region": target},
            hidden=target,
            check=check if region == "A" else None,
        )
        if region == "B":
            call.missing = Call(
                V1 + f"/reports/{name}",
                params={**params, "region": MISSING_REGION},
                hidden=MISSING_REGION,
            )
        return call

    return build


def absconder_template(w: World, _role: str, region: str) -> Call:
    """Without a region: the caller's regions (A alone) and a roll-up of them; region B by name
    answers as a region that does not exist."""
    path = V1 + "/reports/absconders/monthly"
    if region == "A":

        def check(response: httpx.Response) -> None:
            body = response.json()
            assert [r["region"] for r in body["regions"]] == [w.a.region], body["regions"]
            column, national = body["regions"][0], body["national"]
            # new: the traced March case and the outstanding case of the absconder alert
            assert (column["new"], column["traced"], column["monitored_subjects"]) == (2, 1, 1)
            assert national["regions_included"] == [w.a.region]
            assert national["monitored_subjects"] == 1, "region B's subject in the roll-up"
            assert w.b.region not in response.text

        return Call(path, params={"month": "2025-03"}, check=check)
    return Call(
        path,
        params={"month": "2025-03", "region": w.b.region},
        hidden=w.b.region,
        missing=Call(
            path, params={"month": "2025-03", "region": MISSING_REGION}, hidden=MISSING_REGION
        ),
    )


def curfew_presence(w: World, _role: str, region: str) -> Call:
    """The subject is a query parameter: region B's subject answers as one that does not exist."""
    path = V1 + "/reports/curfew-presence"
    subject = w.side(region).subject
    call = Call(path, params={**MARCH, "subject_id": subject}, hidden=str(subject))
    if region == "A":
        call.check = lambda response: (
            None if "nights" in response.json() else pytest.fail(response.text)
        )
    else:
        call.missing = Call(
            path, params={**MARCH, "subject_id": MISSING_ID}, hidden=str(MISSING_ID)
        )
    return call


def export(w: World, _role: str, region: str) -> Call:
    def check(response: httpx.Response) -> None:
        features = [f["properties"] for f in response.json()["features"]]
        fixes = [f for f in features if f["kind"] == "fix"]
        assert len(fixes) == w.a.fixes and {f["device_id"] for f in fixes} == {w.a.device}
        alerts = {f["id"] for f in features if f["kind"] == "alert"}
        assert {w.a.alert, w.a.absconder_alert} <= alerts, alerts
        assert not alerts & {w.b.alert, w.b.absconder_alert, w.b.regionless_alert}, alerts

    return path_call(
        w, region, "/subjects/{}/export", lambda s: s.subject, params=dict(MARCH), check=check
    )


# ------------------------------------------------------------------ the matrix


def command_read(w: World, _role: str, region: str) -> Call:
    """A command of the region's device; region B's answers as a missing device's."""
    side = w.side(region)
    with psycopg.connect(w.database_url) as conn:
        row = conn.execute(
            "INSERT INTO device_commands (device_id, type, origin, expires_at)"
            " VALUES (%s, 'locate_now', 'matrix', now() + interval '1 hour') RETURNING id",
            (side.device,),
        ).fetchone()
    assert row is not None
    call = Call(f"{V1}/devices/{side.device}/commands/{row[0]}", hidden=side.device)
    if region == "B":
        call.missing = Call(
            f"{V1}/devices/mx-no-such-device/commands/{row[0]}", hidden="mx-no-such-device"
        )
    return call


BOUNDARY = {
    "type": "Polygon",
    "coordinates": [[[18.0, -34.2], [18.8, -34.2], [18.8, -33.6], [18.0, -33.6], [18.0, -34.2]]],
}


def offices_list(w: World, _role: str, region: str) -> Call:
    if region == "A":
        check = lists(lambda w: {w.a.office}, lambda w: {w.b.office})(w)
        return Call(V1 + "/offices", params={"limit": 1000}, check=check)
    return Call(V1 + "/offices", params={"region": w.b.region, "limit": 1000}, check=empty())


def office_create(w: World, _role: str, region: str) -> Call:
    target = w.side(region).region
    body = {"name": fresh_id("mxo"), "region_id": target, "lon": 18.4, "lat": -33.9,
            "service_radius_m": 1000}  # fmt: skip
    call = Call(V1 + "/offices", json=body, hidden=target)
    if region == "B":
        call.missing = Call(
            V1 + "/offices", json={**body, "region_id": MISSING_REGION}, hidden=MISSING_REGION
        )
    return call


def office_delete(w: World, _role: str, region: str) -> Call:
    office = w.new_office(region)
    call = Call(V1 + f"/offices/{office}", hidden=str(office))
    if region == "B":
        call.missing = Call(V1 + f"/offices/{MISSING_ID}", hidden=str(MISSING_ID))

        def kept(_response: httpx.Response) -> None:
            assert w.one("SELECT id FROM offices WHERE id = %s", (office,)) == office

        call.check = kept
    return call


def units_list(w: World, _role: str, region: str) -> Call:
    check = lists(lambda w: {w.a.unit}, lambda w: {w.b.unit})(w)
    return Call(V1 + "/tracing-units", params={"limit": 1000}, check=check)


def unit_create(w: World, _role: str, region: str) -> Call:
    office = w.side(region).office
    call = Call(V1 + "/tracing-units", json={"name": "mx", "office_id": office}, hidden=str(office))
    if region == "B":
        call.missing = Call(
            V1 + "/tracing-units",
            json={"name": "mx", "office_id": MISSING_ID},
            hidden=str(MISSING_ID),
        )
    return call


def unit_delete(w: World, _role: str, region: str) -> Call:
    unit = w.new_unit(region)
    call = Call(V1 + f"/tracing-units/{unit}", hidden=str(unit))
    if region == "B":
        call.missing = Call(V1 + f"/tracing-units/{MISSING_ID}", hidden=str(MISSING_ID))

        def kept(_response: httpx.Response) -> None:
            assert w.one("SELECT id FROM tracing_units WHERE id = %s", (unit,)) == unit

        call.check = kept
    return call


def locate(w: World, _role: str, region: str) -> Call:
    """At the scene every office of the world serves (both sides' offices are there): the
    answer names region A's office and never region B's."""

    def check(response: httpx.Response) -> None:
        named = {o["office_id"] for o in response.json()["serving"]}
        assert w.a.office in named and w.b.office not in named, response.text

    lat, lon = SCENE
    return Call(V1 + "/places/locate", params={"lat": lat, "lon": lon}, check=check)


def boundary_delete(w: World, _role: str, region: str) -> Call:
    call = path_call(w, region, "/regions/{}/boundary", lambda s: s.region)
    if region == "B":

        def kept(_response: httpx.Response) -> None:
            query = "SELECT boundary IS NOT NULL FROM regions WHERE id = %s"
            assert w.one(query, (w.b.region,)) is True

        with psycopg.connect(w.database_url) as conn:
            conn.execute(
                "UPDATE regions SET boundary = %s WHERE id = %s",
                (json.dumps(BOUNDARY), w.b.region),
            )
        call.check = kept
    return call


def cases_list(w: World, _role: str, region: str) -> Call:
    if region == "A":
        check = lists(lambda w: {w.a.case}, lambda w: {w.b.case})(w)
        return Call(V1 + "/cases", params={"limit": 1000}, check=check)
    return Call(V1 + "/cases", params={"region": w.b.region, "limit": 1000}, check=empty())


def case_action(
    action: str, body: dict[str, Any] | None = None, *, traced: bool = False
) -> Builder:
    """On a case made for the call (``traced`` for a close), so that no call sees another's."""

    def build(w: World, _role: str, region: str) -> Call:
        case = w.new_case(region, traced=traced)
        call = Call(V1 + f"/cases/{case}{action}", json=body, hidden=str(case))
        if region == "B":
            call.missing = Call(
                V1 + f"/cases/{MISSING_ID}{action}", json=body, hidden=str(MISSING_ID)
            )

            def untouched(_response: httpx.Response) -> None:
                query = "SELECT status || coalesce(officer, '') FROM absconder_cases WHERE id = %s"
                assert w.one(query, (case,)) == ("traced" if traced else "outstanding")

            call.check = untouched
        return call

    return build


def photo_put(w: World, _role: str, region: str) -> Call:
    call = path_call(w, region, "/subjects/{}/photo", lambda s: s.subject)
    for one in (call, call.missing):
        if one is not None:
            one.content, one.content_type = PNG, "image/png"
    return call


MATRIX: dict[str, Entry] = {
    # regions, subjects, assignments
    "GET /api/v1/regions": entry(regions_list, 200, 200),
    "POST /api/v1/regions": entry(region_create, 201, 201),
    "GET /api/v1/subjects": entry(subjects_list, 200, 200),
    "POST /api/v1/subjects": entry(subject_create, 201, 403),
    "GET /api/v1/subjects/{subject_id}": entry(on("/subjects/{}", lambda s: s.subject), 200),
    "PATCH /api/v1/subjects/{subject_id}": entry(
        on("/subjects/{}", lambda s: s.subject, json={"name": "renamed"}), 200
    ),
    "GET /api/v1/subjects/{subject_id}/regions": entry(
        on("/subjects/{}/regions", lambda s: s.subject), 200
    ),
    "POST /api/v1/subjects/{subject_id}/assignments": entry(assignment_create, 201),
    "PATCH /api/v1/subjects/{subject_id}/assignments/{assignment_id}": entry(assignment_end, 200),
    "GET /api/v1/subjects/{subject_id}/assignments": entry(
        lambda w, role, region: path_call(
            w, region, "/subjects/{}/assignments", lambda s: s.subject, check=assignments_check(w)
        ),
        200,
    ),
    # devices: a device held by a subject of another region is invisible; stock is visible
    "GET /api/v1/devices": entry(devices_list, 200, 200),
    "GET /api/v1/devices/{device_id}": entry(on("/devices/{}", lambda s: s.device), 200),
    "POST /api/v1/devices": entry(device_create, 201, 201),
    # the matrix's devices have no secret yet: rotating gives one, revoking withdraws it
    "POST /api/v1/devices/{device_id}/secret": entry(
        on("/devices/{}/secret", lambda s: s.device), 200
    ),
    "DELETE /api/v1/devices/{device_id}/secret": entry(
        on("/devices/{}/secret", lambda s: s.device), 204
    ),
    "POST /api/v1/devices/{device_id}/commands": entry(
        on("/devices/{}/commands", lambda s: s.device, json={"type": "locate_now"}), 201
    ),
    "GET /api/v1/devices/{device_id}/commands": entry(
        on("/devices/{}/commands", lambda s: s.device), 200
    ),
    "GET /api/v1/devices/{device_id}/commands/{command_id}": entry(command_read, 200),
    # location
    "GET /api/v1/subjects/{subject_id}/position": entry(position, 200),
    "GET /api/v1/subjects/{subject_id}/track": entry(track, 200),
    "GET /api/v1/positions": entry(positions, 200, 200),
    "GET /api/v1/proximity": entry(proximity, 200, 200),
    "GET /api/v1/subjects/{subject_id}/export": entry(export, 200),
    # zones
    "GET /api/v1/zones": entry(zones_list, 200, 200),
    "GET /api/v1/zones/{zone_id}": entry(on("/zones/{}", lambda s: s.zone), 200),
    "POST /api/v1/zones": entry(zone_create, 201, 422),
    "PUT /api/v1/zones/{zone_id}": entry(zone_replace, 200),
    "PATCH /api/v1/zones/{zone_id}": entry(
        on("/zones/{}", lambda s: s.zone, json={"name": "renamed"}), 200
    ),
    "DELETE /api/v1/zones/{zone_id}": entry(zone_delete, 204),
    # alerts
    "GET /api/v1/alerts": entry(alerts_list, 200, 200),
    "GET /api/v1/alerts/{alert_id}": entry(alert_detail, 200),
    "POST /api/v1/alerts/{alert_id}/acknowledge": entry(alert_action("acknowledge"), 200),
    "POST /api/v1/alerts/{alert_id}/resolve": entry(
        alert_action("resolve", {"outcome": "false_alarm", "note": "matrix"}), 200
    ),
    "POST /api/v1/alerts/{alert_id}/notes": entry(
        on("/alerts/{}/notes", lambda s: s.alert, json={"body": "matrix note"}), 201
    ),
    "POST /api/v1/subjects/{subject_id}/absconder": entry(
        on("/subjects/{}/absconder", lambda s: s.subject, json={"note": "gone"}), {200, 201}
    ),
    # sessions
    "POST /api/v1/auth/logout": entry(logout, 204, 204),
    "POST /api/v1/auth/password": entry(password_change, 200, 200),
    "GET /api/v1/auth/me": entry(me, 200, 200),
    # users
    "GET /api/v1/users": entry(users_list, 200, 200),
    "GET /api/v1/users/{user_id}": entry(on("/users/{}", lambda s: s.user), 200),
    "POST /api/v1/users": entry(user_create, 201, 403),
    "PATCH /api/v1/users/{user_id}": entry(
        on("/users/{}", lambda s: s.user, json={"role": "tracer"}), 200
    ),
    "POST /api/v1/users/{user_id}/password": entry(
        on("/users/{}/password", lambda s: s.user, json={"password": OTHER_PASSWORD}), 204
    ),
    # webhooks
    "GET /api/v1/webhooks": entry(webhooks_list, 200, 200),
    "GET /api/v1/webhooks/{webhook_id}": entry(on("/webhooks/{}", lambda s: s.webhook), 200),
    "POST /api/v1/webhooks": entry(webhook_create, 201, 403),
    "PATCH /api/v1/webhooks/{webhook_id}": entry(
        on("/webhooks/{}", lambda s: s.webhook, json={"name": "renamed"}), 200
    ),
    "DELETE /api/v1/webhooks/{webhook_id}": entry(webhook_delete, 204),
    "POST /api/v1/webhooks/{webhook_id}/secret": entry(
        on("/webhooks/{}/secret", lambda s: s.webhook), 200
    ),
    # geography (issue 16)
    "GET /api/v1/regions/{region_id}": entry(on("/regions/{}", lambda s: s.region), 200),
    "PUT /api/v1/regions/{region_id}/boundary": entry(
        on("/regions/{}/boundary", lambda s: s.region, json={"boundary": BOUNDARY}), 200
    ),
    "DELETE /api/v1/regions/{region_id}/boundary": entry(boundary_delete, 204),
    "GET /api/v1/offices": entry(offices_list, 200, 200),
    "POST /api/v1/offices": entry(office_create, 201, 403),
    "GET /api/v1/offices/{office_id}": entry(on("/offices/{}", lambda s: s.office), 200),
    "PATCH /api/v1/offices/{office_id}": entry(
        on("/offices/{}", lambda s: s.office, json={"name": "renamed"}), 200
    ),
    "DELETE /api/v1/offices/{office_id}": entry(office_delete, 204),
    "GET /api/v1/tracing-units": entry(units_list, 200, 200),
    "POST /api/v1/tracing-units": entry(unit_create, 201, 422),
    "GET /api/v1/tracing-units/{unit_id}": entry(on("/tracing-units/{}", lambda s: s.unit), 200),
    "PATCH /api/v1/tracing-units/{unit_id}": entry(
        on("/tracing-units/{}", lambda s: s.unit, json={"name": "renamed"}), 200
    ),
    "DELETE /api/v1/tracing-units/{unit_id}": entry(unit_delete, 204),
    "GET /api/v1/places/locate": entry(locate, 200, 200),
    # human channels
    "GET /api/v1/channels": entry(channels_list, 200, 200),
    "GET /api/v1/channels/{channel_id}": entry(on("/channels/{}", lambda s: s.channel), 200),
    "POST /api/v1/channels": entry(channel_create, 201, 403),
    "PATCH /api/v1/channels/{channel_id}": entry(
        on("/channels/{}", lambda s: s.channel, json={"name": "renamed"}), 200
    ),
    "DELETE /api/v1/channels/{channel_id}": entry(channel_delete, 204),
    # absconder cases and photos (issue 16)
    "GET /api/v1/cases": entry(cases_list, 200, 200),
    "GET /api/v1/cases/{case_id}": entry(on("/cases/{}", lambda s: s.case), 200),
    "PATCH /api/v1/cases/{case_id}": entry(case_action("", {"officer": "mx officer"}), 200),
    "POST /api/v1/cases/{case_id}/attempts": entry(
        case_action("/attempts", {"method": "visit", "outcome": "not home", "place": "home"}), 201
    ),
    "POST /api/v1/cases/{case_id}/trace": entry(case_action("/trace", {"outcome": "other"}), 200),
    "POST /api/v1/cases/{case_id}/close": entry(case_action("/close", traced=True), 200),
    "GET /api/v1/cases/{case_id}/photo": entry(on("/cases/{}/photo", lambda s: s.case), 200),
    "GET /api/v1/subjects/{subject_id}/photo": entry(
        on("/subjects/{}/photo", lambda s: s.subject), 200
    ),
    "PUT /api/v1/subjects/{subject_id}/photo": entry(photo_put, 200),
    # reports
    "GET /api/v1/reports/compliance": entry(report("compliance", {"month": "2025-03"}), 200),
    "GET /api/v1/reports/absconders": entry(report("absconders", dict(MARCH)), 200),
    "GET /api/v1/reports/curfew-presence": entry(curfew_presence, 200),
    "GET /api/v1/reports/absconders/monthly": entry(absconder_template, 200),
}

# ------------------------------------------------------------------ the route table


def _route_table() -> tuple[list[RouteInfo], list[str]]:
    # The route table does not depend on the settings; nothing is opened here.
    return api_routes(create_app(Settings(environment="test")))


ROUTES, SKIPPED = _route_table()
METHOD_ORDER = {"GET": 0, "PUT": 1, "PATCH": 1, "POST": 1, "DELETE": 2}
CASES = [
    pytest.param(route, role, region, id=f"{route.key}-{role}-{region}")
    for route in sorted(
        (r for r in ROUTES if r.key not in PUBLIC | DEVICE),
        key=lambda r: METHOD_ORDER.get(r.method, 1),
    )
    for role in ROLES
    for region in ("A", "B")
]


@pytest.fixture(scope="module")
def world(api, settings) -> World:
    return build_world(api, settings.database_url)


def test_the_route_table_is_what_the_matrix_expects():
    keys = {r.key for r in ROUTES}
    assert keys - PUBLIC - DEVICE == set(MATRIX), "routes without a matrix entry, or entries"
    assert keys >= PUBLIC | DEVICE
    assert {r.path for r in ROUTES if r.key in DEVICE} == set(DEVICE_ROUTES)
    for route in ROUTES:
        if route.key in PUBLIC | DEVICE:
            assert not route.authenticated, f"{route.key} is listed as public but needs a token"
        else:
            assert route.authenticated, f"{route.key} answers without a token"
            if route.key in OPEN_TO_ALL_ROLES:
                assert route.roles is None, f"{route.key} now declares allow{route.roles}"
            else:
                assert route.roles, f"{route.key} declares no allow(...)"
    skipped = "\n".join(SKIPPED)
    assert "websocket /api/v1/alerts/stream" in skipped
    assert all(
        line.startswith(("websocket", "starlette")) or "tagwatch.api.routes.console" in line
        for line in SKIPPED
    ), skipped


def test_declared_roles_are_the_documented_policy():
    """Every other route is for every role, with allow(...) or (OPEN_TO_ALL_ROLES) without."""
    for route in ROUTES:
        if route.key in PUBLIC | DEVICE:
            continue
        expected = next((roles for roles, keys in POLICY.items() if route.key in keys), ROLES)
        assert set(route.roles or ROLES) == set(expected), f"{route.key}: allow{route.roles}"


def test_device_routes_refuse_users_tokens_and_requests_without_device_credentials(
    api, world: World
):
    """A user's bearer token is no device credential: 401, as without any."""
    for key in sorted(DEVICE):
        method, path = key.split(" ", 1)
        path = path.replace("{token}", "not-a-token")
        for headers in ({}, world.headers["admin"]):
            assert api.request(method, path, headers=headers).status_code == 401, key


def test_public_routes_need_no_token(api):
    for key in sorted(PUBLIC - {"POST /api/v1/auth/token"}):
        method, path = key.split(" ", 1)
        assert api.request(method, path).status_code == 200, key


def _send(w: World, method: str, role: str, call: Call) -> httpx.Response:
    headers = call.headers if call.headers is not None else w.headers[role]
    if call.content is not None:
        return w.api.request(
            method,
            call.path,
            params=call.params,
            content=call.content,
            headers={**headers, "Content-Type": call.content_type or ""},
        )
    return w.api.request(method, call.path, params=call.params, json=call.json, headers=headers)


def _masked(response: httpx.Response, hidden: str | None) -> str:
    text = json.dumps(response.json(), sort_keys=True)
    if hidden:
        text = re.sub(rf"(?<![\w-]){re.escape(hidden)}(?![\w-])", "<hidden>", text)
    return text


@pytest.mark.parametrize(("route", "role", "region"), CASES)
def test_access(world: World, route: RouteInfo, role: str, region: str):
    spec = MATRIX.get(route.key)
    assert spec is not None, f"no matrix entry for {route.key}: add one to MATRIX"
    allowed = role in (route.roles or ROLES)
    call = spec.build(world, role, region)
    response = _send(world, route.method, role, call)
    where = f"{route.key} as {role} of A, {'own' if region == 'A' else 'other'} region"
    if not allowed:
        assert response.status_code == 403, f"{where}: {response.status_code} {response.text}"
        assert "may not" in response.json()["detail"], response.text
        return
    expected = spec.ok if region == "A" else spec.out
    if region == "B" and spec.out == frozenset({404}):
        assert call.missing is not None, f"{route.key}: a 404 case needs its missing twin"
    assert response.status_code in expected, f"{where}: {response.status_code} {response.text}"
    if call.missing is not None:
        twin = _send(world, route.method, role, call.missing)
        assert twin.status_code == response.status_code, f"{where}: missing gets {twin.text}"
        assert _masked(response, call.hidden) == _masked(twin, call.missing.hidden), (
            f"{where}: region B's answer differs from a missing resource's"
        )
    if call.check is not None:
        call.check(response)


def test_the_docstring_table_names_every_exception():
    """Every route whose out-of-region answer is not 404 has its row in the module docstring."""
    for key, spec in MATRIX.items():
        if spec.out != frozenset({404}):
            short = re.sub(r"\{[^}]+\}", "{id}", key.split(" ", 1)[1].removeprefix(V1))
            assert short in (__doc__ or ""), f"{key} answers {set(spec.out)} for region B"


def _region_rules(w: World) -> list[tuple[str, str, str, dict[str, Any] | None, int]]:
    """(role, method, path, body, status): refusals that depend on the region, not the role."""
    a = w.a
    global_body = w.zone_body("A", subject_id=None, region_id=a.region)
    return [
        ("supervisor", "PATCH", f"/subjects/{a.subject}", {"region_id": w.b.region}, 403),
        ("supervisor", "POST", "/zones", global_body, 403),
        ("supervisor", "PATCH", f"/zones/{a.global_zone}", {"name": "x"}, 403),
        ("supervisor", "DELETE", f"/zones/{a.global_zone}", None, 403),
        ("admin", "PATCH", f"/users/{a.user}", {"regions": [a.region, w.b.region]}, 403),
        ("admin", "PATCH", f"/webhooks/{a.webhook}", {"regions": [w.b.region]}, 403),
        ("admin", "POST", "/users", {"username": fresh_id("mx"), "role": "admin",
                                      "regions": ["*"], "password": OTHER_PASSWORD}, 403),
    ]  # fmt: skip


def test_region_rules(world: World):
    """A user of region A cannot move a subject to B, write global zones or grant B or '*'."""
    for role, method, path, body, status in _region_rules(world):
        response = world.api.request(method, V1 + path, json=body, headers=world.headers[role])
        assert response.status_code == status, (role, method, path, response.text)
    assert world.one("SELECT region_id FROM subjects WHERE id = %s", (world.a.subject,)) == (
        world.a.region
    )
    query = "SELECT deleted_at FROM zones WHERE id = %s"
    assert world.one(query, (world.a.global_zone,)) is None


def test_references_to_region_b_answer_like_missing_ones(world: World):
    """A zone naming B's subject as its victim, or moved to B's subject: the 422 of a missing
    subject, so the answer does not tell that the subject exists."""
    w, headers = world, world.headers["supervisor"]
    victim = {"kind": "victim", "radius_m": 100, "subject_id": w.a.subject}
    protecting = w.zone_body("A")
    for method, path, body_b, body_missing in [
        ("POST", "/zones", {**victim, "victim_subject_id": w.b.subject},
         {**victim, "victim_subject_id": MISSING_ID}),
        ("POST", "/zones", {**protecting, "protects_subject_id": w.b.victim},
         {**protecting, "protects_subject_id": MISSING_ID}),
        ("PATCH", f"/zones/{w.a.zone}", {"subject_id": w.b.subject}, {"subject_id": MISSING_ID}),
    ]:  # fmt: skip
        b = w.api.request(method, V1 + path, json=body_b, headers=headers)
        missing = w.api.request(method, V1 + path, json=body_missing, headers=headers)
        assert b.status_code == missing.status_code == 422, (b.text, missing.text)
        hidden = str(body_b.get("protects_subject_id") or w.b.subject)
        assert _masked(b, hidden) == _masked(missing, str(MISSING_ID))


# ------------------------------------------------------------------ victims' data

VICTIM_READERS = frozenset({"admin", "supervisor"})
WITHHELD = (
    "geometry",
    "radius_m",
    "buffer_m",
    "schedule",
    "victim_subject_id",
    "protects_subject_id",
)


def _audit_rows(w: World, username: str, after: int) -> list[tuple[str, int | None, Any]]:
    with psycopg.connect(w.database_url) as conn:
        rows = conn.execute(
            "SELECT action, subject_id, detail FROM audit_log WHERE username = %s AND id > %s"
            " ORDER BY id",
            (username, after),
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def _last_audit_id(w: World) -> int:
    return int(w.one("SELECT COALESCE(max(id), 0) FROM audit_log", ()))


def _no_victim_marks(response: httpx.Response, where: str) -> None:
    for mark in (*VICTIM_MARKS, HOME_ADDRESS):
        assert mark not in response.text, f"{where}: the victim's {mark!r} in {response.text}"


@pytest.mark.parametrize("role", ROLES)
def test_victim_data(world: World, role: str):
    """Victims' data by role (the table in the module docstring), region B's never."""
    w, headers = world, world.headers[role]
    a, b = w.a, w.b
    reader = role in VICTIM_READERS
    start = _last_audit_id(w)

    def get(path: str, **params: Any) -> httpx.Response:
        return w.api.get(V1 + path, params=params or None, headers=headers)

    # zones: listed to everyone, whole to readers, redacted to the others
    listed = {z["id"]: z for z in get("/zones", limit=1000).json()}
    assert {a.victim_zone, a.protected_zone} <= set(listed)
    assert not {b.victim_zone, b.protected_zone} & set(listed), "region B's victim zones"
    for zone_id in (a.victim_zone, a.protected_zone):
        one = get(f"/zones/{zone_id}")
        assert one.status_code == 200, one.text
        for zone in (listed[zone_id], one.json()):
            assert zone["protects_victim"] is True
            assert zone["redacted"] is not reader, zone
            if reader:
                assert HOME_ADDRESS in zone["name"]
            else:
                assert zone["name"] == "" and all(zone[k] is None for k in WITHHELD), zone
                assert (zone["kind"], zone["subject_id"]) == (
                    "victim" if zone_id == a.victim_zone else "exclusion",
                    a.subject,
                )
        if not reader:
            _no_victim_marks(one, f"GET /zones/{zone_id} as {role}")
    if reader:
        home = get(f"/zones/{a.protected_zone}").json()
        assert home["geometry"]["coordinates"] == [VICTIM_HOME[1], VICTIM_HOME[0]]
        assert home["protects_subject_id"] == a.victim
    for zone_id in (b.victim_zone, b.protected_zone):
        assert get(f"/zones/{zone_id}").status_code == 404

    # the victim subject: readers only; for the others exactly a missing subject's answer
    for suffix, params in [
        ("", {}),
        ("/regions", {}),
        ("/assignments", {}),
        ("/position", {}),
        ("/track", dict(MARCH)),
        ("/export", dict(MARCH)),
    ]:
        answer = get(f"/subjects/{a.victim}{suffix}", **params)
        missing = get(f"/subjects/{MISSING_ID}{suffix}", **params)
        other = get(f"/subjects/{b.victim}{suffix}", **params)
        where = f"GET /subjects/{{victim}}{suffix} as {role}"
        assert _masked(other, str(b.victim)) == _masked(missing, str(MISSING_ID)), where
        if suffix == "/export" and not reader:
            assert answer.status_code == 403, where  # exports are for readers only anyway
        elif reader:
            # a victim holds no offender device: no position of them (their phone only moves
            # their zone), and the export (their phone's fixes) is the readers' to take
            expected = 404 if suffix == "/position" else 200
            assert answer.status_code == expected, f"{where}: {answer.text}"
        else:
            assert answer.status_code == 404, f"{where}: {answer.text}"
            assert _masked(answer, str(a.victim)) == _masked(missing, str(MISSING_ID)), where
            _no_victim_marks(answer, where)
    subjects = {s["id"]: s for s in get("/subjects", limit=1000).json()}
    assert (a.victim in subjects) is reader and b.victim not in subjects
    if reader:
        assert subjects[a.victim]["victim"] is True and subjects[a.subject]["victim"] is False

    # alerts: the queue never names the zone nor the distance; the detail to readers only
    queue = {x["id"]: x for x in get("/alerts", limit=1000).json()["items"]}
    item = queue[a.victim_alert]
    assert item["redacted"] is True and item["worst_distance_m"] is None, item
    assert "zone_name" not in item["details"] and b.victim_alert not in queue
    detail = get(f"/alerts/{a.victim_alert}")
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert (body["lat"], body["lon"]) == OFFENDER_NEAR, "the offender's position, for tracers"
    assert body["redacted"] is not reader
    if reader:
        assert HOME_ADDRESS in body["details"]["zone_name"] and body["worst_distance_m"] == 180
    else:
        assert "zone_name" not in body["details"] and body["worst_distance_m"] is None
        _no_victim_marks(detail, f"GET /alerts/{{victim alert}} as {role}")
    assert get(f"/alerts/{b.victim_alert}").status_code == 404

    # the victim's phone is nobody's suspect, nor on the live map
    lat, lon = VICTIM_HOME
    near = get(
        "/proximity", lat=lat, lon=lon, radius_m=50, **{"from": MARCH["from"], "to": MARCH["to"]}
    )
    assert near.status_code == 200 and near.json()["subjects"] == [], near.text
    _no_victim_marks(get("/positions"), f"GET /positions as {role}")

    # audited: every victim data read of a reader names the victim; nothing for the others
    rows = _audit_rows(w, w.usernames[role], start)
    victim_rows = [r for r in rows if r[1] == a.victim]
    if reader:
        actions = {r[0] for r in victim_rows}
        assert {"victim_zone", "victim_subject", "track", "export"} <= actions, actions
        assert all(r[2].get("victim") is True for r in victim_rows), victim_rows
        zones_read = {z for r in victim_rows if r[0] == "victim_zone" for z in r[2]["zone_ids"]}
        assert zones_read == {a.victim_zone, a.protected_zone}, zones_read
        via = {r[2].get("via") for r in victim_rows if r[0] == "victim_zone"}
        assert {"list", "read", "alert"} <= via, via
    else:
        assert victim_rows == [], victim_rows
    assert not [r for r in rows if r[1] == b.victim], "region B's victim read"


def test_a_victim_device_or_zone_marks_the_subject(world: World):
    """The mark follows the links (trigger), and a mistaken mark can be cleared only while
    nothing links the subject as a victim."""
    w, headers = world, world.headers["supervisor"]
    made = w.api.post(
        V1 + "/subjects",
        json={"name": fresh_id("mxv"), "region_id": w.a.region, "victim": True},
        headers=headers,
    )
    assert made.status_code == 201 and made.json()["victim"] is True, made.text
    marked = made.json()["id"]
    assert w.api.get(V1 + f"/subjects/{marked}", headers=w.headers["tracer"]).status_code == 404
    cleared = w.api.patch(V1 + f"/subjects/{marked}", json={"victim": False}, headers=headers)
    assert cleared.status_code == 200 and cleared.json()["victim"] is False, cleared.text
    assert w.api.get(V1 + f"/subjects/{marked}", headers=w.headers["tracer"]).status_code == 200
    kept = w.api.patch(V1 + f"/subjects/{w.a.victim}", json={"victim": False}, headers=headers)
    assert kept.status_code == 200 and kept.json()["victim"] is True, "a linked victim unmarked"
    assert w.one("SELECT victim FROM subjects WHERE id = %s", (w.a.subject,)) is False


# ------------------------------------------------------------------ a tracing unit's grant


def test_a_tracer_reaches_another_regions_case_by_his_units_grant_and_nothing_else(world: World):
    """Region B's case routed to region A's tracing unit: a tracer of A in that unit reads and
    works it (its photo too) while it is open, every other route about its subject answers as
    for a missing subject, and closing the case ends the grant (and his access)."""
    w = world
    case = w.new_case("B")
    subject = w.one("SELECT subject_id FROM absconder_cases WHERE id = %s", (case,))
    with psycopg.connect(w.database_url) as conn:
        conn.execute(
            "INSERT INTO subject_photos (subject_id, content_type, data) VALUES (%s, %s, %s)",
            (subject, "image/png", PNG),
        )
        conn.execute(
            "UPDATE absconder_cases SET tracing_unit_id = %s, changed_by = 'mx' WHERE id = %s",
            (w.a.unit, case),
        )
        alert = conn.execute(
            "SELECT alert_id FROM absconder_cases WHERE id = %s", (case,)
        ).fetchone()[0]
    user, username = w.add_user("tracer", [w.a.region], prefix="mxunit")
    with psycopg.connect(w.database_url) as conn:
        conn.execute("UPDATE users SET tracing_unit_id = %s WHERE id = %s", (w.a.unit, user))
    tracer = w.token(username)
    others = w.headers["tracer"]  # region A, no unit

    def get(path: str, headers: dict[str, str], **params: Any) -> httpx.Response:
        return w.api.get(V1 + path, params=params or None, headers=headers)

    read = get(f"/cases/{case}", tracer)
    assert read.status_code == 200 and read.json()["access"] == "grant", read.text
    assert get(f"/cases/{case}/photo", tracer).content == PNG
    assert case in {c["id"] for c in get("/cases", tracer, mine="true").json()}
    assert get(f"/cases/{case}", others).status_code == 404
    attempt = {"method": "roadblock", "outcome": "not seen", "place": "N1 toll plaza"}
    logged = w.api.post(V1 + f"/cases/{case}/attempts", json=attempt, headers=tracer)
    assert logged.status_code == 201, logged.text
    # nothing else of the subject: every GET route about a subject, as for a missing one
    for route in ROUTES:
        if route.method != "GET" or "{subject_id}" not in route.path:
            continue
        params = dict(MARCH) if route.path.endswith(("/track", "/export")) else {}
        path = route.path.removeprefix(V1)
        his = get(path.replace("{subject_id}", str(subject)), tracer, **params)
        missing = get(path.replace("{subject_id}", str(MISSING_ID)), tracer, **params)
        assert his.status_code in (403, 404), f"{route.key}: {his.status_code}"
        assert _masked(his, str(subject)) == _masked(missing, str(MISSING_ID)), route.key
    assert get(f"/alerts/{alert}", tracer).status_code == 404
    assert alert not in {a["id"] for a in get("/alerts", tracer, limit=1000).json()["items"]}
    assert get("/reports/curfew-presence", tracer, subject_id=subject, **MARCH).status_code == 403
    # the grant is on record; closing the case (region B's admin) ends it
    grant = w.one(
        "SELECT granted_by FROM absconder_case_grants WHERE case_id = %s AND revoked_at IS NULL",
        (case,),
    )
    assert grant == "mx"
    for step, body in (("trace", {"outcome": "returned_to_supervision"}), ("close", None)):
        done = w.api.post(V1 + f"/cases/{case}/{step}", json=body, headers=w.admin_all)
        assert done.status_code == 200, done.text
    assert get(f"/cases/{case}", tracer).status_code == 404
    assert get(f"/cases/{case}/photo", tracer).status_code == 404
    assert case not in {c["id"] for c in get("/cases", tracer, mine="true").json()}
    ended = w.one("SELECT revoke_reason FROM absconder_case_grants WHERE case_id = %s", (case,))
    assert ended == "closed"
