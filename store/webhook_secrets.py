"""Webhook signing secrets, encrypted at rest with a key the database never sees.

A subscription's secret lets whoever holds it sign notifications a tracing unit will believe.
It is kept in ``webhook_subscriptions.secret_encrypted`` as a Fernet token (AES-128-CBC with an
HMAC-SHA256, from the ``cryptography`` package), under ``TAGWATCH_WEBHOOK_SECRET_KEY``, which
lives only in the environment of the API and the dispatcher: a database dump, a replica, a
backup or a database role that can read the table learns nothing usable.

``TAGWATCH_WEBHOOK_SECRET_KEY`` is one Fernet key (``generate_key()``: 32 random bytes,
URL-safe base64), or several separated by commas to rotate: the first encrypts, every one
decrypts, and the dispatcher re-encrypts each row under the first at start-up.

Rows written before migration 0011 (and rows a script inserts straight into the table) hold the
secret in the old ``secret`` column, in plaintext. A migration cannot encrypt them: it runs in
the database, without the key. So the dispatcher does it with the key it has (``seal_plaintext``)
at start-up, and again whenever it meets such a row before sending; it then sends only with the
secret it decrypted, and the plaintext column is NULL from that moment.
"""

from __future__ import annotations

from typing import Any

import psycopg
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# What a usable key is, is decided once, in the settings (`check-config` judges it there).
from tagwatch.settings import WEBHOOK_KEY_ENV as ENV_NAME
from tagwatch.settings import webhook_key_problem as key_problem
from tagwatch.settings import webhook_keys as _keys


class SecretKeyMissing(RuntimeError):
    """No key is configured: secrets can be neither stored nor read."""


class SecretUnreadable(RuntimeError):
    """A stored secret does not decrypt with any configured key (wrong or rotated-out key)."""


def generate_key() -> str:
    """A new key for ``TAGWATCH_WEBHOOK_SECRET_KEY``."""
    return Fernet.generate_key().decode("ascii")


class SecretBox:
    """Encrypts and decrypts webhook secrets with the configured key(s)."""

    def __init__(self, value: str | None) -> None:
        problem = key_problem(value)
        if problem is not None:
            raise SecretKeyMissing(problem)
        assert value is not None
        keys = [Fernet(k) for k in _keys(value)]
        self._primary = keys[0]
        self._fernet = MultiFernet(keys)

    @classmethod
    def optional(cls, value: str | None) -> SecretBox | None:
        """A box, or None when no usable key is configured (callers refuse to use secrets)."""
        return None if key_problem(value) else cls(value)

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as exc:
            msg = f"a webhook secret does not decrypt with {ENV_NAME} (wrong or retired key)"
            raise SecretUnreadable(msg) from exc

    def rotate(self, token: str) -> str | None:
        """The same secret under the first key, or None when it already is."""
        try:
            self._primary.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeError):
            pass
        else:
            return None
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError) as exc:
            msg = f"a webhook secret does not decrypt with {ENV_NAME} (wrong or retired key)"
            raise SecretUnreadable(msg) from exc


def seal_plaintext(
    conn: psycopg.Connection[Any], box: SecretBox, ids: list[int] | None = None
) -> int:
    """Encrypt plaintext secrets (all rows, or ``ids``) and clear the plaintext column.

    Runs in the caller's transaction; returns how many rows it sealed."""
    rows = conn.execute(
        "SELECT id, secret FROM webhook_subscriptions WHERE secret IS NOT NULL"
        " AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[])) ORDER BY id FOR UPDATE",
        {"ids": ids},
    ).fetchall()
    for wid, plaintext in rows:
        conn.execute(
            "UPDATE webhook_subscriptions SET secret_encrypted = %s, secret = NULL WHERE id = %s",
            (box.seal(plaintext), wid),
        )
    return len(rows)


def rotate_all(conn: psycopg.Connection[Any], box: SecretBox) -> int:
    """Re-encrypt under the first key the secrets sealed with an older one; returns how many.
    A row no key opens is left as it is (the dispatcher reports it when it needs it)."""
    rows = conn.execute(
        "SELECT id, secret_encrypted FROM webhook_subscriptions"
        " WHERE secret_encrypted IS NOT NULL ORDER BY id FOR UPDATE"
    ).fetchall()
    done = 0
    for wid, token in rows:
        try:
            rotated = box.rotate(token)
        except SecretUnreadable:
            continue
        if rotated is not None:
            conn.execute(
                "UPDATE webhook_subscriptions SET secret_encrypted = %s WHERE id = %s",
                (rotated, wid),
            )
            done += 1
    return done


__all__ = [
    "ENV_NAME",
    "SecretBox",
    "SecretKeyMissing",
    "SecretUnreadable",
    "generate_key",
    "key_problem",
    "rotate_all",
    "seal_plaintext",
]
