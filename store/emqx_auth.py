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
  device's topics, not `osmand/#` (the API's relay), not the alert topics.

The platform's services (ingest, dispatcher, API relay, gateway) authenticate with client
certificates on a listener of their own and are authorised by EMQX's file source (their rules are
`ingest.broker_accounts.service_account_commands`'s); only devices are in the database.
"""

from __future__ import annotations

import re
from typing import Final

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
    " WHERE d.id = ${username} AND d.id = ${clientid} AND NOT d.osmand AND r.topic IS NOT NULL"
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


def render_conf() -> str:
    """`deploy/emqx/auth.conf`: EMQX's device authentication and authorisation against the
    platform's database. The server and credentials come from the environment of the EMQX
    container (EMQX_* variables override these keys); the account needs SELECT on `devices`."""
    return f"""# Generated from store/emqx_auth.py (tagwatch): do not edit by hand.
# Devices authenticate and are authorised against the platform's own `devices` table. The
# database account needs only: CREATE ROLE {EMQX_ROLE} LOGIN PASSWORD '...';
#   {GRANT};
authentication = [
  {{
    mechanism = password_based
    backend = postgresql
    server = "${{TAGWATCH_EMQX_PG_SERVER}}"
    database = tagwatch
    username = tagwatch_emqx
    password = "${{TAGWATCH_EMQX_PG_PASSWORD}}"
    ssl {{ enable = true }}
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
      path = "etc/tagwatch-services.acl"
    }},
    {{
      type = postgresql
      enable = true
      server = "${{TAGWATCH_EMQX_PG_SERVER}}"
      database = tagwatch
      username = tagwatch_emqx
      password = "${{TAGWATCH_EMQX_PG_PASSWORD}}"
      ssl {{ enable = true }}
      query = {_hocon(AUTHZ_QUERY)}
    }}
  ]
}}
"""


if __name__ == "__main__":  # python -m tagwatch.store.emqx_auth > deploy/emqx/auth.conf
    print(render_conf(), end="")
