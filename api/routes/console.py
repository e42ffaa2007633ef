"""The operator console: a static single page at ``/``, its modules under ``/console/``, and the
browser libraries it uses (Leaflet) from the npm packages that ``scripts/setup.sh`` installs,
under ``/vendor/<package>/``.

These routes are public on purpose, and none of them carries data: the page is the same for
everyone, and everything it shows comes from ``/api/v1`` with the bearer token the operator got
by logging in (kept in the tab's ``sessionStorage``). They are left out of the OpenAPI document,
which describes the API only.

Leaflet is not committed as a copy: the wheel carries it as package data
(``console/vendor/leaflet``); a checkout serves it from ``node_modules`` (``npm ci`` at the
repository root, or ``TAGWATCH_NODE_MODULES`` pointing elsewhere). When it is missing,
``/vendor/leaflet/...`` answers 404 with the reason and the page says so instead of a map.

``TAGWATCH_TILE_URL`` (an ``{z}/{x}/{y}`` template) gives the map a tile background; without
it the map draws zones and tracks on a plain grid, which works offline.
``TAGWATCH_TILE_ATTRIBUTION`` is shown under the map as plain text (no HTML).

Every HTTP response of the app, whatever route or error produced it, leaves through
:class:`SecurityHeaders`: one place that sets the Content-Security-Policy and its companions,
so that no HTML page (``/``, ``/console/index.html``, an error page) can escape it. The policy
allows scripts and styles from this origin only: no inline script, no ``eval``, no style
attribute in markup (Leaflet positions its panes through the CSSOM, which CSP does not govern).
FastAPI's API reference pages (``/docs``, ``/redoc``) are the one exception, see
:func:`docs_policy`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, HTTPException, status
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

router = APIRouter(include_in_schema=False)

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
REPO_ROOT = Path(__file__).resolve().parents[2]
# npm package -> the folder of it the browser may load (nothing else of node_modules is served)
VENDOR = {"leaflet": "leaflet/dist"}
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".map": "application/json",
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# FastAPI's API reference pages load Swagger UI / ReDoc from this CDN (they carry no data)
DOCS_CDN = "https://cdn.jsdelivr.net"
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def node_modules() -> Path:
    return Path(os.environ.get("TAGWATCH_NODE_MODULES") or REPO_ROOT / "node_modules")


def tile_url() -> str | None:
    return os.environ.get("TAGWATCH_TILE_URL") or None


def vendor_dir(package: str) -> Path | None:
    """The servable folder of an npm package, or None when it is not installed.

    The installed wheel carries it as package data (``console/vendor/<package>``, mapped from
    node_modules when the wheel is built); a checkout has none there and serves node_modules.
    """
    folder = VENDOR.get(package)
    if folder is None:
        return None
    packaged = CONSOLE_DIR / "vendor" / package
    if packaged.is_dir():
        return packaged
    path = node_modules() / folder
    return path if path.is_dir() else None


def content_security_policy() -> str:
    """The console's policy, the one every response gets (the tile server, when configured,
    is the only origin outside this one that the page may load images from)."""
    images = ["'self'", "data:"]
    tiles = tile_url()
    if tiles:
        parts = urlsplit(tiles.replace("{s}", "a"))
        if parts.scheme in ("http", "https") and parts.netloc:
            # {s} subdomains: allow the whole parent domain's subdomains as well
            host = parts.netloc
            images.append(f"{parts.scheme}://{host}")
            if "{s}" in tiles:
                images.append(f"{parts.scheme}://*.{host.split('.', 1)[-1]}")
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            # no 'unsafe-inline': Leaflet sets element.style through the CSSOM, which CSP does
            # not govern; a style attribute or <style> element in markup would be refused
            "style-src 'self'",
            f"img-src {' '.join(images)}",
            "font-src 'self'",
            "object-src 'none'",
            # the API and its WebSocket feed, same origin
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ]
    )


def _file(base: Path, relative: str, *, cache: str) -> FileResponse:
    """A file inside ``base`` (never outside it), with an explicit media type."""
    root = base.resolve()
    try:
        path = (root / relative).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such file") from exc
    if not path.is_relative_to(root) or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such file")
    media_type = MEDIA_TYPES.get(path.suffix.lower())
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such file")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": cache})


def docs_policy(body: bytes) -> str:
    """The policy of FastAPI's API reference pages (``/docs``, ``/redoc`` and Swagger's OAuth2
    redirect page), which are generated by FastAPI from the app's own title and OpenAPI URL
    (nothing of the data) and load Swagger UI or ReDoc from a CDN with a small inline script.
    Still no 'unsafe-inline' script and no 'unsafe-eval': the inline scripts are allowed by
    their hash, so anything else inlined would be refused. ReDoc adds <style> elements and
    Google fonts, and runs a worker from a blob."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in INLINE_SCRIPT.findall(body)
    ]
    return "; ".join(
        [
            "default-src 'self'",
            " ".join(["script-src 'self'", DOCS_CDN, *hashes]),
            f"style-src 'self' 'unsafe-inline' {DOCS_CDN} https://fonts.googleapis.com",
            "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly",
            "font-src 'self' https://fonts.gstatic.com",
            "worker-src 'self' blob:",
            "connect-src 'self'",
            "object-src 'none'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ]
    )


def docs_paths(app: FastAPI) -> frozenset[str]:
    """The paths of FastAPI's API reference pages in ``app`` (those it enables)."""
    urls = (app.docs_url, app.redoc_url, app.docs_url and app.swagger_ui_oauth2_redirect_url)
    return frozenset(url for url in urls if url)


class SecurityHeaders:
    """ASGI middleware: the security headers on every HTTP response, and the console's
    Content-Security-Policy on all of them but FastAPI's API reference pages (``docs_paths``),
    which get :func:`docs_policy`. It only adds headers (a body passes through as it streams),
    except on those few small generated pages, whose inline scripts it hashes."""

    def __init__(self, app: ASGIApp, docs_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.docs_paths = docs_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.docs_paths:
            await self._docs_page(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers["Content-Security-Policy"] = content_security_policy()
            await send(message)

        await self.app(scope, receive, secured)

    async def _docs_page(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message | None = None
        body = bytearray()

        async def held(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if not message.get("more_body", False) and start is not None:
                    headers = MutableHeaders(scope=start)
                    for name, value in SECURITY_HEADERS.items():
                        headers.setdefault(name, value)
                    headers["Content-Security-Policy"] = docs_policy(bytes(body))
                    await send(start)
                    await send({"type": "http.response.body", "body": bytes(body)})
                return
            await send(message)

        await self.app(scope, receive, held)


@router.get("/")
async def console_page() -> FileResponse:
    """The console's single page (no data in it; it logs in and calls /api/v1)."""
    return _file(CONSOLE_DIR, "index.html", cache="no-cache")


@router.get("/console/config.json")
async def console_config() -> JSONResponse:
    """What the page needs to know before logging in: where the API is, whether the map
    library is installed, and the tile server if any. Nothing about subjects or users, and
    nothing about the deployment (its environment would tell an attacker whether the
    development shortcuts are on)."""
    config: dict[str, Any] = {
        "api": "/api/v1",
        "stream": "/api/v1/alerts/stream",
        "tile_url": tile_url(),
        "tile_attribution": os.environ.get("TAGWATCH_TILE_ATTRIBUTION") or None,
        "vendor": {name: vendor_dir(name) is not None for name in VENDOR},
    }
    return JSONResponse(config, headers={"Cache-Control": "no-cache"})


@router.get("/console/{path:path}")
async def console_file(path: str) -> FileResponse:
    return _file(CONSOLE_DIR, path, cache="no-cache")


@router.get("/vendor/{package}/{path:path}")
async def vendor_file(package: str, path: str) -> FileResponse:
    """A file of an npm package the console uses (Leaflet), from node_modules."""
    if package not in VENDOR:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no vendor package {package!r}")
    base = vendor_dir(package)
    if base is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"{package} is not installed: run scripts/setup.sh (npm ci) at the "
            f"repository root, or set TAGWATCH_NODE_MODULES",
        )
    return _file(base, path, cache="public, max-age=3600")
