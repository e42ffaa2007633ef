"""The broker tier's second adapter: EMQX authenticates devices and authorises their topics with
SQL against the platform's own `devices` table (issue 17, item 4).

With Mosquitto (the embedded default) provisioning writes each device's account and ACL into the
dynamic-security plugin (`ingest.broker_accounts.BrokerAdmin`). EMQX, which clusters, can instead
ask PostgreSQL on every CONNECT and on every first PUBLISH/SUBSCRIBE of a topic: then the database
is the only place a device exists, provisioning needs no broker call, and deleting the row locks
the device out (EMQX caches authorisation for `authorization.cache.ttl`, 1 minute by default).

What EMQX runs are the two statements below, with its own placeholders (`${username}`,
`${clientid}`), which it sends as bound parameters of a prepared statement, never spliced into
the text. `tests/store/test_emqx_auth.py` runs exactly these statements, with the placeholders
bound the same way, against the real database and checks every ACL case; `deploy/emqx/auth.conf`
is rendered from this module (`render_conf`) and checked against it.

* **Authentication** returns the SHA-256 (hex) of the device's secret, which the platform already
  keeps (`devices.http_secret_sha256`, migration 0017: random secrets of 144 bits and more, so a
  fast unsalted digest is safe at rest), and only when the client id is the user name: the same
  pin as Mosquitto's, so a wearer holding a phone's credentials cannot take a service's or another
  device's client id. OsmAnd phones have no broker account (HTTP only) and never match.
* **Authorisation** returns the device's rules in order, and EMQX applies the first that matches
  (`no_match = deny`): a device may not publish on its own command topic (what arrives there came
  from the platform); it may subscribe to that topic literally (`eq`: a wildcard filter such as
  `em/v1/+/cmd` is another string and is refused); it may publish on its own topics only (a tag's
  `em/v1/{id}/#`, a phone's OwnTracks topic and its sub-topics). Nothing else: not another
  device's topics, not `osmand/#` (the API's relay), not the alert topics. A revoked device
  (its secret withdrawn: `http_secret_sha256` NULL, ingest/device_accounts.py) gets no rule, so a
  session it still holds may do nothing once EMQX's authorisation cache expires.

The platform writes no account anywhere else on EMQX sites: `TAGWATCH_BROKER_KIND=emqx` makes
the API and `tagwatch device add|rotate|revoke` use `ingest.device_accounts.EmqxDatabase`, for
which the row is the account.

The platform's services (ingest, dispatcher, API relay) authenticate with client certificates
on a listener of their own and are authorised by EMQX's file source, rendered here too
(`render_services_acl`, `deploy/emqx/tagwatch-services.acl`: the same rules as
`ingest.broker_accounts.service_account_commands` gives them on Mosquitto); only devices are in
the database. Regenerate both files with `python -m tagwatch.store.emqx_auth >
deploy/emqx/auth.conf` and `python -m tagwatch.store.emqx_auth services-acl >
deploy/emqx/tagwatch-services.acl`.
"""

from __future__ import annotations

import re
from typing import Final

import psycopg
from psycopg import sql

# EMQX's authentication query (authentication.postgresql.query). Columns by EMQX's names.
AUTHN_QUERY: Final = (
    "SELECT encode(http_secret_sha256, 'hex') AS password_hash, '' AS salt,"
    " false AS is_superuser FROM devices"
    " WHERE id = ${username} AND id = ${clientid} AND NOT osmand"
    " AND http_secret_sha256 IS NOT NULL LIMIT 1"
)

# EMQX's authorisation query (authorization.sources.postgresql.query): the rules in the order
# EMQX must try them (first match wins), one row each.
AUTHZ_QUERY: Final = (
    "SELECT r.permission, r.action, r.topic FROM devices d CROSS JOIN LATERAL (VALUES"
    " (1, 'deny', 'publish',"
    "  'eq ' || coalesce(d.owntracks_topic || '/cmd', 'em/v1/' || d.id || '/cmd')),"
    " (2, 'allow', 'subscribe',"
    "  'eq ' || coalesce(d.owntracks_topic || '/cmd', 'em/v1/' || d.id || '/cmd')),"
    " (3, 'allow', 'publish', coalesce(d.owntracks_topic, 'em/v1/' || d.id || '/#')),"
    " (4, 'allow', 'publish', d.owntracks_topic || '/#')"
    ") AS r (rank, permission, action, topic)"
    " WHERE d.id = ${username} AND d.id = ${clientid} AND NOT d.osmand"
    " AND d.http_secret_sha256 IS NOT NULL AND r.topic IS NOT NULL"
    " ORDER BY r.rank"
)

# The database account EMQX connects as: it reads four columns of `devices` and nothing else.
EMQX_ROLE: Final = "tagwatch_emqx"
EMQX_COLUMNS: Final = ("id", "osmand", "owntracks_topic", "http_secret_sha256")
GRANT: Final = f"GRANT SELECT ({', '.join(EMQX_COLUMNS)}) ON devices TO {EMQX_ROLE}"

PLACEHOLDER: Final = re.compile(r"\$\{(\w+)\}")


def as_psycopg(query: str) -> str:
    """The statement with EMQX's placeholders as psycopg's named parameters, bound as EMQX binds
    them (a prepared statement's parameters): for the tests that run the statements as EMQX does."""
    return PLACEHOLDER.sub(lambda m: f"%({m.group(1)})s", query)


