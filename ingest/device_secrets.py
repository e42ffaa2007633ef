"""The secret a device proves itself with over HTTP, and how the platform keeps it.

A device's secret is shown once, at registration. For a tag or an OwnTracks phone it is its MQTT
password (``broker_accounts.new_device_password``): the broker keeps its own hash of it, which
nothing else can query, so the platform keeps a second one, and an OwnTracks app in HTTP mode
logs in with the very user name and password it would use over MQTT. An OsmAnd phone (Traccar
Client) has no broker account; its secret is the token in its server URL (``new_osmand_token``).

Both are 144 random bits or more, so SHA-256 is the right hash at rest: there is no dictionary
to try and nothing to brute-force, and a phone reporting every minute costs microseconds instead
of argon2's tens of milliseconds and 64 MiB (which the API spends on people's passwords,
api/password_work.py). Comparison is in constant time, and a request for an unknown device is
compared against a dummy digest, so timing tells neither the secret nor whether the device
exists.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

DIGEST_BYTES = 32
# Compared when the device is unknown or has no secret, so the work done does not depend on it.
_DUMMY_DIGEST = hashlib.sha256(b"tagwatch: no such device").digest()


def secret_digest(secret: str) -> bytes:
    """What is stored for a secret (devices.http_secret_sha256)."""
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored: bytes | None) -> bool:
    """Constant time whatever ``stored`` is; None (no device, or no secret) never matches."""
    expected = stored if stored is not None and len(stored) == DIGEST_BYTES else _DUMMY_DIGEST
    same = hmac.compare_digest(secret_digest(secret), expected)
    return same and stored is not None


def new_osmand_token() -> str:
    """An OsmAnd phone's secret: 192 bits, URL-safe (it travels in the server URL)."""
    return secrets.token_urlsafe(24)
