"""Attack: a regional administrator takes over accounts beyond their regions.

An admin of one region (regions not ``*``) resets the password of an admin of every region - or
of an admin or user who also works in a region that is not theirs - and logs in as them; or
disables them, demotes them, or moves them into their own region first. Each attempt must fail
exactly as for a user that does not exist (404, the same body: elsewhere looks like nowhere), and
the victim must still log in with their own password, with their sessions intact. Granting ``*``
or a foreign region is refused (403). Against the real API and database, with raw HTTP.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.support import fresh_id

pytestmark = pytest.mark.integration

PASSWORD = "victim-pass-word-1"
STOLEN = "attacker-chosen-pw-1"


def _token(api, username: str, password: str = PASSWORD):
    return api.post("/api/v1/auth/token", data={"username": username, "password": password})


@pytest.fixture(scope="module")
def world(api, login) -> dict:
    root = login("admin", ["*"])
    north, south = fresh_id("north"), fresh_id("south")
    for region in (north, south):
        created = api.post("/api/v1/regions", json={"id": region, "name": region}, headers=root)
        assert created.status_code == 201, created.text

    def user(role: str, regions: list[str]) -> dict:
        body = {"username": fresh_id(f"v-{role}"), "role": role, "regions": regions}
        created = api.post("/api/v1/users", json={**body, "password": PASSWORD}, headers=root)
        assert created.status_code == 201, created.text
        return created.json()

    return {
        "north": north,
        "south": south,
        "attacker": login("admin", [north]),
        "victims": {
            "admin of every region": user("admin", ["*"]),
            "admin of north and south": user("admin", [north, south]),
            "admin of south": user("admin", [south]),
            "operator of north and south": user("operator", [north, south]),
            "supervisor of south": user("supervisor", [south]),
        },
        "colleague": user("operator", [north]),
    }


def _attempts(user_id: int, north: str) -> list[tuple[str, str, dict]]:
    url = f"/api/v1/users/{user_id}"
    return [
        ("POST", f"{url}/password", {"password": STOLEN}),
        ("PATCH", url, {"disabled": True}),
        ("PATCH", url, {"role": "tracer"}),
        ("PATCH", url, {"regions": [north]}),
        ("GET", url, {}),
    ]


def test_a_regional_admin_cannot_touch_anyone_beyond_their_regions(api, world, settings):
    attacker, north = world["attacker"], world["north"]
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT max(id) FROM users").fetchone()
    nobody = int(row[0]) + 10_000 if row else 10_000
    ghost = {(m, u.replace(str(nobody), "{id}")): (r.status_code, r.json()["detail"])
             for m, u, body in _attempts(nobody, north)
             for r in [api.request(m, u, json=body or None, headers=attacker)]}  # fmt: skip
    assert {status for status, _ in ghost.values()} == {404}
    refused = 0
    for label, victim in world["victims"].items():
        tokens_before = _token(api, victim["username"])
        assert tokens_before.status_code == 200, label
        session = {"Authorization": f"Bearer {tokens_before.json()['access_token']}"}
        for method, url, body in _attempts(victim["id"], north):
            answer = api.request(method, url, json=body or None, headers=attacker)
            key = (method, url.replace(str(victim["id"]), "{id}"))
            detail = answer.json()["detail"].replace(str(victim["id"]), str(nobody))
            # exactly what a user that does not exist gets
            assert (answer.status_code, detail) == ghost[key], (label, method, url, answer.text)
            refused += 1
        # nothing changed: the victim logs in with their own password, the old session works,
        # and the attacker's password opens nothing
        assert _token(api, victim["username"]).status_code == 200, label
        assert _token(api, victim["username"], STOLEN).status_code == 401, label
        me = api.get("/api/v1/auth/me", headers=session)
        assert me.status_code == 200, label
        assert me.json()["role"] == victim["role"]
        assert me.json()["regions"] == victim["regions"]
    listed = api.get("/api/v1/users", params={"limit": 1000}, headers=attacker).json()
    visible = {u["id"] for u in listed}
    assert not visible & {v["id"] for v in world["victims"].values()}
    print(f"\nadmin takeover: {refused} attempts on {len(world['victims'])} accounts, all 404")


def test_a_regional_admin_manages_their_own_region_but_cannot_grant_beyond_it(api, world):
    attacker, north, south = world["attacker"], world["north"], world["south"]
    colleague = world["colleague"]
    url = f"/api/v1/users/{colleague['id']}"
    for grant in ({"regions": ["*"]}, {"regions": [north, south]}, {"regions": [south]}):
        answer = api.patch(url, json={"role": "admin", **grant}, headers=attacker)
        assert answer.status_code == 403, (grant, answer.text)
    assert api.get(url, headers=attacker).json()["role"] == "operator"
    reset = api.post(f"{url}/password", json={"password": STOLEN}, headers=attacker)
    assert reset.status_code == 204
    assert _token(api, colleague["username"], STOLEN).status_code == 200
