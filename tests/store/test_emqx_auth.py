"""EMQX's device authentication and authorisation (store/emqx_auth.py) run exactly as EMQX runs
them: the same statements, placeholders bound as prepared-statement parameters, as the
read-only account the deployment gives EMQX, against the real database with devices provisioned
the platform's way; then every ACL case is decided the way EMQX decides it (rules in the order
returned, first match wins, `eq ` exact, MQTT wildcards, no match = deny)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tagwatch.store import emqx_auth
from tests.support import fresh_id

CONF = Path(__file__).parents[2] / "deploy" / "emqx" / "auth.conf"


def filter_matches(topic: str, rule: str) -> bool:
    """EMQX's emqx_topic:match/2: a topic (or a subscription's filter, whose wildcards only a
    wildcard of the rule covers) against a rule's filter."""
    words, rules = topic.split("/"), rule.split("/")
    for i, r in enumerate(rules):
        if r == "#":
            return True
        if i >= len(words):
            return False
        if r == "+":
            if words[i] == "#":
                return False
            continue
        if words[i] != r:
            return False
    return len(words) == len(rules)


def decide(rules: list[tuple[str, str, str]], action: str, topic: str) -> str:
    for permission, rule_action, rule_topic in rules:
        if rule_action not in (action, "all"):
            continue
        if rule_topic.startswith("eq "):
            hit = topic == rule_topic[3:]
        else:
            hit = filter_matches(topic, rule_topic)
        if hit:
            return permission
    return "deny"  # authorization.no_match


@pytest.fixture(scope="module")
def emqx_db(settings):
    """A connection as EMQX's account: SELECT on four columns of `devices`, nothing else."""
    with psycopg.connect(settings.database_url, autocommit=True) as owner:
        exists = owner.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (emqx_auth.EMQX_ROLE,)
        ).fetchone()
        if not exists:
            owner.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier("tagwatch_emqx")))
        owner.execute(emqx_auth.GRANT)
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(emqx_auth.EMQX_ROLE)))
        yield conn


def authn(conn, username: str, clientid: str):
    return conn.execute(
        emqx_auth.as_psycopg(emqx_auth.AUTHN_QUERY), {"username": username, "clientid": clientid}
    ).fetchall()


def authz(conn, username: str, clientid: str) -> list[tuple[str, str, str]]:
    return conn.execute(
        emqx_auth.as_psycopg(emqx_auth.AUTHZ_QUERY), {"username": username, "clientid": clientid}
    ).fetchall()


def test_the_deploy_file_is_the_modules(settings):
    assert CONF.read_text() == emqx_auth.render_conf(), "run: python -m tagwatch.store.emqx_auth"


def test_authentication_is_the_secrets_digest_and_only_with_the_own_client_id(emqx_db, provision):
    tag = fresh_id("emqx-tag")
    password = provision(tag)
    (row,) = authn(emqx_db, tag, tag)
    # EMQX: sha256(password + salt) in hex, salt_position suffix, salt ''
    assert row[0] == hashlib.sha256((password + row[1]).encode()).hexdigest()
    assert row[2] is False  # never a superuser
    assert authn(emqx_db, tag, "tagwatch-ingest") == []  # a service's client id
    assert authn(emqx_db, tag, fresh_id("other")) == []
    assert authn(emqx_db, fresh_id("nobody"), "x") == []
    assert authn(emqx_db, "x' OR '1'='1", "x' OR '1'='1") == []  # bound, never spliced


def test_every_acl_case_of_a_tag(emqx_db, provision):
    tag, other = fresh_id("emqx-tag"), fresh_id("emqx-other")
    provision(tag)
    provision(other)
    rules = authz(emqx_db, tag, tag)
    allowed = {
        ("publish", f"em/v1/{tag}/fix"),
        ("publish", f"em/v1/{tag}/event"),
        ("publish", f"em/v1/{tag}/status"),
        ("publish", f"em/v1/{tag}/ack"),
        ("subscribe", f"em/v1/{tag}/cmd"),
    }
    refused = {
        ("publish", f"em/v1/{tag}/cmd"),  # whatever arrives there came from the platform
        ("subscribe", f"em/v1/{tag}/fix"),
        ("subscribe", "em/v1/+/cmd"),
        ("subscribe", f"em/v1/{tag}/#"),
        ("subscribe", "#"),
        ("publish", f"em/v1/{other}/fix"),
        ("subscribe", f"em/v1/{other}/cmd"),
        ("publish", f"osmand/{tag}/query"),  # the API's relay only
        ("publish", "em/v1/alerts/demo"),
        ("publish", f"owntracks/{tag}/p1"),
    }
    for action, topic in allowed:
        assert decide(rules, action, topic) == "allow", (action, topic)
    for action, topic in refused:
        assert decide(rules, action, topic) == "deny", (action, topic)
    # another client id with this tag's credentials gets no rule at all
    assert authz(emqx_db, tag, "tagwatch-dispatcher") == []


def test_every_acl_case_of_a_phone(emqx_db, provision):
    phone = fresh_id("emqx-phone")
    base = f"owntracks/{phone}/p1"
    provision(phone, "phone", base)
    rules = authz(emqx_db, phone, phone)
    for action, topic in [
        ("publish", base),
        ("publish", f"{base}/event"),
        ("publish", f"{base}/status"),
        ("publish", f"{base}/waypoints"),
        ("subscribe", f"{base}/cmd"),
    ]:
        assert decide(rules, action, topic) == "allow", (action, topic)
    for action, topic in [
        ("publish", f"{base}/cmd"),
        ("subscribe", "owntracks/+/+"),  # the apps' default subTopic: refused, not fatal
        ("subscribe", f"{base}/#"),
        ("publish", f"owntracks/{phone}/other"),
        ("publish", f"em/v1/{phone}/fix"),
        ("publish", f"osmand/{phone}/json"),
    ]:
        assert decide(rules, action, topic) == "deny", (action, topic)


def test_an_osmand_phone_has_no_broker_account(emqx_db, settings):
    phone = fresh_id("emqx-osmand")
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO devices (id, kind, osmand, http_secret_sha256) VALUES (%s, 'phone', true,"
            " sha256('token'::bytea))",
            (phone,),
        )
    assert authn(emqx_db, phone, phone) == []
    assert authz(emqx_db, phone, phone) == []
