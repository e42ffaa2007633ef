"""Liveness, readiness and Prometheus metrics, at the root.

``/healthz`` and ``/readyz`` are public so that orchestrators can probe them. ``/metrics`` is
public in development and test, and needs a token in production (``TAGWATCH_METRICS_PUBLIC``
overrides either way): a user's bearer token, or ``TAGWATCH_METRICS_TOKEN`` for a Prometheus
scraper. The figures are counts, not locations, but they still tell an outsider how many people
are monitored and how busy the centre is.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from tagwatch.api.metrics import render_metrics
from tagwatch.api.security import current_user, oauth2_scheme
from tagwatch.settings import MqttEndpoint
from tagwatch.store import metrics as metrics_store

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _broker_reachable(url: str) -> bool:
    endpoint = MqttEndpoint.parse(url)
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(endpoint.host, endpoint.port), timeout=2
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        async with request.app.state.pool.connection(timeout=2) as conn:
            await metrics_store.ping(conn)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    broker_ok = await _broker_reachable(request.app.state.settings.mqtt_url)
    checks["broker"] = "ok" if broker_ok else "unreachable"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


def metrics_public(settings: Any) -> bool:
    """TAGWATCH_METRICS_PUBLIC when set; otherwise private in production only."""
    explicit = getattr(settings, "metrics_public", None)
    if explicit is not None:
        return bool(explicit)
    return getattr(settings, "environment", "production") != "production"


@router.get(
    "/metrics",
    responses={401: {"description": "a token is required (production, or when not public)"}},
)
async def metrics(
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> Response:
    """Prometheus text. Needs a bearer token unless public (see the module docstring)."""
    settings = request.app.state.settings
    if not metrics_public(settings):
        scraper = getattr(settings, "metrics_token", None)
        if not (token and scraper and secrets.compare_digest(token.encode(), scraper.encode())):
            await current_user(request, token)  # 401 unless a valid user token
    async with request.app.state.pool.connection() as conn:
        body = await render_metrics(conn)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
