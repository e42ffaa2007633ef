"""Per-device broker credentials and ACLs, managed through Mosquitto's dynamic-security plugin.

Provisioning over the plugin's control topic (rather than rewriting a password file and sending
SIGHUP) works the same against a private broker, a container or a remote cluster, and takes effect
at once. Each device gets its own client and its own role whose ACL names exactly its topics, so a
stolen tag can publish as itself and nobody else.
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Self

import paho.mqtt.client as mqtt

from tagwatch.mqtt_client import new_client
from tagwatch.settings import MqttEndpoint

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"
INGEST_ROLE = "tagwatch-ingest"
DISPATCHER_ROLE = "tagwatch-dispatcher"
GATEWAY_ROLE = "tagwatch-gateway"
API_ROLE = "tagwatch-api"
# Where the API relays what phones post over HTTP (api/routes/intake.py): an OwnTracks phone's
# own topic, and the internal OsmAnd family no device account may publish on (ingest/osmand.py).
OSMAND_TOPICS = "osmand/#"
# Device ids a device may never have: the platform's own client ids all start with "tagwatch",
# `alerts` would own em/v1/alerts/# (the notification topics), and `$` starts broker-internal
# topics. Compared case-insensitively, so `TagWatch-ingest` is refused too.
RESERVED_PREFIXES = ("tagwatch", "$")
RESERVED_IDS = frozenset({"alerts"})

Command = dict[str, Any]


class BrokerAdminError(RuntimeError):
    """The broker refused a provisioning command or could not be reached."""


def reserved_device_id(device_id: str) -> str | None:
    """Why a device may not have this id, or None when it may."""
    folded = device_id.casefold()
    if folded in RESERVED_IDS:
        return f"device id {device_id!r} is reserved for the platform's alert topics"
    for prefix in RESERVED_PREFIXES:
        if folded.startswith(prefix):
            return f"device ids starting with {prefix!r} are reserved for the platform's services"
    return None


def device_role(device_id: str) -> str:
    return f"device:{device_id}"


def device_topics(device_id: str, owntracks_topic: str | None) -> list[str]:
    """Every topic filter the device may publish on: its own tag topics, or its OwnTracks topic."""
    if owntracks_topic:
        return [owntracks_topic, f"{owntracks_topic}/#"]
    return [f"em/v1/{device_id}/#"]


def command_topic(device_id: str, owntracks_topic: str | None) -> str:
    """Where the platform sends the device its commands: `em/v1/{id}/cmd` for a tag, the
    OwnTracks apps' own `<topic>/cmd` for a phone (booklet docs/tech/json.md, Topics)."""
    return f"{owntracks_topic}/cmd" if owntracks_topic else f"em/v1/{device_id}/cmd"


def new_device_password() -> str:
    return secrets.token_urlsafe(18)


def create_device_commands(
    device_id: str, password: str, owntracks_topic: str | None
) -> list[Command]:
    reason = reserved_device_id(device_id)
    if reason:
        raise BrokerAdminError(reason)
    role = device_role(device_id)
    commands: list[Command] = [{"command": "createRole", "rolename": role}]
    commands += [
        {
            "command": "addRoleACL",
            "rolename": role,
            "acltype": "publishClientSend",
            "topic": topic,
            "allow": True,
            "priority": 5,
        }
        for topic in device_topics(device_id, owntracks_topic)
    ]
    # Commands: the device may subscribe to its own command topic, literally (a wildcard such as
    # em/v1/+/cmd is another subscription string and is refused), and may not publish on it, so
    # whatever arrives there came from the platform. Checked before the publish grant above.
    cmd = command_topic(device_id, owntracks_topic)
    commands.append(_acl(role, "subscribeLiteral", cmd))
    commands.append(_acl(role, "unsubscribeLiteral", cmd))
    commands.append({**_acl(role, "publishClientSend", cmd), "allow": False, "priority": 10})
    # Every device, phones too, connects with client id = user name = device_id (the contract;
    # the OwnTracks apps let the client id be set). Without the pin, a wearer holding a phone's
    # credentials could connect with a service's client id and take over its session.
    commands.append(
        {
            "command": "createClient",
            "username": device_id,
            "password": password,
            "clientid": device_id,
            "roles": [{"rolename": role, "priority": 5}],
        }
    )
    return commands


def delete_device_commands(device_id: str) -> list[Command]:
    return [
        {"command": "deleteClient", "username": device_id},
        {"command": "deleteRole", "rolename": device_role(device_id)},
    ]


def rotate_device_commands(
    device_id: str, password: str, owntracks_topic: str | None
) -> list[Command]:
    """Delete and create again in one control message (run tolerating "not found", for a
    device whose account was revoked): the same account and ACL as ``create_device_commands``."""
    return [
        *delete_device_commands(device_id),
        *create_device_commands(device_id, password, owntracks_topic),
    ]


def _acl(role: str, acltype: str, topic: str) -> Command:
    return {
        "command": "addRoleACL",
        "rolename": role,
        "acltype": acltype,
        "topic": topic,
        "allow": True,
        "priority": 5,
    }


