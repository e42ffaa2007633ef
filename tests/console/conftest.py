"""The console against a real API server: the ``console_server`` fixture (tests/console/harness.py),
so that a real browser (and its WebSocket) can talk to it."""

from tests.console.harness import (  # noqa: F401 - the fixture, and names the tests import
    ARTIFACTS,
    NODE_MODULES,
    ApiServer,
    browser_missing,
    chromium_path,
    console_server,
)