def _hocon(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# The deployment's values, read from EMQX's environment. HOCON substitutes `${NAME}` only
# outside quotes (inside a quoted string it is literal text, which is how the queries keep
# EMQX's own `${username}` placeholders), so each is written bare: `server = ${NAME}`, and
# HOCON falls back to the environment variable of that name when the file does not define it.
ENV_SERVER: Final = "TAGWATCH_EMQX_PG_SERVER"  # host:port of PostgreSQL (or its pooler)
ENV_PASSWORD: Final = "TAGWATCH_EMQX_PG_PASSWORD"  # noqa: S105 - the variable, not a value
ENV_VARS: Final = (ENV_SERVER, ENV_PASSWORD)

# Where the services' rules live in the EMQX container (deploy/emqx/tagwatch-services.acl).
SERVICES_ACL_PATH: Final = "etc/tagwatch-services.acl"
# The CA that signed the database's (and the broker's) certificates, mounted by the deployment.
CA_PATH: Final = "etc/certs/ca.crt"


def render_conf() -> str:
    """`deploy/emqx/auth.conf`: EMQX's device authentication and authorisation against the
    platform's database. The server and the password are HOCON substitutions of environment
    variables (`ENV_VARS`), never literals; the account needs SELECT on `devices`."""
    return f"""# Generated from store/emqx_auth.py (tagwatch): do not edit by hand.
# Devices authenticate and are authorised against the platform's own `devices` table. The
# database account needs only: CREATE ROLE {EMQX_ROLE} LOGIN PASSWORD '...';
#   {GRANT};
# {ENV_SERVER} (host:port) and {ENV_PASSWORD} come from EMQX's
# environment: substitutions outside quotes, which HOCON resolves from environment variables.
# The database's certificate is verified against {CA_PATH} (the CA that signed it).
authentication = [
  {{
    mechanism = password_based
    backend = postgresql
    server = ${{{ENV_SERVER}}}
    database = tagwatch
    username = {EMQX_ROLE}
    password = ${{{ENV_PASSWORD}}}
    ssl {{ enable = true, verify = verify_peer, cacertfile = {_hocon(CA_PATH)} }}
    password_hash_algorithm {{ name = sha256, salt_position = suffix }}
    query = {_hocon(AUTHN_QUERY)}
  }}
]
authorization {{
  no_match = deny
  deny_action = ignore
  cache {{ enable = true, ttl = 1m }}
  sources = [
    {{
      type = file
      enable = true
      path = {_hocon(SERVICES_ACL_PATH)}
    }},
    {{
      type = postgresql
      enable = true
      server = ${{{ENV_SERVER}}}
      database = tagwatch
      username = {EMQX_ROLE}
      password = ${{{ENV_PASSWORD}}}
      ssl {{ enable = true, verify = verify_peer, cacertfile = {_hocon(CA_PATH)} }}
      query = {_hocon(AUTHZ_QUERY)}
    }}
  ]
}}
"""


# The platform's own accounts on EMQX (they log in with client certificates on the services'
# listener, whose common name becomes the user name): the same rules as Mosquitto's dynamic
# security gives them (ingest.broker_accounts.service_account_commands; a test compares them).
# EMQX authorises SUBSCRIBE and PUBLISH; what it delivers to a subscriber is not checked again.
SERVICE_RULES: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    (
        "tagwatch-ingest",
        "subscribe",
        ("em/v1/#", "owntracks/#", "osmand/#", "$share/#", "tagwatch/barrier/#"),
    ),
    ("tagwatch-ingest", "publish", ("tagwatch/barrier/#",)),
    ("tagwatch-dispatcher", "publish", ("em/v1/alerts/#", "em/v1/+/cmd", "owntracks/+/+/cmd")),
    ("tagwatch-api", "publish", ("owntracks/#", "osmand/#")),
)


def render_services_acl() -> str:
    """`deploy/emqx/tagwatch-services.acl`: EMQX's file authorisation source for the services,
    tried before the database. Anything else a `tagwatch*` user name tries is denied here (no
    device may have such an id: ingest.broker_accounts.reserved_device_id); devices' requests
    match nothing in this file and go on to the database's rules."""
    lines = [
        "%% Generated from store/emqx_auth.py (tagwatch): do not edit by hand.",
        "%% The platform's services; devices fall through to the PostgreSQL source.",
    ]
    for user, action, topics in SERVICE_RULES:
        quoted = ", ".join(f'"{t}"' for t in topics)
        lines.append(f'{{allow, {{username, "{user}"}}, {action}, [{quoted}]}}.')
    lines.append('{deny, {username, {re, "^tagwatch"}}, all, ["#"]}.')
    return "\n".join(lines) + "\n"


def ensure_role(conn: psycopg.Connection, password: str | None) -> None:
    """Create EMQX's database account (LOGIN, nothing but `GRANT`) if missing, set its password
    when given, and grant it its four columns. Run as the database owner after migrations
    (the deployments' migrate step: deploy/compose.yaml, deploy/k8s)."""
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (EMQX_ROLE,)).fetchone()
    if not exists:
        conn.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
            ).format(sql.Identifier(EMQX_ROLE))
        )
    if password:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(EMQX_ROLE), sql.Literal(password)
            )
        )
    conn.execute(GRANT)


if __name__ == "__main__":  # python -m tagwatch.store.emqx_auth [services-acl]
    import sys

    print(render_services_acl() if sys.argv[1:] == ["services-acl"] else render_conf(), end="")