def service_account_commands(
    ingest: str, dispatcher: str, gateway: str | None = None, api: str | None = None
) -> list[Command]:
    """The platform's own accounts: ingest reads every device topic, the dispatcher publishes
    alert notifications, the API relays phones' HTTP posts onto their topics, and (development
    only) a gateway writes for many devices.

    They log in on the service listener with client certificates whose common name is the user
    name; their passwords are random and kept nowhere, so they cannot log in on the devices'
    listener, which only takes passwords.
    """
    commands: list[Command] = [
        {"command": "createRole", "rolename": INGEST_ROLE},
        {"command": "createRole", "rolename": DISPATCHER_ROLE},
    ]
    for topic in ("em/v1/#", "owntracks/#", OSMAND_TOPICS, "$share/#"):
        commands.append(_acl(INGEST_ROLE, "subscribePattern", topic))
        commands.append(_acl(INGEST_ROLE, "unsubscribePattern", topic))
    for topic in ("em/v1/#", "owntracks/#", OSMAND_TOPICS):
        commands.append(_acl(INGEST_ROLE, "publishClientReceive", topic))
    # ingest's drain marker, which it sends itself after every connect (ingest/service.py)
    for acltype in ("subscribePattern", "unsubscribePattern", "publishClientSend"):
        commands.append(_acl(INGEST_ROLE, acltype, "tagwatch/barrier/#"))
    commands.append(_acl(INGEST_ROLE, "publishClientReceive", "tagwatch/barrier/#"))
    commands.append(_acl(DISPATCHER_ROLE, "publishClientSend", "em/v1/alerts/#"))
    # the command sender in the dispatcher: tags' and phones' command topics
    commands.append(_acl(DISPATCHER_ROLE, "publishClientSend", "em/v1/+/cmd"))
    commands.append(_acl(DISPATCHER_ROLE, "publishClientSend", "owntracks/+/+/cmd"))
    accounts = [(ingest, INGEST_ROLE), (dispatcher, DISPATCHER_ROLE)]
    if api:
        commands.append({"command": "createRole", "rolename": API_ROLE})
        for topic in ("owntracks/#", OSMAND_TOPICS):
            commands.append(_acl(API_ROLE, "publishClientSend", topic))
        accounts.append((api, API_ROLE))
    if gateway:
        commands.append({"command": "createRole", "rolename": GATEWAY_ROLE})
        for topic in ("em/v1/#", "owntracks/#"):
            commands.append(_acl(GATEWAY_ROLE, "publishClientSend", topic))
        accounts.append((gateway, GATEWAY_ROLE))
    for username, role in accounts:
        password = secrets.token_urlsafe(32)
        commands.append(
            {
                "command": "createClient",
                "username": username,
                "password": password,
                "roles": [{"rolename": role, "priority": 5}],
            }
        )
        # An existing account keeps its roles; its unknown password is replaced by another.
        commands.append(
            {"command": "setClientPassword", "username": username, "password": password}
        )
    return commands


class BrokerAdmin:
    """Runs dynamic-security commands and waits for the broker's answer to each."""

    def __init__(self, endpoint: MqttEndpoint, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    @classmethod
    def from_url(cls, url: str, timeout: float = 10.0) -> Self:
        return cls(MqttEndpoint.parse(url), timeout)

    def run(
        self, commands: Sequence[Command], tolerate: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        """Send the commands in one control message; raise on any error not tolerated."""
        tolerated = tuple(t.lower() for t in tolerate)
        correlation = uuid.uuid4().hex
        responses: list[dict[str, Any]] = []
        done = threading.Event()
        connected = threading.Event()
        failure: list[str] = []

        client = new_client(self.endpoint, f"tagwatch-admin-{correlation[:12]}")

        def on_connect(c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
            if rc.is_failure:
                failure.append(f"broker refused the admin account: {rc}")
                done.set()
                return
            c.subscribe(RESPONSE_TOPIC, qos=1)

        def on_subscribe(c: mqtt.Client, _u: object, _m: object, _rc: object, _p: object) -> None:
            connected.set()
            payload = [
                {**cmd, "correlationData": f"{correlation}:{i}"} for i, cmd in enumerate(commands)
            ]
            c.publish(CONTROL_TOPIC, json.dumps({"commands": payload}), qos=1)

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            try:
                body = json.loads(msg.payload)
            except ValueError:
                return
            mine = [
                r
                for r in body.get("responses", [])
                if str(r.get("correlationData", "")).startswith(correlation)
            ]
            responses.extend(mine)
            if len(responses) >= len(commands):
                done.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        try:
            client.connect(self.endpoint.host, self.endpoint.port, keepalive=30)
        except OSError as exc:
            msg = f"broker unreachable at {self.endpoint.host}:{self.endpoint.port}: {exc}"
            raise BrokerAdminError(msg) from exc
        client.loop_start()
        try:
            if not done.wait(self.timeout):
                msg = "the broker did not answer the provisioning request in time"
                raise BrokerAdminError(msg)
        finally:
            client.disconnect()
            client.loop_stop()
        if failure:
            raise BrokerAdminError(failure[0])
        errors = [
            f"{r.get('command')}: {r['error']}"
            for r in responses
            if r.get("error") and not any(t in str(r["error"]).lower() for t in tolerated)
        ]
        if errors:
            raise BrokerAdminError("; ".join(errors))
        return responses

    def create_device(self, device_id: str, password: str, owntracks_topic: str | None) -> None:
        self.run(create_device_commands(device_id, password, owntracks_topic))

    def delete_device(self, device_id: str) -> None:
        self.run(delete_device_commands(device_id), tolerate=("not found",))

    def rotate_device(self, device_id: str, password: str, owntracks_topic: str | None) -> None:
        """The device's account made anew with this password: the old one no longer logs in,
        a session it holds is ended (Mosquitto kicks a deleted client), and a revoked device
        (no account) gets one again."""
        self.run(
            rotate_device_commands(device_id, password, owntracks_topic), tolerate=("not found",)
        )

    def revoke_device(self, device_id: str) -> None:
        """No account any more: the device cannot log in, and its session is ended."""
        self.delete_device(device_id)
