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
# Two workers by default (TAGWATCH_TEST_WORKERS=0 runs in one process); a test file stays on
# one worker, which starts its own private PostgreSQL and Mosquitto.
workers="${TAGWATCH_TEST_WORKERS:-2}"
if [ "$workers" = "0" ]; then
  .venv/bin/pytest "$@"
else
  # the timed end-to-end delivery tests (marker `serial`) then run alone, on fresh services
  rc=0
  .venv/bin/pytest -n "$workers" --dist loadfile -m "not serial" "$@" || rc=$?
  .venv/bin/pytest -m serial "$@" || { r=$?; [ "$rc" -ne 0 ] || rc=$r; }
  exit "$rc"
fi
