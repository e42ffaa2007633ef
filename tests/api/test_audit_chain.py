"""The audit log is a hash chain: intact chains verify, tampering is named, concurrent appends
through the API never fork it, and a database migrated with rows already in it is chained.

Tampering runs in private databases (copies of one migrated template), never in the session's
shared one, whose chain other tests rely on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from tagwatch.api.app import create_app
from tagwatch.api.security import hash_password
from tagwatch.audit_verify import GENESIS, verify
from tagwatch.store.migrate import discover, migrate
from tests.support import fresh_id

pytestmark = pytest.mark.integration

TRICKY_DETAILS = [
    '{"reason": "court order 12/34 — é ✓", "n": 1e16, "f": 0.1, "nested": {"b": [1, null]}}',
    '{"start": "2026-01-01T00:00:00+00:00", "reason": null}',
    "{}",
    '{"quote": "a \\"b\\" \\\\ c\\n", "ctrl": "\\u0001"}',
]


def _admin_url(settings) -> str:
    return settings.database_url.rsplit("/", 1)[0] + "/postgres"


def _db_url(settings, name: str) -> str:
    return settings.database_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="module")
def template(settings) -> Iterator[str]:
    """A migrated database with a few chained rows, to copy per test."""
    name = fresh_id("audit_tpl").replace("-", "_")
    with psycopg.connect(_admin_url(settings), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _db_url(settings, name)
    migrate(url)
    with psycopg.connect(url) as conn:
        for i, detail in enumerate(TRICKY_DETAILS * 2):
            conn.execute(
                "INSERT INTO audit_log (username, role, action, subject_id, detail)"
                " VALUES (%s, 'operator', 'track', %s, %s::jsonb)",
                (f"user-{i}", None if i % 3 == 0 else i, detail),
            )
    with psycopg.connect(_admin_url(settings), autocommit=True) as conn:
        _freeze(conn, name)
    yield name
    with psycopg.connect(_admin_url(settings), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _freeze(conn: psycopg.Connection, name: str) -> None:
    """Make `name` a template nobody is connected to, as CREATE DATABASE ... TEMPLATE needs.

    With TimescaleDB preloaded, the extension's job scheduler stays connected to every database
    that has it (migrate created it), and TimescaleDB restarts that scheduler when the database
    is copied, so the copy failed ("source database is being accessed by other users"). A
    database that is a template and takes no connections gets no scheduler (TimescaleDB's
    launcher skips both), and the one already there is ended here; CREATE DATABASE waits a few
    seconds for it to go. On plain PostgreSQL this ends nothing."""
    conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )


@pytest.fixture
def chain_db(settings, template) -> Iterator[str]:
    name = fresh_id("audit").replace("-", "_")
    with psycopg.connect(_admin_url(settings), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield _db_url(settings, name)
    with psycopg.connect(_admin_url(settings), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _verdict(url: str):
    with psycopg.connect(url, autocommit=True) as conn:
        return verify(conn)


def _ids(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM audit_log ORDER BY seq")]


def test_intact_chain_verifies_and_python_agrees_with_the_database(chain_db):
    verdict = _verdict(chain_db)
    assert verdict.ok, verdict.problem
    assert verdict.rows == verdict.head_seq == len(TRICKY_DETAILS) * 2
    with psycopg.connect(chain_db) as conn:
        first = conn.execute("SELECT prev_hash FROM audit_log WHERE seq = 1").fetchone()
    assert first == (GENESIS,)


def test_cli_exits_0_with_the_count_then_1_naming_the_altered_row(chain_db):
    env = {**os.environ, "TAGWATCH_DATABASE_URL": chain_db, "TAGWATCH_ENVIRONMENT": "test"}
    command = [sys.executable, "-m", "tagwatch", "audit", "verify"]
    intact = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert intact.returncode == 0, intact.stderr
    assert f"intact: {len(TRICKY_DETAILS) * 2} rows" in intact.stdout
    victim = _ids(chain_db)[3]
    with psycopg.connect(chain_db) as conn:
        conn.execute(
            'UPDATE audit_log SET detail = detail || \'{"reason": "routine"}\' WHERE id = %s',
            (victim,),
        )
    broken = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert broken.returncode == 1
    assert f"row id {victim} " in broken.stdout
    assert "altered" in broken.stdout


def test_updated_detail_is_detected_with_its_id_and_undoing_it_heals(chain_db):
    victim = _ids(chain_db)[4]
    with psycopg.connect(chain_db) as conn:
        original = conn.execute("SELECT detail FROM audit_log WHERE id = %s", (victim,)).fetchone()
        conn.execute('UPDATE audit_log SET detail = \'{"reason": "x"}\' WHERE id = %s', (victim,))
    verdict = _verdict(chain_db)
    assert verdict.problem is not None
    assert (verdict.problem.kind, verdict.problem.row_id) == ("altered", victim)
    assert verdict.rows == 4
    with psycopg.connect(chain_db) as conn:
        assert original is not None
        conn.execute(
            "UPDATE audit_log SET detail = %s WHERE id = %s",
            (psycopg.types.json.Jsonb(original[0]), victim),
        )
    assert _verdict(chain_db).ok


@pytest.mark.parametrize("column", ["username", "at", "subject_id", "action"])
def test_any_altered_column_is_detected(chain_db, column):
    victim = _ids(chain_db)[2]
    change = {
        "username": "username = 'someone-else'",
        "at": "at = at - interval '1 hour'",
        "subject_id": "subject_id = coalesce(subject_id, 0) + 1",
        "action": "action = 'position'",
    }[column]
    with psycopg.connect(chain_db) as conn:
        conn.execute(f"UPDATE audit_log SET {change} WHERE id = %s", (victim,))
    problem = _verdict(chain_db).problem
    assert problem is not None
    assert (problem.kind, problem.row_id) == ("altered", victim)


def test_deleted_middle_row_is_detected(chain_db):
    ids = _ids(chain_db)
    with psycopg.connect(chain_db) as conn:
        conn.execute("DELETE FROM audit_log WHERE id = %s", (ids[3],))
    problem = _verdict(chain_db).problem
    assert problem is not None
    assert problem.kind == "deleted"
    assert problem.seq == 4
    assert problem.row_id == ids[4]  # the row after the gap
    assert "seq 4 missing" in problem.message


def test_deleted_tail_is_detected_against_the_head(chain_db):
    ids = _ids(chain_db)
    with psycopg.connect(chain_db) as conn:
        conn.execute("DELETE FROM audit_log WHERE id = %s", (ids[-1],))
    problem = _verdict(chain_db).problem
    assert problem is not None
    assert problem.kind == "deleted"
    assert f"row id {ids[-2]}" in problem.message


def test_row_inserted_behind_the_chains_back_is_detected(chain_db):
    with psycopg.connect(chain_db) as conn:
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_chain")
        row = conn.execute(
            "INSERT INTO audit_log (username, role, action) VALUES ('ghost', 'admin', 'track')"
            " RETURNING id"
        ).fetchone()
        conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_chain")
    problem = _verdict(chain_db).problem
    assert problem is not None and row is not None
    assert (problem.kind, problem.row_id) == ("inserted", row[0])


def test_altered_and_rehashed_row_breaks_the_next_link(chain_db):
    """Someone who recomputes the hash of the row they changed still breaks its successor."""
    ids = _ids(chain_db)
    with psycopg.connect(chain_db) as conn:
        conn.execute("UPDATE audit_log SET username = 'nobody' WHERE id = %s", (ids[2],))
        conn.execute(
            "UPDATE audit_log SET hash = audit_row_hash(seq, id, at, username, role, action,"
            " subject_id, detail, prev_hash) WHERE id = %s",
            (ids[2],),
        )
    problem = _verdict(chain_db).problem
    assert problem is not None
    assert problem.row_id == ids[3]
    assert f"row id {ids[2]}" in problem.message


def test_concurrent_reads_through_two_api_processes_keep_one_chain(settings, chain_db):
    """Threads through two app instances (separate pools) read tracks at once; every read is
    audited, with its reason, and the chain stays one unforked line."""
    region, username = fresh_id("r"), fresh_id("op")
    with psycopg.connect(chain_db) as conn:
        conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (region, region))
        subject = conn.execute(
            "INSERT INTO subjects (name, region_id) VALUES ('S', %s) RETURNING id", (region,)
        ).fetchone()
        conn.execute(
            "INSERT INTO users (username, password_hash, role, regions) VALUES (%s, %s, %s, %s)",
            (username, hash_password("pass-word-1"), "operator", [region]),
        )
    assert subject is not None
    before = _verdict(chain_db).rows
    private = settings.model_copy(update={"database_url": chain_db, "api_database_url": None})
    threads_per_app, reads = 4, 6
    failures: list[str] = []
    with TestClient(create_app(private)) as one, TestClient(create_app(private)) as two:
        token = one.post(
            "/api/v1/auth/token", data={"username": username, "password": "pass-word-1"}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        def work(client: TestClient, worker: int) -> None:
            for i in range(reads):
                response = client.get(
                    f"/api/v1/subjects/{subject[0]}/track",
                    params={"reason": f"case {worker}-{i}"},
                    headers=headers,
                )
                if response.status_code != 200:
                    failures.append(response.text)

        threads = [
            threading.Thread(target=work, args=(client, n * 10 + k))
            for n, client in enumerate((one, two))
            for k in range(threads_per_app)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not failures
    verdict = _verdict(chain_db)
    assert verdict.ok, verdict.problem
    assert verdict.rows == before + 2 * threads_per_app * reads
    with psycopg.connect(chain_db) as conn:
        reasons = {
            r[0]
            for r in conn.execute(
                "SELECT detail->>'reason' FROM audit_log WHERE subject_id = %s AND username = %s",
                (subject[0], username),
            )
        }
    assert len(reasons) == 2 * threads_per_app * reads


def test_concurrent_open_transactions_never_fork_the_chain(chain_db):
    """Writers whose transactions overlap (insert, wait, commit) are chained at commit, in
    commit order, one after another."""
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            with psycopg.connect(chain_db) as conn:
                for i in range(3):
                    conn.execute(
                        "INSERT INTO audit_log (username, role, action, detail)"
                        " VALUES (%s, 'admin', 'position', %s::jsonb)",
                        (f"w{n}", f'{{"i": {i}}}'),
                    )
                barrier.wait(10)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    verdict = _verdict(chain_db)
    assert verdict.ok, verdict.problem
    assert verdict.rows == len(TRICKY_DETAILS) * 2 + 18


def test_existing_rows_are_chained_by_the_migration(settings):
    """A database that had audit rows before 0004 gets them chained, in id order."""
    name = fresh_id("audit_old").replace("-", "_")
    with psycopg.connect(_admin_url(settings), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _db_url(settings, name)
    try:
        with psycopg.connect(url) as conn:
            conn.execute(
                "CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for m in discover():
                if m.timescale or m.version >= "0004":
                    continue
                conn.execute(m.path.read_text())
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (m.version,))
            for detail in TRICKY_DETAILS:
                conn.execute(
                    "INSERT INTO audit_log (username, role, action, subject_id, detail)"
                    " VALUES ('old', 'tracer', 'position', 7, %s::jsonb)",
                    (detail,),
                )
        assert "0004_security" in migrate(url)
        verdict = _verdict(url)
        assert verdict.ok, verdict.problem
        assert verdict.rows == len(TRICKY_DETAILS)
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO audit_log (username, role, action) VALUES ('new', 'admin', 'track')"
            )
        assert _verdict(url).rows == len(TRICKY_DETAILS) + 1
    finally:
        with psycopg.connect(_admin_url(settings), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
