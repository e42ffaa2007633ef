"""EMQX's device authentication and authorisation (store/emqx_auth.py) run exactly as EMQX runs
them: the same statements, placeholders bound as prepared-statement parameters, as the
read-only account the deployment gives EMQX, against the real database with devices provisioned
the platform's way; then every ACL case is decided the way EMQX decides it (rules in the order
returned, first match wins, `eq ` exact, MQTT wildcards, no match = deny)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tagwatch.store import emqx_auth
from tests.support import fresh_id

CONF = Path(__file__).parents[2] / "deploy" / "emqx" / "auth.conf"
SERVICES_ACL = CONF.parent / "tagwatch-services.acl"


def filter_matches(topic: str, rule: str) -> bool:
    """EMQX's emqx_topic:match/2: a topic (or a subscription's filter, whose wildcards only a
    wildcard of the rule covers) against a rule's filter. A wildcard never matches a first
    level starting with `$`."""
    words, rules = topic.split("/"), rule.split("/")
    if words[0].startswith("$") and rules[0] in ("#", "+"):
        return False
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


def real_topic(topic: str) -> str:
    """emqx_topic:get_shared_real_topic: EMQX 5 authorises `$share/<group>/t` as `t` (and
    `$queue/...`, `$stream/...` verbatim, prefix included)."""
    if topic.startswith("$share/"):
        parts = topic.split("/", 2)
        return parts[2] if len(parts) == 3 else topic
    return topic


def decide(rules: list[tuple[str, str, str]], action: str, topic: str) -> str:
    topic = real_topic(topic) if action == "subscribe" else topic
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
        emqx_auth.ensure_role(owner, None)  # what the deployments' migrate step runs
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


def test_the_deploy_files_are_the_modules():
    assert CONF.read_text() == emqx_auth.render_conf(), "run: python -m tagwatch.store.emqx_auth"
    assert SERVICES_ACL.read_text() == emqx_auth.render_services_acl(), (
        "run: python -m tagwatch.store.emqx_auth services-acl"
    )


def _outside_quotes(text: str) -> str:
    """The HOCON text with comments and quoted strings blanked: what substitution applies to."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def test_the_conf_is_hocon_and_takes_the_environment_outside_quotes(monkeypatch):
    """HOCON substitutes `${NAME}` only outside quotes: the server and password must be bare
    substitutions (resolved from the environment), the queries' EMQX placeholders quoted text."""
    from pyhocon import ConfigFactory

    text = emqx_auth.render_conf()
    bare = set(re.findall(r"\$\{\??(\w+)\}", _outside_quotes(text)))
    assert bare == set(emqx_auth.ENV_VARS)
    quoted = re.findall(r'"(?:[^"\\]|\\.)*"', text)
    for name in emqx_auth.ENV_VARS:
        assert not any(name in q for q in quoted), f"{name} inside quotes is never substituted"
    monkeypatch.setenv(emqx_auth.ENV_SERVER, "db.internal:5432")
    monkeypatch.setenv(emqx_auth.ENV_PASSWORD, 'pa"ss wo}rd')
    conf = ConfigFactory.parse_string(text)
    (authn,) = conf["authentication"]
    assert authn["server"] == "db.internal:5432"
    assert authn["password"] == 'pa"ss wo}rd'
    assert authn["query"] == emqx_auth.AUTHN_QUERY  # ${username} stays for EMQX
    assert authn["ssl"]["verify"] == "verify_peer"
    file_source, pg_source = conf["authorization"]["sources"]
    assert file_source["path"] == emqx_auth.SERVICES_ACL_PATH
    assert pg_source["server"] == "db.internal:5432"
    assert pg_source["password"] == 'pa"ss wo}rd'
    assert pg_source["query"] == emqx_auth.AUTHZ_QUERY
    assert conf["authorization"]["no_match"] == "deny"


def test_the_services_rules_are_mosquittos(monkeypatch):
    """EMQX's file source gives the services what Mosquitto's dynamic security gives them."""
    from tagwatch.ingest import broker_accounts

    mosquitto: set[tuple[str, str, str]] = set()
    roles = {"tagwatch-ingest", "tagwatch-dispatcher", "tagwatch-api"}
    kinds = {"subscribePattern": "subscribe", "publishClientSend": "publish"}
    for command in broker_accounts.service_account_commands(
        "tagwatch-ingest", "tagwatch-dispatcher", api="tagwatch-api"
    ):
        if command["command"] == "addRoleACL" and command["acltype"] in kinds:
            assert command["rolename"] in roles
            mosquitto.add((command["rolename"], kinds[command["acltype"]], command["topic"]))
    emqx = {
        (user, action, topic)
        for user, action, topics in emqx_auth.SERVICE_RULES
        for topic in topics
    }
    assert emqx == mosquitto


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
        ("publish", f"em/v1/{other}/cmd"),
        ("publish", f"em/v1/{other}/event"),
        ("publish", f"em/v1/{other}/status"),
        ("publish", "em/v1/alerts/national"),
        # wildcard subscriptions, even ones that would cover only its own command topic
        ("subscribe", "em/v1/#"),
        ("subscribe", "em/v1/+/fix"),
        ("subscribe", "em/v1/+/+"),
        ("subscribe", f"em/v1/{tag}/+"),
        ("subscribe", "+/+/+/cmd"),
        ("subscribe", f"em/v1/{other}/fix"),
        # shared and queue subscriptions: EMQX authorises a $share filter as its real topic
        ("subscribe", "$share/g/em/v1/#"),
        ("subscribe", "$share/g/em/v1/+/fix"),
        ("subscribe", f"$share/g/em/v1/{other}/cmd"),
        ("subscribe", "$share/ingest/em/v1/+/fix"),
        ("subscribe", f"$queue/q/em/v1/{tag}/cmd"),
        ("subscribe", "$SYS/#"),
        ("publish", "$SYS/brokers"),
        ("publish", "tagwatch/barrier/x"),
        ("subscribe", "tagwatch/barrier/#"),
    }
    for action, topic in allowed:
        assert decide(rules, action, topic) == "allow", (action, topic)
    for action, topic in refused:
        assert decide(rules, action, topic) == "deny", (action, topic)
    # Its own command topic through a share group is its own command topic (EMQX checks the
    # real topic): nothing more than the literal subscription gives it.
    assert decide(rules, "subscribe", f"$share/g/em/v1/{tag}/cmd") == "allow"
    # another client id with this tag's credentials gets no rule at all
    assert authz(emqx_db, tag, "tagwatch-dispatcher") == []
    assert authz(emqx_db, tag, other) == []
    # and the other device's rules are its own, not this tag's
    others = authz(emqx_db, other, other)
    assert decide(others, "publish", f"em/v1/{tag}/fix") == "deny"
    assert decide(others, "subscribe", f"em/v1/{tag}/cmd") == "deny"


