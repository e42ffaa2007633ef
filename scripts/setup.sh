#!/usr/bin/env bash
# Install what tagwatch needs on Debian/Ubuntu: PostgreSQL, Mosquitto, a virtualenv with the
# package and its dev extras. Idempotent; works as root or through sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql postgresql-contrib)
command -v mosquitto >/dev/null 2>&1 || need+=(mosquitto)
command -v mosquitto_ctrl >/dev/null 2>&1 || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || need+=(python3-venv)
# pdftoppm: the absconder template's PDF test turns its pages into images and looks at them
command -v pdftoppm >/dev/null 2>&1 || need+=(poppler-utils)
# The web console's Leaflet comes from npm (package-lock.json); its browser test drives Debian's
# Chromium with playwright-core (never a browser download; it needs node >= 20, Debian 12's own
# nodejs is 18: the browser test then skips). TAGWATCH_SETUP_BROWSER=0 skips Chromium, e.g. on
# a server that only serves the console.
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
if [ "${TAGWATCH_SETUP_BROWSER:-1}" != "0" ] && [ ! -x /usr/bin/chromium ]; then
  need+=(chromium)
fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Optional: Patroni and etcd for `tagwatch chaos db-failover` and its test (tests/chaos/), only
# with TAGWATCH_SETUP_CHAOS=1 (the test skips without them and without that variable: it takes
# about a minute, which CI's budget has not got). Debian's packages use the PostgreSQL already
# installed; if apt would install or upgrade any postgresql package alongside them, stop.
if [ "${TAGWATCH_SETUP_CHAOS:-0}" = "1" ] && ! { command -v patroni && command -v etcd; } >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  plan="$(apt-get -s install --no-install-recommends patroni etcd-server)"
  if grep '^Inst postgresql' <<<"$plan" >&2; then
    echo "setup: installing patroni would install or upgrade the PostgreSQL packages above;" \
      "not done" >&2
    exit 1
  fi
  echo "setup: installing patroni etcd-server (TAGWATCH_SETUP_CHAOS=1)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    patroni etcd-server >/dev/null
  # the packages' own services are not wanted: tagwatch runs private instances
  $SUDO systemctl disable --now patroni etcd >/dev/null 2>&1 || true
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"tagwatch needs Python >= 3.11, found {sys.version.split()[0]}")
PY

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=".venv/.tagwatch-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x .venv/bin/tagwatch ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
# Node packages, exactly as locked; again only when the lock file changed.
node_stamp="node_modules/.tagwatch-installed"
node_want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -f "$node_stamp" ] || [ "$(cat "$node_stamp")" != "$node_want" ] \
    || [ ! -f node_modules/leaflet/dist/leaflet.js ]; then
  echo "setup: installing Node packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$node_want" > "$node_stamp"
fi
echo "setup: ready (.venv/bin/tagwatch)"
