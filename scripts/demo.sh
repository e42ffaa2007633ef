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
  Console:  http://127.0.0.1:${TAGWATCH_API_PORT}/        API: /docs (OpenAPI at /openapi.json)
  Log in:   admin / $(cat "$DIR/admin-password")
  The tags walk near three keep-out zones: alerts appear in the console's queue within minutes.
  Settings: $DIR/env      Stop: Ctrl-C, then .venv/bin/tagwatch services down --dir $DIR

  Publish a fix yourself (in another shell):
    .venv/bin/tagwatch --env-file $DIR/env device add my-tag --subject "Test Person"
  prints the tag's password and a ready mosquitto_pub command; the fix then shows at
  GET /api/v1/subjects/{subject_id}/position.

MSG
exec .venv/bin/tagwatch run --simulate "${TAGWATCH_DEMO_DEVICES:-25}" --interval 5
