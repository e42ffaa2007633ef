"""Webhook signatures: HMAC-SHA256 over the send time and the exact body, keyed with the
subscription's secret, so that a captured request cannot be replayed later.

Every webhook the dispatcher sends carries

* ``X-Tagwatch-Timestamp``: when this attempt was signed (Unix seconds, a decimal integer),
* ``X-Tagwatch-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>`` over the
  timestamp header's exact text, a ``.`` and the raw body bytes,
* ``X-Tagwatch-Notification-Id``: the outbox id, the same in every retry and on every channel
  (also in the body as ``notification_id``) - deduplicate on it: delivery is at-least-once.

The body never changes between retries; the timestamp and therefore the signature do. A
receiver checks both on the bytes it received, before parsing them::

    from tagwatch.alerts.signing import verify_signature

    if not verify_signature(
        secret,
        request_body,
        headers.get("X-Tagwatch-Signature"),
        headers.get("X-Tagwatch-Timestamp"),
    ):
        return 401
    note = json.loads(request_body)
    if seen(note["notification_id"]):  # keep ids at least as long as the window
        return 200  # a retry (or a replay inside the window) of something already handled

``verify_signature`` refuses a timestamp more than ``window_s`` (default 300 s) away from the
receiver's clock in either direction: an attacker who captured a request (a proxy log, a
mis-routed copy) cannot replay it after the window, nor sign a future one. Inside the window the
notification id deduplicates. Comparison is in constant time, so the answer's timing tells an
attacker nothing about how much of a forged signature was right.

Why the body-only signature (the first version) is no longer sent: it stays valid forever, so a
receiver that kept checking it would accept replays; sending it beside the new one would leave
exactly those receivers open. A receiver still checking the body alone now refuses every
delivery (401, retried, then failed and visible to the admin) instead of silently accepting
replays.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Final

SIGNATURE_HEADER: Final = "X-Tagwatch-Signature"
NOTIFICATION_ID_HEADER: Final = "X-Tagwatch-Notification-Id"
TIMESTAMP_HEADER: Final = "X-Tagwatch-Timestamp"
SCHEME: Final = "sha256="
DEFAULT_WINDOW_S: Final = 300.0
MAX_TIMESTAMP_DIGITS: Final = 12  # Unix seconds until the year 33658


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Tagwatch-Signature`` value for ``body`` sent at ``timestamp``:
    ``sha256=<hex HMAC-SHA256(secret, b"<timestamp>." + body)>``."""
    message = str(timestamp).encode() + b"." + body
    return SCHEME + hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str | bytes, body: bytes, now: float | None = None) -> dict[str, str]:
    """The timestamp and signature headers for one send of ``body``, signed now."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify_signature(
    secret: str | bytes,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    now: float | None = None,
) -> bool:
    """True when ``signature`` signs ``timestamp`` and ``body`` under ``secret`` and the
    timestamp is within ``window_s`` of ``now`` (default: this machine's clock).

    ``signature`` and ``timestamp`` are the raw ``X-Tagwatch-Signature`` and
    ``X-Tagwatch-Timestamp`` values. Missing headers, another scheme, a timestamp that is not a
    plain decimal integer, one older or newer than the window, or a malformed digest is False.
    """
    if not signature or not secret or not timestamp:
        return False
    stamp = timestamp.strip()
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > MAX_TIMESTAMP_DIGITS:
        return False
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > window_s:
        return False
    expected = sign(secret, stamp, body).encode()
    return hmac.compare_digest(expected, signature.strip().lower().encode())


__all__ = [
    "DEFAULT_WINDOW_S",
    "NOTIFICATION_ID_HEADER",
    "SCHEME",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "sign",
    "signed_headers",
    "verify_signature",
]
