"""The installed distribution works as the checkout does (issue 13, item 7).

The wheel is built from this checkout, installed with its dependencies into a fresh virtualenv
outside the repository, and run from a directory outside it too: `tagwatch scenario list` and
`tagwatch score-offline` must find the scenario library the wheel carries, and `tagwatch api`
must serve the console page and the Leaflet the wheel carries (no node_modules in reach).

What would hide a broken wheel is the checkout leaking in: the shared development venv puts the
repository on sys.path (an editable install's .pth), a PYTHONPATH or the cwd would too. So the
children run with neither, from tmp_path, and the test asserts `tagwatch` is imported from the
new venv and that no layer is importable under its bare folder name (`import store` fails).

Installing the dependencies (from the pip cache / the local index) took 15 s here, so the test
installs them for real rather than borrowing the development venv's: it also proves that the
dependencies pyproject.toml declares are enough to run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

from tagwatch.services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = ("battery-death", "case-tamper")


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would put the checkout on sys.path."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TAGWATCH_") and key not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env["PYTHONNOUSERSITE"] = "1"
    return {**env, **extra}


def _run(args: list[str], cwd: Path, timeout: float = 300, **extra: str) -> str:
    result = subprocess.run(
        args,
        check=False,
        cwd=cwd,
        env=_env(**extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{args}: {result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(the wheel, the fresh venv's bin directory, a working directory outside the repo)."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(REPO)], base)
    (wheel,) = dist.glob("tagwatch-*.whl")
    target = base / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    bin_dir = target / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)], base, timeout=600)
    work = base / "work"
    work.mkdir()
    return wheel, bin_dir, work


def test_the_wheel_holds_one_package_with_its_data(installed: tuple[Path, Path, Path]) -> None:
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"tagwatch"}
    assert any(name.startswith("tagwatch/scenarios/") and name.endswith(".toml") for name in names)
    assert "tagwatch/api/console/vendor/leaflet/leaflet.js" in names
    assert "tagwatch/api/console/index.html" in names


def test_the_checkout_is_not_what_runs(installed: tuple[Path, Path, Path]) -> None:
    _, bin_dir, work = installed
    probe = (
        "import importlib.util, tagwatch, tagwatch.store; "
        "print(tagwatch.__file__); print(tagwatch.store.__file__); "
        "print([n for n in ('store', 'api', 'alerts', 'ingest', 'geofence', 'simulators') "
        "if importlib.util.find_spec(n)])"
    )
    lines = _run([str(bin_dir / "python"), "-c", probe], work).splitlines()
    site = bin_dir.parent.resolve()
    assert Path(lines[0]).resolve().is_relative_to(site)
    assert Path(lines[1]).resolve().is_relative_to(site)
    assert lines[2] == "[]"  # no layer under a bare top-level name: `import store` fails


def test_scenario_list_and_score_offline_use_the_packaged_library(
    installed: tuple[Path, Path, Path],
) -> None:
    _, bin_dir, work = installed
    tagwatch = str(bin_dir / "tagwatch")
    listed = _run([tagwatch, "scenario", "list"], work)
    names = [line.split()[0] for line in listed.splitlines() if line.strip()]
    expected = sorted(path.stem for path in (REPO / "scenarios").glob("*.toml"))
    assert names == expected
    scored = _run([tagwatch, "score-offline", *SCENARIOS], work)
    rows = {line.split()[0]: line.split() for line in scored.splitlines() if line.strip()}
    for name in SCENARIOS:
        assert name in rows, scored
    total = rows["total"]
    assert int(total[1]) > 0  # expected alerts: a library was scored, not 0/0
    assert total[4] == "0", scored  # none missed


def test_the_api_serves_the_console_and_its_leaflet(
    installed: tuple[Path, Path, Path], service_env: dict[str, str]
) -> None:
    _, bin_dir, work = installed
    port = free_port()
    env = _env(**service_env, TAGWATCH_API_PORT=str(port), TAGWATCH_NODE_MODULES=str(work))
    log = (work / "api.log").open("w")
    process = subprocess.Popen(
        [str(bin_dir / "tagwatch"), "api"], cwd=work, env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (work / "api.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (work / "api.log").read_text()
            time.sleep(0.2)
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200
        assert 'id="login-form"' in page.text
        config = httpx.get(f"http://127.0.0.1:{port}/console/config.json", timeout=5).json()
        assert config["vendor"] == {"leaflet": True}
        leaflet = httpx.get(f"http://127.0.0.1:{port}/vendor/leaflet/leaflet.js", timeout=5)
        assert leaflet.status_code == 200
        assert leaflet.headers["content-type"].startswith("text/javascript")
        assert "Leaflet" in leaflet.text[:2000]
    finally:
        process.terminate()
        process.wait(20)
        log.close()
