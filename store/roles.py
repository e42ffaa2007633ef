"""One PostgreSQL role per process, each with only the privileges its process needs.

A compromised API process (the one exposed to the Internet) must not be able to rewrite history:
it may append to the audit log and read it, never UPDATE, DELETE or TRUNCATE it, and it cannot
move the chain's head (the append trigger does that with its owner's rights). Ingest (the process
that parses hostile device payloads) has no access at all to users, login throttles, tokens,
webhook secrets or the audit log. The dispatcher reads what it sends and records deliveries. None
of them owns a table, so none can ALTER, DROP or TRUNCATE one, disable a trigger or grant itself
more. Migrations run as the database owner and end by applying these grants, so a table added
later is covered by the same rules (every role gets DML on it unless listed here).

The roles are cluster-wide LOGIN roles without a password until `tagwatch services up` (or an
administrator) sets one; each process connects with its own URL
(TAGWATCH_API_DATABASE_URL, TAGWATCH_INGEST_DATABASE_URL, TAGWATCH_DISPATCHER_DATABASE_URL).
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

API_ROLE = "tagwatch_api"
INGEST_ROLE = "tagwatch_ingest"
DISPATCHER_ROLE = "tagwatch_dispatcher"
PROCESS_ROLES = {"api": API_ROLE, "ingest": INGEST_ROLE, "dispatcher": DISPATCHER_ROLE}

# Tables about people who log in, their secrets, and the evidence trail.
_ACCOUNT_TABLES = frozenset(
    {
        "users",
        "revoked_tokens",
        "login_throttle",
        "login_address_throttle",
        "login_familiar_addresses",
    }
)
_AUDIT_TABLES = frozenset({"audit_log", "audit_chain_head"})

# Offices and tracing units (migration 0020): ingest routes critical alerts by them, and may
# only read them (an office's service area is not a device's to move).
_GEOGRAPHY_TABLES = frozenset({"offices", "tracing_units"})

# role -> tables it may not touch at all
NO_ACCESS: dict[str, frozenset[str]] = {
    API_ROLE: frozenset({"audit_chain_head", "schema_migrations"}),
    INGEST_ROLE: _ACCOUNT_TABLES
    | {"subject_photos"}  # subjects' photos (migration 0022): no background process needs them
    | _AUDIT_TABLES
    | {"webhook_subscriptions", "notification_channels", "delivery_attempts", "schema_migrations"}
    | _GEOGRAPHY_TABLES,
    DISPATCHER_ROLE: _ACCOUNT_TABLES | _AUDIT_TABLES | {"schema_migrations", "subject_photos"},
}
# role -> table -> the only columns it may read (ingest routes a new alert's notifications to
# the matching subscriptions, and a critical one to the tracing unit of the office nearest the
# subject, but never sees where subscriptions point or their secrets)
COLUMN_SELECT: dict[str, dict[str, tuple[str, ...]]] = {
    INGEST_ROLE: {
        "webhook_subscriptions": (
            "id",
            "active",
            "regions",
            "types",
            "min_severity",
            "tracing_unit_id",
        ),
        "notification_channels": (
            "id",
            "active",
            "regions",
            "types",
            "min_severity",
            "role",
            "escalation",
        ),
        "offices": ("id", "name", "region_id", "lon", "lat", "service_area", "service_radius_m"),
        "tracing_units": ("id", "name", "office_id", "region_id"),
    },
}
# role -> tables it may only read and append to
APPEND_ONLY: dict[str, frozenset[str]] = {
    API_ROLE: frozenset({"audit_log"}),
    INGEST_ROLE: frozenset(),
    DISPATCHER_ROLE: frozenset(),
}


def ensure_roles(conn: psycopg.Connection, passwords: dict[str, str] | None = None) -> bool:
    """Create the process roles if missing (and set passwords when given); False when this
    connection may not create roles, which leaves the deployment to its administrator."""
    passwords = passwords or {}
    try:
        for role in PROCESS_ROLES.values():
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL(
                        "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                    ).format(sql.Identifier(role))
                )
            if role in passwords:
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(passwords[role])
                    )
                )
    except psycopg.errors.InsufficientPrivilege:
        log.warning("cannot create the process roles here: an administrator must (store/roles.py)")
        return False
    return True


def apply_grants(conn: psycopg.Connection) -> None:
    """Give each process role exactly its privileges on every table, view and sequence."""
    if not ensure_roles(conn):
        return
    database = conn.execute("SELECT current_database()").fetchone()
    assert database is not None
    relations = [
        (row[0], row[1])
        for row in conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
            " AND c.relkind IN ('r', 'p', 'v', 'm')"
        ).fetchall()
    ]
    for role in PROCESS_ROLES.values():
        who = sql.Identifier(role)
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database[0]), who)
        )
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(who))
        conn.execute(
            sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(who)
        )
        conn.execute(sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {}").format(who))
        for name, kind in relations:
            table = sql.Identifier(name)
            conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(table, who))
            if name in NO_ACCESS[role]:
                columns = COLUMN_SELECT.get(role, {}).get(name)
                if columns:
                    conn.execute(
                        sql.SQL("GRANT SELECT ({}) ON {} TO {}").format(
                            sql.SQL(", ").join(map(sql.Identifier, columns)), table, who
                        )
                    )
                continue
            if kind in ("v", "m"):
                privileges = "SELECT"
            elif name in APPEND_ONLY[role]:
                privileges = "SELECT, INSERT"
            else:
                privileges = "SELECT, INSERT, UPDATE, DELETE"
            conn.execute(sql.SQL(f"GRANT {privileges} ON {{}} TO {{}}").format(table, who))
