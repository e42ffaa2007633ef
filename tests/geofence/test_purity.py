"""geofence/ is pure: no I/O package and no other tagwatch package, imported or loaded."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GEOFENCE = ROOT / "geofence"

OTHER_PACKAGES = (
    "ingest",
    "store",
    "alerts",
    "api",
    "simulators",
    "tagwatch",
)  # tagwatch.geofence itself is allowed (`forbidden`)
OWN = "tagwatch.geofence"
IO_PACKAGES = (
    "socket",
    "psycopg",
    "psycopg2",
    "psycopg_pool",
    "paho",
    "aiomqtt",
    "fastapi",
    "starlette",
    "uvicorn",
    "requests",
    "httpx",
    "urllib.request",
    "http.client",
    "sqlite3",
    "subprocess",
    "asyncio",
)
FORBIDDEN = OTHER_PACKAGES + IO_PACKAGES


def forbidden(module: str) -> str | None:
    """The forbidden package ``module`` is or lies in, if any."""
    if module == OWN or module.startswith(OWN + "."):
        return None
    for name in FORBIDDEN:
        if module == name or module.startswith(name + "."):
            return name
    return None


def imported_modules(source: str, filename: str) -> list[tuple[int, str]]:
    """Every module an import statement names (``from a import b`` names ``a`` and ``a.b``, since
    ``b`` may be a submodule), with its line. Relative imports stay inside geofence."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


SOURCES = sorted(GEOFENCE.rglob("*.py"))


def test_the_walk_sees_every_module() -> None:
    names = {p.name for p in SOURCES}
    assert {"__init__.py", "zones.py", "schedule.py", "index.py", "classification.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_forbidden_import_in_the_source(path: Path) -> None:
    offending = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for line, module in imported_modules(path.read_text(encoding="utf-8"), str(path))
        if forbidden(module)
    ]
    assert not offending, offending


def test_the_walk_catches_what_it_should() -> None:
    source = (
        "import socket\n"
        "from store.db import connect\n"
        "from urllib import request\n"
        "import importlib\n"
        "importlib.import_module('psycopg')\n"
        "def f():\n"
        "    import alerts.rules\n"
        "from . import zones\n"
        "import numpy, shapely.geometry\n"
        "from tagwatchx import y\n"
        "from tagwatch.geofence.zones import Zone\n"
        "from tagwatch.settings import Settings\n"
    )
    caught = sorted({name for _, m in imported_modules(source, "x.py") if (name := forbidden(m))})
    assert caught == ["alerts", "psycopg", "socket", "store", "tagwatch", "urllib.request"]


def test_importing_geofence_loads_no_forbidden_module() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", "import tagwatch.geofence, sys; print(sorted(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = ast.literal_eval(completed.stdout)
    assert isinstance(loaded, list)
    assert "tagwatch.geofence" in loaded
    assert "tagwatch.geofence.classification" in loaded
    offending = sorted(m for m in loaded if forbidden(m) and m != "tagwatch")  # the namespace
    assert not offending, offending
