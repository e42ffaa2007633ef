"""The operator console: a static single page at ``/``, its modules under ``/console/``, and the
browser libraries it uses (Leaflet) from the npm packages that ``scripts/setup.sh`` installs,
under ``/vendor/<package>/``.

These routes are public on purpose, and none of them carries data: the page is the same for
everyone, and everything it shows comes from ``/api/v1`` with the bearer token the operator got
by logging in (kept in the tab's ``sessionStorage``). They are left out of the OpenAPI document,
which describes the API only.

Leaflet is not committed as a copy: it is served from ``node_modules`` (``npm ci`` at the
repository root, or ``TAGWATCH_NODE_MODULES`` pointing elsewhere). When it is missing,
``/vendor/leaflet/...`` answers 404 with the reason and the page says so instead of a map.

``TAGWATCH_TILE_URL`` (an ``{z}/{x}/{y}`` template) gives the map a tile background; without
it the map draws zones and tracks on a plain grid, which works offline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import FileResponse, JSONResponse

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


def node_modules() -> Path:
    return Path(os.environ.get("TAGWATCH_NODE_MODULES") or REPO_ROOT / "node_modules")


def tile_url() -> str | None:
    return os.environ.get("TAGWATCH_TILE_URL") or None


def vendor_dir(package: str) -> Path | None:
    """The servable folder of an npm package, or None when it is not installed."""
    folder = VENDOR.get(package)
    if folder is None:
        return None
    path = node_modules() / folder
    return path if path.is_dir() else None


def _content_security_policy() -> str:
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
            # Leaflet positions its panes with inline styles
            "style-src 'self' 'unsafe-inline'",
            f"img-src {' '.join(images)}",
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
    return FileResponse(
        path, media_type=media_type, headers={"Cache-Control": cache, **SECURITY_HEADERS}
    )


@router.get("/")
async def console_page() -> FileResponse:
    """The console's single page (no data in it; it logs in and calls /api/v1)."""
    response = _file(CONSOLE_DIR, "index.html", cache="no-cache")
    response.headers["Content-Security-Policy"] = _content_security_policy()
    return response


@router.get("/console/config.json")
async def console_config(request: Request) -> JSONResponse:
    """What the page needs to know before logging in: where the API is, whether the map
    library is installed, and the tile server if any. Nothing about subjects or users."""
    config: dict[str, Any] = {
        "api": "/api/v1",
        "stream": "/api/v1/alerts/stream",
        "tile_url": tile_url(),
        "tile_attribution": os.environ.get("TAGWATCH_TILE_ATTRIBUTION") or None,
        "vendor": {name: vendor_dir(name) is not None for name in VENDOR},
        "environment": request.app.state.settings.environment,
    }
    return JSONResponse(config, headers={"Cache-Control": "no-cache", **SECURITY_HEADERS})


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
