"""Phones' OwnTracks payload-encryption keys: made at registration, shown once, kept sealed.

The OwnTracks apps can encrypt every message with a passphrase (`encryptionKey`, libsodium
secretbox; ingest/owntracks.py decrypts). Each phone gets its own, so that one phone's key reads
no other phone's messages. The platform must read them, so it keeps the key, sealed like webhook
secrets (store/webhook_secrets.py: Fernet under `TAGWATCH_WEBHOOK_SECRET_KEY`, which the API and
ingest hold and the database never sees). Without that setting a phone is registered without a
key (and says so): its app then sends in clear, over TLS.
"""

from __future__ import annotations

import logging
import secrets
from typing import Final

from tagwatch.ingest.owntracks import passphrase_key
from tagwatch.store.webhook_secrets import SecretBox, SecretUnreadable

log = logging.getLogger("tagwatch.ingest")

PHONE_KINDS: Final = frozenset({"phone", "victim_phone"})
# 24 random bytes as 32 URL-safe characters: the apps take up to 32 characters (booklet,
# features/encrypt.md), so the whole 32-byte secretbox key is used and the key types cleanly.
KEY_RANDOM_BYTES: Final = 24


def new_payload_key(kind: str, secret_key: str | None) -> tuple[str | None, str | None]:
    """(passphrase to show once, sealed form to store) for a new device; (None, None) for a
    tag, or when no key to seal it with is configured."""
    box = SecretBox.optional(secret_key)
    if kind not in PHONE_KINDS or box is None:
        return None, None
    passphrase = secrets.token_urlsafe(KEY_RANDOM_BYTES)
    return passphrase, box.seal(passphrase)


def open_payload_key(device_id: str, sealed: str | None, box: SecretBox | None) -> bytes | None:
    """The secretbox key of a stored sealed passphrase; None when there is none or it cannot be
    opened (no or a retired `TAGWATCH_WEBHOOK_SECRET_KEY`: logged; the phone's encrypted
    messages are then dead letters `no_decryption_key`, never misread)."""
    if sealed is None:
        return None
    if box is None:
        log.error("device %s has an encryption key but no key to open it is configured", device_id)
        return None
    try:
        return passphrase_key(box.open(sealed))
    except SecretUnreadable:
        log.error(
            "the encryption key of device %s does not open with the configured key", device_id
        )
        return None
