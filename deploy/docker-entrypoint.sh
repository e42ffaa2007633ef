#!/bin/sh
# The tagwatch image's entrypoint: every NAME_FILE=/path in the environment becomes NAME=<the
# file's content> (Docker and Compose secrets are files; the values never appear in the compose
# file, in `docker inspect` or on a command line), then `tagwatch ARGS`.
#   PGPASSWORD_FILE=/run/secrets/db_ingest_password -> PGPASSWORD (libpq's, for the URL's role)
#   TAGWATCH_SECRET_KEY_FILE=/run/secrets/secret_key -> TAGWATCH_SECRET_KEY
set -eu
for name in $(env | sed -n 's/^\([A-Z][A-Z0-9_]*\)_FILE=.*/\1/p'); do
  path="$(printenv "${name}_FILE")"
  value="$(cat "$path")"
  export "$name=$value"
  unset "${name}_FILE"
done
if [ "${1:-}" = "python" ]; then exec "$@"; fi
exec tagwatch "$@"
