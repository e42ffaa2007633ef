"""The console without a browser: the page and its modules are public and hold no data, Leaflet
is served from node_modules (or refused with the reason when it is not installed), nothing
outside the console's folders is reachable, every API call the page's code makes needs a
token, no server-supplied string can reach an HTML sink (the modules are read for one), and
every HTML response carries the strict Content-Security-Policy."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import Route
from starlette.websockets import WebSocketDisconnect

from tagwatch.api.routes import console

pytestmark = pytest.mark.integration
CONSOLE = Path(console.__file__).resolve().parent.parent / "console"
MODULES = sorted((CONSOLE / "js").glob("*.js"))
LEAFLET_INSTALLED = (console.node_modules() / "leaflet" / "dist" / "leaflet.js").exists()

# get("/alerts/${id}", ...), post(`/zones`, ...), request("GET", "/reports/...", ...)
CALL = re.compile(
    r"""\b(get|post|put|patch|del|request)\(\s*(?:"([A-Z]+)",\s*)?[`"](/[^`"]*)[`"]"""
)
METHOD = {"get": "GET", "post": "POST", "put": "PUT", "patch": "PATCH", "del": "DELETE"}


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
    # nothing about the deployment: whether development shortcuts are on is not public
    assert set(config.json()) == {"api", "stream", "tile_url", "tile_attribution", "vendor"}
    assert "environment" not in config.text


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
    # the console's reach: the queue, an alert and its actions, subjects, zones, reports,
    # regions' boundaries, offices and tracing units
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
        "/regions/1/boundary",
        "/offices/1",
        "/tracing-units/1",
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


# --- no HTML sink ------------------------------------------------------------------------------

# Whatever parses a string as HTML (or runs it as code). Comment lines are left out: the
# modules' comments say why these are not used.
HTML_SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|createContextualFragment"
    r"|parseFromString|srcdoc\s*[:=]|\beval\(|new Function\(|set(?:Timeout|Interval)\(\s*[\"'`]"
)
# Leaflet's ways in for content: a string given to them is set as innerHTML
LEAFLET_CONTENT = re.compile(
    r"\.(bindTooltip|bindPopup|setTooltipContent|setPopupContent|setContent)\(\s*([^\s)]*)"
)
# the one helper that builds tooltip content: map.js's tip(), as an import or maps.tip
TIP_CALL = re.compile(r"(?:maps\.)?tip\(")


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of a module, without its comment lines."""
    return [
        (number, line)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if not line.lstrip().startswith(("//", "/*", "*"))
    ]


def test_no_module_of_the_console_writes_html():
    sinks = [
        f"{module.name}:{number}: {line.strip()}"
        for module in MODULES
        for number, line in code_lines(module)
        if HTML_SINKS.search(line)
    ]
    assert sinks == [], "\n".join(sinks)
    # the page itself: no inline script, handler or style for a policy exception to excuse
    html = (CONSOLE / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE)
    assert not re.search(r"\sstyle\s*=|<style", html, re.IGNORECASE)


def test_leaflet_gets_tooltip_content_only_as_a_node_built_by_tip():
    calls = [
        (module.name, number, method, argument)
        for module in MODULES
        for number, line in code_lines(module)
        for method, argument in LEAFLET_CONTENT.findall(line)
    ]
    # the zones, the track, its fixes, the last position, the alert, the live positions
    assert len(calls) >= 7, calls
    strings = [call for call in calls if not TIP_CALL.match(call[3])]
    assert strings == [], f"tooltip/popup content that is not a tip(...) node: {strings}"
    # tip() builds an element with h() (text nodes), and nothing else gives Leaflet content:
    # no L.popup / L.tooltip with content, no divIcon with html, no attribution string
    map_js = (CONSOLE / "js" / "map.js").read_text()
    assert re.search(r"export function tip\(\.\.\.children\) \{\n\s+return h\(", map_js)
    code = "\n".join(line for module in MODULES for _, line in code_lines(module))
    assert not re.search(r"\bL\.(popup|tooltip)\(", code)
    assert not re.search(r"divIcon\(\{[^}]*\bhtml\s*:", code)
    assert not re.search(r"\battribution\s*:", code)
    assert re.findall(r"attributionControl:\s*\w+", code) == ["attributionControl: false"]


# --- one Content-Security-Policy on every HTML response -----------------------------------------


def html_routes(app) -> list[str]:
    """GET paths of the app without parameters, and one file for each of the console's file
    routes: what a browser could load as a page."""
    paths = ["/console/index.html", "/console/favicon.svg", "/console/no-such-page.html"]
    for route in iter_route_contexts(app.routes):
        original = getattr(route, "original_route", route)
        get = isinstance(original, APIRoute | Route) and "GET" in (original.methods or ())
        if get and "{" not in route.path:
            paths.append(route.path)
    return paths


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def test_every_html_response_carries_the_strict_policy(api):
    docs = console.docs_paths(api.app)
    assert docs == {"/docs", "/redoc", "/docs/oauth2-redirect"}
    pages = {}
    for path in html_routes(api.app):
        response = api.get(path)
        policy = response.headers.get("content-security-policy")
        assert policy, path  # every response, HTML or not, JSON error or file
        assert response.headers["x-content-type-options"] == "nosniff", path
        if response.headers.get("content-type", "").startswith("text/html"):
            pages[path] = (response, directives(policy))
    print(f"HTML responses checked: {sorted(pages)}")
    assert {"/", "/console/index.html", *docs} <= set(pages)
    strict = pages["/"][1]
    for path, (response, policy) in pages.items():
        assert "'unsafe-inline'" not in policy["script-src"], path
        assert "'unsafe-eval'" not in " ".join(v for vs in policy.values() for v in vs), path
        assert policy["frame-ancestors"] == ["'none'"], path
        assert policy["object-src"] == ["'none'"], path
        assert policy["base-uri"] == ["'none'"], path
        if path in docs:
            # FastAPI's reference pages: their own inline scripts by hash, nothing else inline
            for script in re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL):
                digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
                assert f"'sha256-{digest}'" in policy["script-src"], path
        else:
            assert policy == strict, path
    # the console's: scripts and styles from this origin only, no inline style either
    assert strict["default-src"] == ["'self'"]
    assert strict["script-src"] == ["'self'"]
    assert strict["style-src"] == ["'self'"]
    assert strict["connect-src"] == ["'self'"]
    # an error (a JSON 404) and the page's modules carry it too
    assert "content-security-policy" in api.get("/api/v1/no-such-route").headers
    assert "content-security-policy" in api.get("/console/js/app.js").headers
