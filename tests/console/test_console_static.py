"""The console without a browser: the page and its modules are public and hold no data, Leaflet
is served from node_modules (or refused with the reason when it is not installed), nothing
outside the console's folders is reachable, and every API call the page's code makes needs a
token."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.websockets import WebSocketDisconnect

from api.routes import console

pytestmark = pytest.mark.integration
CONSOLE = Path(console.__file__).resolve().parent.parent / "console"
MODULES = sorted((CONSOLE / "js").glob("*.js"))
LEAFLET_INSTALLED = (console.node_modules() / "leaflet" / "dist" / "leaflet.js").exists()

# get("/alerts/${id}", ...), post(`/zones`, ...), request("GET", "/reports/...", ...)
CALL = re.compile(r"""\b(get|post|put|del|request)\(\s*(?:"([A-Z]+)",\s*)?[`"](/[^`"]*)[`"]""")
METHOD = {"get": "GET", "post": "POST", "put": "PUT", "del": "DELETE"}


def api_calls() -> set[tuple[str, str]]:
    """(method, path) of every API call in the console's modules, ids filled in."""
    calls = set()
    for module in MODULES:
        for helper, explicit, path in CALL.findall(module.read_text()):
            method = explicit or METHOD[helper]
            calls.add((method, re.sub(r"\$\{[^}]+\}", "1", path)))
    return calls


def test_the_page_is_public_and_carries_no_data(api):
    page = api.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert '<script type="module" src="/console/js/app.js">' in html
    assert 'id="login-form"' in html
    # a strict policy: scripts only from this origin, nothing may frame the console
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    # no data, no token, nothing from a CDN
    assert "Bearer" not in html
    assert "http://" not in html
    assert "https://" not in html

    config = api.get("/console/config.json")
    assert config.status_code == 200
    assert config.json()["api"] == "/api/v1"
    assert config.json()["vendor"]["leaflet"] is LEAFLET_INSTALLED
    assert config.json()["tile_url"] is None


def test_every_file_the_page_loads_is_served_with_its_type(api):
    html = api.get("/").text
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', html)
    assert "/console/console.css" in assets
    for asset in assets:
        response = api.get(asset)
        if asset.startswith("/vendor/") and not LEAFLET_INSTALLED:
            assert response.status_code == 404
            continue
        assert response.status_code == 200, asset
    # ES modules need a JavaScript type, or the browser refuses them
    for module in MODULES:
        response = api.get(f"/console/js/{module.name}")
        assert response.status_code == 200, module.name
        assert response.headers["content-type"].startswith("text/javascript"), module.name
        assert response.headers["x-content-type-options"] == "nosniff"
    # modules import one another by relative path: every import resolves to a served file
    for module in MODULES:
        for target in re.findall(r'from "\./([^"]+)"', module.read_text()):
            assert (CONSOLE / "js" / target).is_file(), (module.name, target)


@pytest.mark.skipif(not LEAFLET_INSTALLED, reason="node_modules/leaflet missing: run setup.sh")
def test_leaflet_comes_from_node_modules(api):
    for name, media in (
        ("leaflet-src.esm.js", "text/javascript"),
        ("leaflet.css", "text/css"),
        ("images/layers.png", "image/png"),
    ):
        response = api.get(f"/vendor/leaflet/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(media)
        on_disk = console.node_modules() / "leaflet" / "dist" / name
        assert response.content == on_disk.read_bytes()
    # not committed as a copy: the only Leaflet in the repository is in node_modules
    assert not list(CONSOLE.rglob("leaflet*"))


def test_without_node_modules_the_page_says_so(api, tmp_path, monkeypatch):
    monkeypatch.setenv("TAGWATCH_NODE_MODULES", str(tmp_path))
    missing = api.get("/vendor/leaflet/leaflet-src.esm.js")
    assert missing.status_code == 404
    assert "scripts/setup.sh" in missing.json()["detail"]
    assert api.get("/console/config.json").json()["vendor"]["leaflet"] is False
    # the page still loads, and its map module explains instead of drawing
    assert api.get("/").status_code == 200
    assert "Leaflet) is not installed" in (CONSOLE / "js" / "map.js").read_text()


def test_tile_server_when_configured(api, monkeypatch):
    monkeypatch.setenv("TAGWATCH_TILE_URL", "https://{s}.tile.example.org/{z}/{x}/{y}.png")
    assert api.get("/console/config.json").json()["tile_url"].startswith("https://{s}.tile")
    assert "https://*.tile.example.org" in api.get("/").headers["content-security-policy"]


@pytest.mark.parametrize(
    "path",
    [
        "/console/../app.py",
        "/console/%2e%2e/app.py",
        "/console/..%2fapp.py",
        "/console/%2e%2e/%2e%2e/pyproject.toml",
        "/console/js/../../routes/console.py",
        "/console/",
        "/console/js",
        "/vendor/leaflet/../package.json",
        "/vendor/leaflet/%2e%2e/package.json",
        "/vendor/playwright-core/package.json",
        "/vendor/leaflet/../../playwright-core/package.json",
    ],
)
def test_nothing_outside_the_console_is_served(api, path):
    response = api.get(path)
    assert response.status_code == 404, (path, response.text[:200])


def test_console_routes_stay_out_of_the_api_document(api):
    paths = api.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not [p for p in paths if p.startswith(("/console", "/vendor"))]


def test_every_api_call_the_console_makes_needs_a_token(api):
    calls = api_calls()
    called = {path.split("?")[0] for _, path in calls}
    # the console's reach: the queue, an alert and its actions, subjects, zones, reports
    for expected in (
        "/alerts",
        "/alerts/1",
        "/alerts/1/acknowledge",
        "/alerts/1/resolve",
        "/alerts/1/notes",
        "/subjects/1/track",
        "/subjects/1/position",
        "/zones",
        "/reports/compliance",
        "/auth/me",
    ):
        assert expected in called, expected
    for method, path in sorted(calls):
        response = api.request(method, f"/api/v1{path}")
        assert response.status_code == 401, (method, path, response.status_code)
    # the live feed too: without a token it closes with 1008 before sending anything
    with api.websocket_connect("/api/v1/alerts/stream") as ws:
        ws.send_json({"token": "not.a.token"})
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008
    # and the token is only ever sent as a header or the stream's first message
    code = "\n".join(m.read_text() for m in MODULES)
    assert "?token=" not in code
    assert "localStorage.setItem" not in code
