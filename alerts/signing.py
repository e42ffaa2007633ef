"""Webhook signatures: HMAC-SHA256 of the exact request body, keyed with the subscription's secret.

Every webhook the dispatcher sends carries

* ``X-Tagwatch-Signature: sha256=<hex HMAC-SHA256(secret, body)>`` over the raw body bytes,
* ``X-Tagwatch-Notification-Id``: the outbox id, the same in every retry and on every channel
  (also in the body as ``notification_id``) - deduplicate on it: delivery is at-least-once,
* ``X-Tagwatch-Timestamp``: when this attempt was sent (Unix seconds). It is *not* covered by
  the signature; the body is, and the body never changes between retries.

A receiver checks the signature on the bytes it received, before parsing them::

    from alerts.signing import verify_signature

    if not verify_signature(secret, request_body, headers.get("X-Tagwatch-Signature")):
        return 401
    note = json.loads(request_body)
    if seen(note["notification_id"]):
        return 200  # a retry of something already handled

``verify_signature`` compares in constant time, so the answer's timing tells an attacker nothing
about how much of a forged signature was right.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

SIGNATURE_HEADER: Final = "X-Tagwatch-Signature"
NOTIFICATION_ID_HEADER: Final = "X-Tagwatch-Notification-Id"
TIMESTAMP_HEADER: Final = "X-Tagwatch-Timestamp"
SCHEME: Final = "sha256="


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes, body: bytes) -> str:
    """The ``X-Tagwatch-Signature`` value for ``body``: ``sha256=<hex digest>``."""
    return SCHEME + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the signature of ``body`` under ``secret`` (constant time).

    ``header`` is the raw ``X-Tagwatch-Signature`` value; a missing header, another scheme or
    a malformed digest is simply False.
    """
    if not header or not secret:
        return False
    expected = sign(secret, body).encode()
    return hmac.compare_digest(expected, header.strip().lower().encode())


__all__ = [
    "NOTIFICATION_ID_HEADER",
    "SCHEME",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "sign",
    "verify_signature",
]
