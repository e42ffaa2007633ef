"""Schemathesis over the whole API of a real server (real database): whatever it sends, no answer
is a 5xx. It runs as an admin (every route reachable); the routes that would end its own session
or lock accounts mid-run (logout, password changes) are left out."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from tagwatch.api.security import hash_password
from tests.support import api_server, fresh_id

pytestmark = pytest.mark.integration

EXCLUDED = [
    "/api/v1/auth/logout",
    "/api/v1/auth/password",
    "/api/v1/users/{user_id}/password",
]


def test_no_request_schemathesis_can_make_gets_a_server_error(
    settings, service_env, tmp_path: Path
):
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is a dev dependency: run scripts/setup.sh"
    username = fresh_id("fuzz-admin")
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO users (username, password_hash, role, regions)"
            " VALUES (%s, %s, 'admin', '{*}')",
            (username, hash_password("fuzz-pass-word")),
        )
    with api_server(service_env, tmp_path) as server:
        url = server.url
        token = httpx.post(
            f"{url}/api/v1/auth/token",
            data={"username": username, "password": "fuzz-pass-word"},
        ).json()["access_token"]
        command = [
            st,
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            os.environ.get("TAGWATCH_FUZZ_EXAMPLES", "8"),
            "--phases",
            "examples,coverage,fuzzing",
            "--generation-deterministic",
            "--request-timeout",
            "20",
            "--header",
            f"Authorization: Bearer {token}",
        ]
        for path in EXCLUDED:
            command += ["--exclude-path", path]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        report = done.stdout[-6000:] + done.stderr[-2000:]
        assert done.returncode == 0, f"{report}\n--- server log ---\n{server.log()[-4000:]}"
        cases = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
        assert cases and cases[1] == cases[2] and int(cases[1]) >= 500, report
        tested = re.search(r"Tested: (\d+)", done.stdout)
        assert tested and int(tested[1]) >= 30, report
