"""Attack: reading /metrics of a production deployment without credentials.

The Prometheus figures are counts, not locations, but they tell an outsider how many people are
monitored, how many alerts are open, how busy ingest is and when a flood of bad input is being
refused. In production ``/metrics`` needs a token unless ``TAGWATCH_METRICS_PUBLIC`` says
otherwise: a user's bearer token, or the static ``TAGWATCH_METRICS_TOKEN`` a Prometheus scraper
is given. In development it stays public. Against the real app and database over HTTP.
"""

from __future__ import annotations

import secrets

import pytest
from fastapi.testclient import TestClient

from tagwatch.api.app import create_app

pytestmark = pytest.mark.integration

SCRAPER = secrets.token_urlsafe(32)


def _get(settings, **headers: str) -> int:
    with TestClient(create_app(settings)) as client:
        return client.get("/metrics", headers=headers).status_code


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_production_refuses_metrics_without_a_token(settings, login):
    production = settings.model_copy(
        update={"environment": "production", "metrics_public": None, "metrics_token": SCRAPER}
    )
    refused = {
        "no token": _get(production),
        "a guessed scraper token": _get(production, **_bearer(secrets.token_urlsafe(32))),
        "a forged user token": _get(production, **_bearer("eyJhbGciOiJIUzI1NiJ9.e30.x")),
        "the token in another header": _get(production, **{"X-Token": SCRAPER}),
    }
    allowed = {
        "the scraper token": _get(production, **_bearer(SCRAPER)),
        "a user's token": _get(production, **login("operator", ["*"])),
    }
    print(f"\n/metrics in production: refused {refused}; allowed {allowed}")
    assert set(refused.values()) == {401}
    assert set(allowed.values()) == {200}


def test_without_a_scraper_token_production_still_refuses(settings):
    production = settings.model_copy(
        update={"environment": "production", "metrics_public": None, "metrics_token": None}
    )
    assert _get(production) == 401
    assert _get(production, **_bearer("")) == 401


def test_development_is_public_and_the_setting_overrides_either_way(settings):
    development = settings.model_copy(update={"environment": "development", "metrics_public": None})
    assert _get(development) == 200
    assert _get(development.model_copy(update={"metrics_public": False})) == 401
    production = settings.model_copy(update={"environment": "production", "metrics_public": True})
    assert _get(production) == 200
