"""One-shot (deploy/compose.yaml `migrate`, after `tagwatch migrate`): the per-process roles
with their passwords (store/roles.py) and EMQX's read-only account (store/emqx_auth.py).

Passwords are read from the files Compose mounts as secrets, never from the command line. Runs
as the database owner (TAGWATCH_DATABASE_URL without a password; PGPASSWORD from the owner's
secret file, deploy/docker-entrypoint.sh); safe to repeat.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from tagwatch.settings import get_settings
from tagwatch.store import emqx_auth, roles

SECRETS = Path("/run/secrets")


def secret(name: str) -> str:
    return (SECRETS / name).read_text().strip()


def main() -> None:
    passwords = {
        roles.API_ROLE: secret("db_api_password"),
        roles.INGEST_ROLE: secret("db_ingest_password"),
        roles.DISPATCHER_ROLE: secret("db_dispatcher_password"),
    }
    with psycopg.connect(get_settings().database_url, autocommit=True) as conn:
        if not roles.ensure_roles(conn, passwords):
            raise SystemExit("the owner may not create roles: create them as an administrator")
        roles.apply_grants(conn)
        emqx_auth.ensure_role(conn, secret("db_emqx_password"))
    print("roles ready: " + ", ".join([*passwords, emqx_auth.EMQX_ROLE]))


if __name__ == "__main__":
    main()
