"""Liveness, readiness and Prometheus metrics, at the root, public by design."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.metrics import render_metrics
from api.security import current_user, oauth2_scheme
from tagwatch.settings import MqttEndpoint

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
            await conn.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    broker_ok = await _broker_reachable(request.app.state.settings.mqtt_url)
    checks["broker"] = "ok" if broker_ok else "unreachable"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> Response:
    """Public by default for Prometheus; TAGWATCH_METRICS_PUBLIC=false requires a token."""
    if not request.app.state.settings.metrics_public:
        await current_user(request, token)
    async with request.app.state.pool.connection() as conn:
        body = await render_metrics(conn)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
