"""The scenario runner, scorer and load generator against the real broker, ingest and database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tagwatch.simulators.runner import Manifest, score_manifest

pytestmark = pytest.mark.integration


def tagwatch(service_env: dict[str, str], *args: str, timeout: float = 180) -> tuple[int, str]:
    env = {**os.environ, **service_env, "TAGWATCH_ENVIRONMENT": "test"}
    done = subprocess.run(
        [sys.executable, "-m", "tagwatch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def test_a_scenario_runs_end_to_end_and_scores_against_what_the_platform_raised(
    settings, service_env, running_ingest, tmp_path: Path
):
    manifest_path = tmp_path / "run.json"
    code, out = tagwatch(
        service_env,
        "scenario",
        "run",
        "exclusion-entry",
        "--speedup",
        "1800",
        "--manifest",
        str(manifest_path),
        "--score",
    )
    assert code == 0, out
    manifest = Manifest.load(manifest_path)
    assert manifest.finished
    assert manifest.published > 300
    assert manifest.stored_fixes == manifest.expected_fixes > 300
    table = [line.split() for line in out.splitlines() if line.startswith("exclusion-entry")]
    assert table, out
    expected, raised, matched, missed, false = map(int, table[-1][1:6])
    assert (expected, matched, missed, false) == (2, 2, 0, 0)
    assert raised == 2
    assert "naive baseline" in out

    ids = list(manifest.subjects["exclusion-entry"].values())
    with psycopg.connect(settings.database_url) as conn:
        # the devices spoke with their own accounts and the run left nothing monitored
        (status,) = conn.execute(
            "SELECT count(*) FROM device_status WHERE device_id = ANY(%s)",
            (manifest.devices["exclusion-entry"],),
        ).fetchone()
        assert status == len(manifest.devices["exclusion-entry"])
        assert conn.execute("SELECT count(*) FROM rule_clock").fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM rule_state WHERE subject_id = ANY(%s)", (ids,)
        ).fetchone() == (0,)
        # the scorer reads the database: take the alerts away and it reports them missed
        conn.execute(
            "UPDATE alerts SET subject_id = NULL WHERE subject_id = ANY(%s)",
            (ids,),
        )
        conn.commit()
    cards, naive = score_manifest(settings, manifest)
    assert len(cards[0].missed) == 2 and not cards[0].passed
    assert naive[0].raised >= 1
    code, out = tagwatch(service_env, "scenario", "score", "--manifest", str(manifest_path))
    assert code == 1, out


def test_scenario_commands_explain_bad_requests(service_env, tmp_path: Path):
    code, out = tagwatch(service_env, "scenario", "run")
    assert code == 2 and "--all" in out
    code, out = tagwatch(service_env, "scenario", "score", "--manifest", str(tmp_path / "x.json"))
    assert code == 2 and "no run recorded" in out
    code, out = tagwatch(service_env, "scenario", "list")
    assert code == 0 and "strap-cut-flight" in out


def test_the_load_generator_reports_rate_and_latency_of_stored_fixes(
    settings, service_env, running_ingest
):
    code, out = tagwatch(
        service_env, "load", "--devices", "300", "--interval", "1", "--duration", "4", "--json"
    )
    assert code == 0, out
    figures = json.loads(out.strip().splitlines()[-1])
    assert 900 <= figures["published"] <= 1500, figures  # 300 fixes/s for 4 s
    assert figures["stored"] == figures["published"]
    assert figures["sampled"] >= 15 and figures["unseen"] == 0
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] < 5000
    assert "publish → committed latency" in out
