"""The API factory: it takes its settings, opens its own pools, and authenticates by default.

Every route under /api/v1 depends on a valid bearer token except those in PUBLIC_V1; the root
health routes are public so that orchestrators can probe them, and the phones' HTTP intake
(DEVICE_ROUTES) authenticates devices with their own credentials instead of users. A test walks
the route table to keep it so.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from tagwatch.api.routes import (
    alerts,
    auth,
    device_commands,
    devices,
    exports,
    health,
    intake,
    location,
    proximity,
    reports,
    stream,
    subjects,
    zones,
)
from tagwatch.api.routes import cases as cases_routes
from tagwatch.api.routes import channels as channels_routes
from tagwatch.api.routes import console as console_routes
from tagwatch.api.routes import places as places_routes
from tagwatch.api.routes import users as users_routes
from tagwatch.api.routes import webhooks as webhooks_routes
from tagwatch.api.security import current_user
from tagwatch.settings import Settings, get_settings

log = logging.getLogger("tagwatch.api")
PUBLIC_V1 = frozenset({"/api/v1/auth/token"})
PUBLIC_ROOT = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc"})
# No user token, but the device's own credentials (api/routes/intake.py): without them, 401.
DEVICE_ROUTES = frozenset({"/owntracks", "/osmand/{token}"})
# Operator actions (acknowledge, resolve, notes, absconder) run alerts.lifecycle, which is
# synchronous because the engine it shares (raise_absconder, over its repository) is: an
# asynchronous connection of the request pool cannot run it. They take a connection of this
# second, synchronous pool on a worker thread instead of connecting anew per request; it
# connects on demand (actions are few beside reads) and waits up to 10 s for a free connection
# (then 503, like the request pool).
ACTION_POOL_SIZE = 8


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # `check`: a connection is tested (an empty query) as it leaves the pool, so after a
        # database failover a request gets a fresh connection to the new primary instead of one
        # broken by the old primary's death (`tagwatch chaos db-failover`, docs/scaling.md).
        pool = AsyncConnectionPool(
            settings.database_url_for("api"),
            min_size=1,
            max_size=20,
            open=False,
            timeout=10,
            check=AsyncConnectionPool.check_connection,
        )
        await pool.open(wait=False)
        app.state.pool = pool
        actions = ConnectionPool(
            settings.database_url_for("api"),
            min_size=0,
            max_size=ACTION_POOL_SIZE,
            open=False,
            timeout=10,
            kwargs={"connect_timeout": 10},
            name="api-actions",
            check=ConnectionPool.check_connection,
        )
        actions.open(wait=False)
        app.state.action_pool = actions
        app.state.intake_slots = anyio.CapacityLimiter(intake.RELAY_SLOTS)
        try:
            yield
        finally:
            await pool.close()
            await anyio.to_thread.run_sync(actions.close)
            relay = getattr(app.state, "intake_relay", None)
            if relay is not None:
                await anyio.to_thread.run_sync(relay.close)

    app = FastAPI(
        title="tagwatch",
        version="0.1.0",
        description="Electronic monitoring: subjects, devices, zones, fixes and alerts.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.intake_lock = threading.Lock()

    public = APIRouter(prefix="/api/v1")
    public.include_router(auth.router)
    protected = APIRouter(prefix="/api/v1", dependencies=[Depends(current_user)])
    protected.include_router(subjects.router)
    protected.include_router(devices.router)
    protected.include_router(device_commands.router)
    protected.include_router(location.router)
    protected.include_router(zones.router)
    protected.include_router(alerts.router)
    protected.include_router(auth.session_router)
    protected.include_router(users_routes.router)
    protected.include_router(webhooks_routes.router)
    protected.include_router(places_routes.router)
    protected.include_router(channels_routes.router)
    protected.include_router(cases_routes.router)
    protected.include_router(proximity.router)
    protected.include_router(reports.router)
    protected.include_router(exports.router)
    app.include_router(public)
    app.include_router(protected)
    # The live alert feed authenticates itself (token as the first message only; browsers
    # cannot set headers on a WebSocket) and closes with 1008 without one: see routes/stream.py.
    app.include_router(stream.router, prefix="/api/v1")
    app.include_router(health.router)
    # Phones posting over HTTP authenticate as devices, not users (DEVICE_ROUTES).
    app.include_router(intake.router)
    # The operator console (static, public, holds no data): `/`, /console/, /vendor/.
    app.include_router(console_routes.router)
    # One place for the Content-Security-Policy and its companions: every HTTP response,
    # whatever route or error produced it (see routes/console.py).
    app.add_middleware(console_routes.SecurityHeaders, docs_paths=console_routes.docs_paths(app))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(pg_errors.DataError)
    async def _data_error(_request: Request, exc: pg_errors.DataError) -> JSONResponse:
        return JSONResponse({"detail": f"invalid value: {exc.diag.message_primary}"}, 422)

    @app.exception_handler(pg_errors.IntegrityError)
    async def _integrity(_request: Request, exc: pg_errors.IntegrityError) -> JSONResponse:
        return JSONResponse({"detail": f"conflict: {exc.diag.message_primary}"}, 409)

    @app.exception_handler(pg_errors.OperationalError)
    async def _db_down(_request: Request, exc: pg_errors.OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return JSONResponse({"detail": "database unavailable, try again"}, 503)

    return app
