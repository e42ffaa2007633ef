"""A deployment that forgot a secret refuses to run instead of running open.

The attack is the operator's mistake an attacker waits for: the API started with the development
signing key (anyone can mint an admin token), a broker reached in plaintext. Every long-running
command checks the settings `check-config` checks and exits before serving anything, unless
TAGWATCH_ENVIRONMENT=development is set explicitly; the default environment is production.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tagwatch.services import free_port
from tagwatch.settings import DEV_SECRET, Settings

pytestmark = pytest.mark.integration
LONG_RUNNING = ("api", "ingest", "dispatch", "run")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGWATCH_")}
    return {**env, **extra}


def _tagwatch(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tagwatch", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _start_api(env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tagwatch", "api"],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _healthz(process: subprocess.Popen[str], port: int) -> int | None:
    """/healthz's status once the API answers; None if it exited or never answered in 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
        except httpx.TransportError:
            time.sleep(0.2)
    return None


def test_default_environment_is_production():
    assert Settings.model_fields["environment"].default == "production"


@pytest.mark.parametrize("command", LONG_RUNNING)
def test_long_running_commands_refuse_a_default_secret(command, tmp_path):
    started = time.monotonic()
    result = _tagwatch([command], _clean_env(), tmp_path)
    took = time.monotonic() - started
    print(f"\n{command} without settings: exit {result.returncode} in {took:.1f} s")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "refusing to start in production" in result.stderr
    assert "TAGWATCH_SECRET_KEY" in result.stderr


def test_test_environment_is_no_escape(tmp_path):
    result = _tagwatch(["api"], _clean_env(TAGWATCH_ENVIRONMENT="test"), tmp_path)
    assert result.returncode == 1
    assert "refusing to start in test" in result.stderr


def test_api_with_the_services_settings_starts_in_production(service_env, tmp_path):
    """The gate is not a wall: a sound configuration starts, in production."""
    port = free_port()
    overrides = {"TAGWATCH_ENVIRONMENT": "production", "TAGWATCH_API_PORT": str(port)}
    env = _clean_env(**{**service_env, **overrides})
    env.pop("TAGWATCH_MQTT_GATEWAY_URL", None)  # development-only account
    check = _tagwatch(["check-config"], env, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    process = _start_api(env, tmp_path)
    try:
        answered = _healthz(process, port)
        assert answered == 200, process.stderr.read() if process.stderr else ""
        # the development signing key cannot mint a token this API accepts
        import jwt

        forged = jwt.encode({"sub": "admin", "role": "admin"}, DEV_SECRET, algorithm="HS256")
        response = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/subjects",
            headers={"Authorization": f"Bearer {forged}"},
            timeout=5,
        )
        assert response.status_code == 401
    finally:
        process.terminate()
        process.wait(15)


def test_development_is_an_explicit_choice(tmp_path):
    """With TAGWATCH_ENVIRONMENT=development the same mistakes only warn (a laptop demo)."""
    port = free_port()
    env = _clean_env(TAGWATCH_ENVIRONMENT="development", TAGWATCH_API_PORT=str(port))
    process = _start_api(env, tmp_path)
    try:
        answered = _healthz(process, port)
        assert answered is not None
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    assert "starting anyway (TAGWATCH_ENVIRONMENT=development)" in stderr


def test_services_env_file_is_development_with_real_secrets(service_env):
    assert service_env["TAGWATCH_ENVIRONMENT"] == "development"
    assert service_env["TAGWATCH_SECRET_KEY"] != DEV_SECRET
    assert len(service_env["TAGWATCH_SECRET_KEY"]) >= 32
