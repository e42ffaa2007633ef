"""The engine core is pure: the rules, the engine orchestrator and its port import no I/O package
and nothing of store/ingest/api (issue 13). SQL lives in store/engine_repository.py; the same
engine runs over an in-memory repository, which only holds while nothing here reaches storage."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.geofence.test_purity import IO_PACKAGES, imported_modules

ROOT = Path(__file__).resolve().parents[2]
CORE = [
    ROOT / "alerts" / name
    for name in (
        "engine.py",
        "ports.py",
        "state_codec.py",
        "rules.py",
        "observe.py",
        "escalation.py",
        "thresholds.py",
        "vocabulary.py",
    )
]
# what the core may import of tagwatch: itself and the pure geofence
ALLOWED = (
    "tagwatch.geofence",
    *(f"tagwatch.alerts.{p.stem}" for p in CORE),
    "tagwatch.alerts",  # `from tagwatch.alerts import vocabulary`
)
LAYERS = ("store", "ingest", "api", "simulators", "alerts", "geofence", "tagwatch")


def forbidden(module: str) -> str | None:
    """The forbidden package ``module`` is or lies in, if any."""
    if module in ALLOWED or module.startswith(tuple(a + "." for a in ALLOWED[:-1])):
        return None  # (`tagwatch.alerts.x` for a module x outside the core is not allowed)
    if module.startswith("tagwatch.alerts.") and module.count(".") == 3:
        # `from tagwatch.alerts import vocabulary as v` names tagwatch.alerts.vocabulary
        parent = module.rsplit(".", 1)[0]
        if parent in ALLOWED[1:-1]:
            return None
    for name in (*LAYERS, *IO_PACKAGES):
        if module == name or module.startswith(name + "."):
            return name
    return None


def test_the_core_files_exist() -> None:
    assert all(p.exists() for p in CORE), [str(p) for p in CORE if not p.exists()]


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_forbidden_import_in_the_core(path: Path) -> None:
    offending = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for line, module in imported_modules(path.read_text(encoding="utf-8"), str(path))
        if forbidden(module)
    ]
    assert not offending, offending


def test_the_check_catches_what_it_should() -> None:
    assert forbidden("tagwatch.store.engine_repository") == "tagwatch"
    assert forbidden("tagwatch.alerts.dispatcher") == "tagwatch"
    assert forbidden("psycopg") == "psycopg"
    assert forbidden("paho.mqtt.client") == "paho"
    assert forbidden("tagwatch.geofence.index") is None
    assert forbidden("tagwatch.alerts.rules") is None
    assert forbidden("numpy") is None


def test_importing_the_engine_loads_no_io_or_outer_layer() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", "import tagwatch.alerts.engine, sys; print(sorted(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = ast.literal_eval(completed.stdout)
    assert "tagwatch.alerts.engine" in loaded
    offending = sorted(
        m
        for m in loaded
        if m.startswith(("tagwatch.store", "tagwatch.ingest", "tagwatch.api", "tagwatch.settings"))
        or any(m == io or m.startswith(io + ".") for io in IO_PACKAGES if io != "asyncio")
    )
    assert not offending, offending
