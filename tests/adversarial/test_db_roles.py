"""A compromised process can do no more in the database than its job needs.

Each attack runs SQL with the credentials the process holds (its own role's URL, as an attacker
with code execution in that process would), and asserts the database refuses it and nothing
changed.
"""

from __future__ import annotations

import psycopg
import pytest

from tagwatch.store.roles import API_ROLE, DISPATCHER_ROLE, INGEST_ROLE
from tests.support import fresh_id, wait_for

pytestmark = pytest.mark.integration

ATTACKS_ON_AUDIT = (
    "UPDATE audit_log SET detail = '{}'::jsonb",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
    "UPDATE audit_chain_head SET last_seq = 0",
    "ALTER TABLE audit_log DISABLE TRIGGER audit_log_chain",
    "DROP TABLE audit_log",
)


def _refused(url: str, statement: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return True
        except psycopg.Error:
            return True  # refused for another reason (e.g. must be owner): still refused
        return False


def _audit_rows(settings) -> tuple[int, str | None]:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT count(*), max(hash) FROM audit_log").fetchone()
    assert row is not None
    return int(row[0]), row[1]


def test_processes_have_their_own_urls(settings):
    for process, role in (
        ("api", API_ROLE),
        ("ingest", INGEST_ROLE),
        ("dispatcher", DISPATCHER_ROLE),
    ):
        url = settings.database_url_for(process)
        assert url != settings.database_url
        with psycopg.connect(url) as conn:
            who = conn.execute(
                "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
        assert who == (role, False)


def test_api_cannot_rewrite_the_audit_log(settings, api, login):
    headers = login("supervisor", ["*"])
    assert api.get("/api/v1/subjects", headers=headers).status_code == 200
    before = _audit_rows(settings)
    url = settings.database_url_for("api")
    refused = [statement for statement in ATTACKS_ON_AUDIT if _refused(url, statement)]
    print(f"\napi role: {len(refused)}/{len(ATTACKS_ON_AUDIT)} audit attacks refused")
    assert refused == list(ATTACKS_ON_AUDIT)
    assert _audit_rows(settings) == before


def test_api_appends_to_the_chain_through_the_trigger(settings):
    """The API's role may insert an audit row; the chain is extended by the owner's trigger."""
    url = settings.database_url_for("api")
    action = fresh_id("probe")
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO audit_log (username, role, action, detail)"
            " VALUES ('t', 'admin', %s, '{}')",
            (action,),
        )
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT seq, hash FROM audit_log WHERE action = %s", (action,)
        ).fetchone()
    assert row is not None and row[0] is not None and row[1]


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM users",
        "UPDATE users SET role = 'admin'",
        "SELECT * FROM audit_log",
        "INSERT INTO audit_log (username, role, action, detail) VALUES ('x','admin','x','{}')",
        "SELECT * FROM webhook_subscriptions",
        "SELECT * FROM revoked_tokens",
        "DELETE FROM login_throttle",
        "ALTER TABLE fixes DISABLE TRIGGER ALL",
        "DROP TABLE fixes",
        "TRUNCATE fixes",
        "CREATE TABLE evil (x int)",
    ],
)
def test_ingest_cannot_touch_accounts_audit_or_schema(settings, statement):
    assert _refused(settings.database_url_for("ingest"), statement)


@pytest.mark.parametrize(
    "statement",
    ["SELECT * FROM users", "UPDATE audit_log SET detail = '{}'::jsonb", "DROP TABLE outbox"],
)
def test_dispatcher_cannot_touch_accounts_or_audit(settings, statement):
    assert _refused(settings.database_url_for("dispatcher"), statement)


def test_running_processes_connect_with_their_roles(settings, api, login, running_ingest):
    assert api.get("/api/v1/subjects", headers=login("operator", ["*"])).status_code == 200

    def roles_seen() -> set[str]:
        with psycopg.connect(settings.database_url) as conn:
            rows = conn.execute(
                "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database()"
            ).fetchall()
        return {r[0] for r in rows}

    assert wait_for(lambda: {API_ROLE, INGEST_ROLE} <= roles_seen(), timeout=20), roles_seen()


def test_ingest_routes_alerts_without_reading_webhook_destinations(settings):
    url = settings.database_url_for("ingest")
    with psycopg.connect(url) as conn:
        conn.execute("SELECT id, active, regions, types, min_severity FROM webhook_subscriptions")
    assert _refused(url, "SELECT url FROM webhook_subscriptions")
    assert _refused(url, "SELECT * FROM webhook_subscriptions")
