#!/usr/bin/env bash
# Set everything up and run the platform with simulated devices, until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

DIR=.tagwatch
export TAGWATCH_ENV_FILE="$PWD/$DIR/env"
export TAGWATCH_API_PORT="${TAGWATCH_API_PORT:-8000}"
.venv/bin/tagwatch services up --dir "$DIR"
.venv/bin/tagwatch migrate

if [ ! -s "$DIR/admin-password" ]; then
  (umask 077; .venv/bin/python -c "import secrets; print(secrets.token_urlsafe(12))" > "$DIR/admin-password")
fi
TAGWATCH_NEW_PASSWORD="$(cat "$DIR/admin-password")" .venv/bin/tagwatch user add admin --role admin --region '*' >/dev/null

cat <<MSG

  tagwatch is starting with ${TAGWATCH_DEMO_DEVICES:-25} simulated tags.
  API:      http://127.0.0.1:${TAGWATCH_API_PORT}/docs   (OpenAPI at /openapi.json)
  Log in:   admin / $(cat "$DIR/admin-password")   (POST /api/v1/auth/token)
  Settings: $DIR/env      Stop: Ctrl-C, then .venv/bin/tagwatch services down --dir $DIR

  Publish a fix yourself (in another shell):
    .venv/bin/tagwatch --env-file $DIR/env device add my-tag     # prints its password
    mosquitto_pub -p \$(grep -o '127.0.0.1:[0-9]*' $DIR/env | head -1 | cut -d: -f2) \\
      -u my-tag -i my-tag -P <password> -q 1 -t em/v1/my-tag/fix \\
      -m "{\"ts\": \$(date +%s), \"lat\": -33.92, \"lon\": 18.42, \"acc\": 8}"

MSG
exec .venv/bin/tagwatch run --simulate "${TAGWATCH_DEMO_DEVICES:-25}" --interval 5