def test_every_acl_case_of_a_phone(emqx_db, provision):
    phone = fresh_id("emqx-phone")
    base = f"owntracks/{phone}/p1"
    provision(phone, "phone", base)
    other = fresh_id("emqx-phone2")
    other_base = f"owntracks/{other}/p2"
    provision(other, "phone", other_base)
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
        ("publish", f"owntracks/{phone}"),
        ("publish", f"owntracks/{phone}/p2"),
        ("publish", f"{other_base}"),
        ("publish", f"{other_base}/event"),
        ("subscribe", f"{other_base}/cmd"),
        ("subscribe", "owntracks/#"),
        ("subscribe", f"owntracks/{phone}/+/cmd"),
        ("subscribe", "owntracks/+/+/cmd"),
        ("subscribe", f"$share/g/{other_base}/cmd"),
        ("subscribe", "$share/g/owntracks/#"),
        ("subscribe", f"em/v1/{phone}/cmd"),
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


def _emqx_authenticates(conn, device_id: str, password: str) -> bool:
    """What EMQX does at CONNECT: run the query, compare sha256(password + salt) in hex."""
    rows = authn(conn, device_id, device_id)
    return any(hashlib.sha256((password + salt).encode()).hexdigest() == h for h, salt, _ in rows)


def test_the_lifecycle_on_emqx_is_the_row(emqx_db, settings):
    """Registered, rotated, revoked and rotated again through the port's EMQX adapter (no broker
    call): what EMQX's queries return follows the row at each step."""
    from tagwatch.ingest.device_accounts import EmqxDatabase
    from tagwatch.ingest.provisioning import provision_device, revoke_device, rotate_device

    tag = fresh_id("emqx-life")
    accounts = EmqxDatabase()
    with psycopg.connect(settings.database_url) as conn:
        first = provision_device(conn, accounts, tag)  # in stock: no subject holds it
    assert _emqx_authenticates(emqx_db, tag, first)
    assert not _emqx_authenticates(emqx_db, tag, first + "x")  # a wrong password
    assert not _emqx_authenticates(emqx_db, tag, "")
    assert decide(authz(emqx_db, tag, tag), "publish", f"em/v1/{tag}/fix") == "allow"

    with psycopg.connect(settings.database_url) as conn:
        found = rotate_device(conn, accounts, tag, "test")
    assert found is not None
    second = found[1]
    assert second != first
    assert not _emqx_authenticates(emqx_db, tag, first)  # the old password fails
    assert _emqx_authenticates(emqx_db, tag, second)

    with psycopg.connect(settings.database_url) as conn:
        assert revoke_device(conn, accounts, tag, "test") is not None
    assert authn(emqx_db, tag, tag) == []
    assert not _emqx_authenticates(emqx_db, tag, second)
    rules = authz(emqx_db, tag, tag)  # a session still open may do nothing
    assert rules == []
    assert decide(rules, "publish", f"em/v1/{tag}/fix") == "deny"
    assert decide(rules, "subscribe", f"em/v1/{tag}/cmd") == "deny"

    with psycopg.connect(settings.database_url) as conn:
        found = rotate_device(conn, accounts, tag, "test")  # reinstated with a new secret
        assert found is not None
        assert rotate_device(conn, accounts, fresh_id("nobody"), "test") is None
        actions = conn.execute(
            "SELECT action FROM audit_log WHERE detail->>'device_id' = %s ORDER BY id", (tag,)
        ).fetchall()
    assert _emqx_authenticates(emqx_db, tag, found[1])
    assert [a for (a,) in actions] == [
        "device_secret_rotate",
        "device_secret_revoke",
        "device_secret_rotate",
    ]


def test_a_reserved_id_is_refused_by_both_adapters():
    from tagwatch.ingest.broker_accounts import BrokerAdminError, create_device_commands
    from tagwatch.ingest.device_accounts import EmqxDatabase

    for device_id in ("tagwatch-ingest", "alerts", "$SYS"):
        with pytest.raises(BrokerAdminError):
            EmqxDatabase().create_device(device_id, "secret", None)
        with pytest.raises(BrokerAdminError):
            create_device_commands(device_id, "secret", None)
