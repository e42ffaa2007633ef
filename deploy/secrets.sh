#!/bin/sh
# Writes deploy/secrets/ for deploy/compose.yaml: random passwords and keys, each in its own
# file (mode 0644: Compose mounts them into containers whose users differ from yours; keep the
# directory itself private, 0700). Existing files are kept, so running it again changes nothing.
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
chmod 700 secrets
new() {  # name, command printing the value
  if [ ! -s "secrets/$1" ]; then sh -c "$2" > "secrets/$1"; chmod 644 "secrets/$1"; fi
}
rand='python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
for name in db_owner_password db_api_password db_ingest_password db_dispatcher_password \
    db_emqx_password secret_key metrics_token grafana_admin_password; do
  new "$name" "$rand"
done
new webhook_secret_key 'python3 -c "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'
# EMQX reads no secret files: its cookie and its database password as an env file
if [ ! -s secrets/emqx.env ]; then
  {
    echo "EMQX_NODE__COOKIE=$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
    echo "EMQX_DASHBOARD__DEFAULT_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
    echo "TAGWATCH_EMQX_PG_PASSWORD=$(cat secrets/db_emqx_password)"
  } > secrets/emqx.env
  chmod 600 secrets/emqx.env
fi
echo "secrets in $(pwd)/secrets"
