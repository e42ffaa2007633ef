"""What the console's browser tests share: a real API server (``tagwatch api`` as a subprocess on
a free port, with the private services of the test session) that a real browser and its
WebSocket can talk to, where Chromium, node and node_modules are, and how a node driver
script is run. tests/console/conftest.py offers the server as a fixture; other test packages
(tests/adversarial) import it from here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import ApiServer, api_server

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = Path(os.environ.get("TAGWATCH_NODE_MODULES") or REPO / "node_modules")
ARTIFACTS = Path(os.environ.get("TAGWATCH_TEST_ARTIFACTS") or "/tmp/tagwatch-console")


def chromium_path() -> str | None:
    explicit = os.environ.get("TAGWATCH_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if chromium_path() is None:
        return "Debian's chromium is not installed (/usr/bin/chromium): run scripts/setup.sh"
    node = shutil.which("node")
    if node is None:
        return "node is not installed: run scripts/setup.sh"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    major = version.stdout.strip().lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < 20:
        return f"playwright-core needs node >= 20, found {version.stdout.strip() or 'none'}"
    if not (NODE_MODULES / "playwright-core" / "package.json").exists():
        return "node_modules/playwright-core is missing: run scripts/setup.sh (npm ci)"
    if not (NODE_MODULES / "leaflet" / "dist" / "leaflet.js").exists():
        return "node_modules/leaflet is missing: run scripts/setup.sh (npm ci)"
    return None


@pytest.fixture(scope="module")
def console_server(service_env: dict[str, str], tmp_path_factory) -> Iterator[ApiServer]:
    # the test runs offline: no tiles
    with api_server(
        service_env, tmp_path_factory.mktemp("console"), TAGWATCH_TILE_URL=None
    ) as running:
        yield running


def run_driver(script: Path, config: dict, on_wait: Callable[[str], dict] | None = None) -> dict:
    """Run a node driver script with ``config`` (JSON in DRIVE_CONFIG), answering its
    ``{"wait": ...}`` lines with ``on_wait``; return its ``{"result": ...}``."""
    process = subprocess.Popen(
        ["node", str(script)],
        env={**os.environ, "DRIVE_CONFIG": json.dumps(config)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    result: dict | None = None
    try:
        for line in process.stdout:
            message = json.loads(line)
            if "wait" in message:
                assert on_wait is not None, message
                process.stdin.write(json.dumps(on_wait(message["wait"])) + "\n")
                process.stdin.flush()
            elif "result" in message:
                result = message["result"]
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    stderr = process.stderr.read() if process.stderr else ""
    assert result is not None, (
        f"the browser driver gave no result (exit {process.returncode}):\n{stderr}"
    )
    assert not result.get("error"), f"{result['error']}\nscreenshots: {result['screenshots']}"
    assert process.returncode == 0, stderr
    return result
