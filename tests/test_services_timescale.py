"""`TAGWATCH_TIMESCALEDB` decides whether the private server preloads TimescaleDB: auto (when the
server's libdir has it), off (plain PostgreSQL even when installed), on (required)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagwatch.services import ServiceError, timescaledb_wanted


def _bindir(tmp_path: Path, installed: bool) -> Path:
    """A fake server: a pg_config whose --pkglibdir has (or lacks) timescaledb's library."""
    bindir, libdir = tmp_path / "bin", tmp_path / "lib"
    bindir.mkdir()
    libdir.mkdir()
    if installed:
        (libdir / "timescaledb-2.28.3.so").touch()
    pg_config = bindir / "pg_config"
    pg_config.write_text(f"#!/bin/sh\necho {libdir}\n")
    pg_config.chmod(0o755)
    return bindir


@pytest.mark.parametrize(
    ("switch", "installed", "wanted"),
    [
        (None, True, True),
        (None, False, False),
        ("auto", True, True),
        ("", True, True),
        ("off", True, False),
        ("OFF", True, False),
        ("0", True, False),
        ("off", False, False),
        ("on", True, True),
    ],
)
def test_the_switch(tmp_path, monkeypatch, switch, installed, wanted):
    if switch is None:
        monkeypatch.delenv("TAGWATCH_TIMESCALEDB", raising=False)
    else:
        monkeypatch.setenv("TAGWATCH_TIMESCALEDB", switch)
    assert timescaledb_wanted(_bindir(tmp_path, installed)) is wanted


def test_on_without_the_extension_and_a_bad_value_are_errors(tmp_path, monkeypatch):
    bindir = _bindir(tmp_path, installed=False)
    monkeypatch.setenv("TAGWATCH_TIMESCALEDB", "on")
    with pytest.raises(ServiceError, match="not installed"):
        timescaledb_wanted(bindir)
    monkeypatch.setenv("TAGWATCH_TIMESCALEDB", "maybe")
    with pytest.raises(ServiceError, match="auto, on or off"):
        timescaledb_wanted(bindir)
