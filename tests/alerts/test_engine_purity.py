"""The engine core is pure: the rules, the engine orchestrator, its port and the in-memory
repository import no I/O package and nothing of store/ingest/api (issue 13, items 3 and 8). SQL
lives in store/engine_repository.py; the same engine runs over an in-memory repository, which
only holds while nothing here reaches storage.

Checked twice: statically (every import statement, function bodies included) and by importing
each core module in a fresh interpreter and reading ``sys.modules``, which also sees what the
core's own dependencies drag in."""

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
        "batch.py",
        "ports.py",
        "state_codec.py",
        "state_cache.py",
        "rules.py",
        "observe.py",
        "escalation.py",
        "holding.py",
        "thresholds.py",
        "vocabulary.py",
        "memory_repository.py",
        "device_commands.py",
        "victim_rules.py",
        "victim_protection.py",
        "absconder_template.py",
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


def loaded_forbidden(module: str) -> bool:
    """A module the core must not load: an I/O package, or tagwatch beyond the core itself and
    the pure geofence (``tagwatch`` is the namespace package)."""
    if any(module == io or module.startswith(io + ".") for io in IO_PACKAGES):
        return True
    if module in {"tagwatch", "tagwatch.alerts"}:
        return False
    if module == "tagwatch.geofence" or module.startswith("tagwatch.geofence."):
        return False
    return module.startswith("tagwatch.") and module not in ALLOWED[1:-1]


def test_the_load_check_catches_what_it_should() -> None:
    assert loaded_forbidden("asyncio.events")
    assert loaded_forbidden("psycopg")
    assert loaded_forbidden("tagwatch.settings")
    assert loaded_forbidden("tagwatch.alerts.webhook_destination")
    assert not loaded_forbidden("tagwatch.alerts.memory_repository")
    assert not loaded_forbidden("tagwatch.geofence.index")
    assert not loaded_forbidden("numpy")


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.stem)
def test_importing_a_core_module_loads_no_io_or_outer_layer(path: Path) -> None:
    """A fresh interpreter per module, so the failure names the module whose import (itself or
    through what it imports) loaded the I/O package."""
    name = f"tagwatch.alerts.{path.stem}"
    completed = subprocess.run(
        [sys.executable, "-c", f"import {name}, sys; print(sorted(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = ast.literal_eval(completed.stdout)
    assert isinstance(loaded, list)
    assert name in loaded
    offending = sorted(m for m in loaded if loaded_forbidden(m))
    assert not offending, offending
