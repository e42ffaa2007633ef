"""The committed OpenAPI document is the API's contract: a change to a route, a parameter or a
schema must show up as a diff of docs/openapi.json (`tagwatch openapi --write`)."""

from __future__ import annotations

from tagwatch.api.app import DEVICE_ROUTES
from tagwatch.openapi_doc import current, drift


def test_the_committed_openapi_document_matches_the_app() -> None:
    assert drift() is None, drift()


def test_every_documented_route_but_the_public_ones_requires_a_token() -> None:
    """The phones' HTTP intake (DEVICE_ROUTES) takes a device's credentials, which OpenAPI's
    schemes cannot all describe (a token in the path): it documents its 401 instead."""
    document = current()
    public = {"/api/v1/auth/token", "/healthz", "/readyz", "/metrics"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path in public:
                continue
            if path in DEVICE_ROUTES:
                assert "401" in operation["responses"], f"{method.upper()} {path}: no 401"
                continue
            assert operation.get("security"), f"{method.upper()} {path} declares no security"
