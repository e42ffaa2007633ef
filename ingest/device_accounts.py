"""The port between the platform and whichever broker checks devices' credentials and topics.

A device is a row of `devices` (store/devices.py) whose secret the platform keeps as a SHA-256
digest (`http_secret_sha256`, ingest/device_secrets.py), plus, depending on the broker, an
account there. Registering, rotating and revoking a device (the API's device routes,
`tagwatch device add|rotate|revoke`, ingest.provisioning) write the row in a transaction and call
this port inside it, so the row and the broker agree or nothing changes. Two adapters, chosen by
`TAGWATCH_BROKER_KIND` (tagwatch/settings.py, `device_accounts`):

* **`MosquittoDynsec`** (`mosquitto`, the embedded default): Mosquitto's dynamic-security plugin,
  provisioned over its control topic (ingest.broker_accounts.BrokerAdmin): a client pinned to the
  device id, with its own role whose ACL names exactly its topics. Rotation deletes and creates
  the account again with the new password (a session the old one holds is ended); revocation
  deletes it.
* **`EmqxDatabase`** (`emqx`): EMQX asks PostgreSQL on every CONNECT and first PUBLISH/SUBSCRIBE
  (store/emqx_auth.py), so the row is the account: nothing to call. The authentication query
  returns `http_secret_sha256` as hex for `password_hash_algorithm = sha256` with an empty salt,
  and only when the client id is the user name; rotation changes the digest, so the old password
  fails at the next CONNECT; revocation clears it, so the query returns no row (EMQX does not end
  a session already open: its authorisation cache keeps the rules for up to a minute, then every
  publish is refused because the authorisation query returns no rule either).

OsmAnd phones (HTTP only) have no broker account under either adapter; the callers skip the
port for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

from tagwatch.ingest.broker_accounts import BrokerAdmin, BrokerAdminError, reserved_device_id

if TYPE_CHECKING:
    from tagwatch.settings import Settings

BrokerKind = Literal["mosquitto", "emqx"]


class DeviceAccounts(Protocol):
    """A device's broker account. Every method raises BrokerAdminError when the broker refuses
    or cannot be reached, and the caller rolls the row back."""

    def create_device(self, device_id: str, password: str, owntracks_topic: str | None) -> None:
        """An account for a new device: user name and client id = device_id, this password,
        publish on its own topics only, subscribe only to its own command topic."""

    def rotate_device(self, device_id: str, password: str, owntracks_topic: str | None) -> None:
        """The password becomes this one (the old one stops working); a revoked device gets its
        account back."""

    def revoke_device(self, device_id: str) -> None:
        """The device may no longer log in; idempotent."""


class MosquittoDynsec(BrokerAdmin):
    """Mosquitto's dynamic security: BrokerAdmin's commands (today's behaviour, unchanged)."""

    kind: BrokerKind = "mosquitto"


class EmqxDatabase:
    """EMQX reads the `devices` row (store/emqx_auth.py): the row the caller writes in the same
    transaction is the whole account. The checks below refuse what the row could not express as
    the Mosquitto adapter would (a reserved id), so both brokers accept the same devices."""

    kind: BrokerKind = "emqx"

    def create_device(self, device_id: str, password: str, owntracks_topic: str | None) -> None:
        _check(device_id, password)

    def rotate_device(self, device_id: str, password: str, owntracks_topic: str | None) -> None:
        _check(device_id, password)

    def revoke_device(self, device_id: str) -> None:
        return None


def _check(device_id: str, password: str) -> None:
    reason = reserved_device_id(device_id)
    if reason:
        raise BrokerAdminError(reason)
    if not password:
        raise BrokerAdminError("a device needs a password")


def device_accounts(settings: Settings) -> MosquittoDynsec | EmqxDatabase:
    """The adapter for this site's broker (TAGWATCH_BROKER_KIND)."""
    if settings.broker_kind == "emqx":
        return EmqxDatabase()
    return MosquittoDynsec.from_url(settings.mqtt_admin_url)
