#!/usr/bin/env bash
# Set everything up and run the whole test suite: linters, type checks, then pytest, which starts
# its own private PostgreSQL and Mosquitto. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy tagwatch  # the layers are under it (tagwatch/<layer> links to <layer>/)
echo "== pytest"
.venv/bin/pytest "$@"
