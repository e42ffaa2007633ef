"""One settings object for every tagwatch process, read from `TAGWATCH_*` environment variables.

Secrets (database and broker passwords, the token signing key) come from the environment or the
env file that `tagwatch services up` writes; nothing secret has a usable default outside
development, so a production deployment that forgot one refuses to start instead of running open.

Every layer imports this module, so it imports none of them (tests/test_architecture.py ranks it
at the bottom): what `check-config` judges, it judges here, with the pure parsers of the values
(the webhook key, the webhook allow-list), which the layers that use the values import from here.
"""

from __future__ import annotations

import ipaddress
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.fernet import Fernet
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "development-only-secret-change-me"  # noqa: S105 - refused outside development
# Settings field -> variable that `Settings.for_services` takes from the env file when present.
WEBHOOK_ENV = (
    ("webhook_secret_key", "TAGWATCH_WEBHOOK_SECRET_KEY"),
    ("webhook_allow_hosts", "TAGWATCH_WEBHOOK_ALLOW_HOSTS"),
)
WEBHOOK_KEY_ENV: Final = "TAGWATCH_WEBHOOK_SECRET_KEY"
DEFAULT_MQTT_API_URL: Final = "mqtts://tagwatch-api@127.0.0.1:8884"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# A host name as an allow-list entry may spell it (lower case, no trailing dot).
HOST_NAME_RE: Final = re.compile(r"^[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?$")


def default_env_file() -> str | None:
    """The env file `services up` wrote for the demo, if the caller did not name another."""
    explicit = os.environ.get("TAGWATCH_ENV_FILE")
    if explicit:
        return explicit
    candidate = Path.cwd() / ".tagwatch" / "env"
    return str(candidate) if candidate.exists() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAGWATCH_", extra="ignore")

    # Production unless said otherwise: a deployment that forgot this runs with every check on.
    # `services up` and the demo write development into their env file.
    environment: Literal["development", "test", "production"] = "production"
    # The owner's URL: migrations and administration (`migrate`, `user add`, `audit verify`).
    database_url: str = "postgresql://tagwatch@127.0.0.1:5432/tagwatch"
    # Each long-running process connects with its own least-privilege role (store/roles.py);
    # unset falls back to database_url, which check-config reports outside development.
    api_database_url: str | None = None
    ingest_database_url: str | None = None
    dispatcher_database_url: str | None = None
    # The platform's own broker accounts log in on the service listener (loopback or an internal
    # address) with a client certificate: mqtts://NAME@host:port?ca=CA&cert=CERT&key=KEY.
    # The ingest service account: subscribes to every device topic.
    mqtt_url: str = "mqtts://tagwatch-ingest@127.0.0.1:8884"
    # Which broker keeps the devices' credentials and ACLs (ingest/device_accounts.py):
    # `mosquitto`, whose dynamic-security plugin the platform provisions over mqtt_admin_url (the
    # embedded default), or `emqx`, which authenticates and authorises devices with SQL against
    # the `devices` table (store/emqx_auth.py): the row is the account, mqtt_admin_url is unused.
    broker_kind: Literal["mosquitto", "emqx"] = "mosquitto"
    # The broker's dynamic-security admin: provisions per-device credentials and ACLs (Mosquitto).
    mqtt_admin_url: str = "mqtts://tagwatch-admin@127.0.0.1:8884"
    # The dispatcher: publishes alert notifications on em/v1/alerts/{region}.
    mqtt_dispatcher_url: str = "mqtts://tagwatch-dispatcher@127.0.0.1:8884"
    # A gateway account that may publish for many devices (load generator, simulators at scale);
    # development only: never provisioned in production.
    mqtt_gateway_url: str | None = None
    # The API: relays what phones post over HTTP (OwnTracks HTTP mode, Traccar Client's OsmAnd
    # protocol) onto their topics, so that ingest decodes and stores it (api/routes/intake.py).
    mqtt_api_url: str = DEFAULT_MQTT_API_URL
    # How long an HTTP post waits for the broker's PUBACK before answering 503.
    intake_publish_timeout_s: float = Field(default=10.0, gt=0)
    # The API's address as phones reach it (https://host[:port]), for the Traccar Client URL
    # shown when an OsmAnd phone is registered; unset: the address the request came to.
    device_http_url: str | None = None
    # Where devices connect: TLS with the private CA (mqtts://host:port?ca=CA); what `device add`
    # prints and the simulators dial, each device with its own user name and password.
    mqtt_device_url: str = "mqtts://127.0.0.1:8883"
    secret_key: str = DEV_SECRET
    token_minutes: int = Field(default=60, ge=1, le=24 * 60)
    # Login throttling (api/login_throttle.py, docs/api.md "Login throttling"): a user name gets
    # login_max_failures failed guesses per window from addresses it never logged in from (a
    # budget, never a lock); a client address gets login_address_max_failures per window, then
    # waits login_lockout_s, doubling with each repeat up to login_backoff_max_s.
    login_max_failures: int = Field(default=5, ge=1)
    login_failure_window_s: float = Field(default=900.0, gt=0)
    login_lockout_s: float = Field(default=900.0, gt=0)
    login_address_max_failures: int = Field(default=20, ge=1)
    login_backoff_max_s: float = Field(default=86400.0, gt=0)
    # Password verifications at once per API process (argon2: ~64 MiB and a core each).
    login_verify_threads: int = Field(default=2, ge=1, le=64)
    # Reverse proxies whose X-Forwarded-For is believed: comma-separated addresses or CIDR
    # ranges. Empty: the socket peer is the client (a header anyone can write is ignored).
    trusted_proxies: str = ""

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # /metrics without a token: unset means public in development and test, private (a user's
    # bearer token or metrics_token) in production.
    metrics_public: bool | None = None
    # A static bearer token for Prometheus (scrapers cannot log in); compared in constant time.
    metrics_token: str | None = None

    # Ingest: one database transaction per batch, bounded in size and time.
    ingest_client_id: str = "tagwatch-ingest"
    ingest_shared_group: str | None = None
    ingest_batch_messages: int = Field(default=2000, ge=1)
    ingest_batch_seconds: float = Field(default=0.05, gt=0)
    alerts_enabled: bool = True  # evaluate alerts inside ingest (off: store only, e.g. benches)
    ingest_queue_messages: int = Field(default=20000, ge=10)
    max_payload_bytes: int = 256 * 1024
    max_batch_fixes: int = 500
    future_tolerance_s: float = 300.0
    # The longest store-and-forward a tag holds: an older fix or event is a dead letter (too_late).
    max_fix_lateness_s: float = Field(default=7 * 86400.0, gt=0)
    # Payload bytes ingest holds from arrival until acknowledged; when full, the network thread
    # waits (backpressure to the broker, which keeps the messages).
    ingest_queue_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    # Dead letters stored per sender and minute; beyond, they are only counted (by sender and
    # reason, in dead_letter_tally and tagwatch_ingest_dead_letters_total).
    dead_letters_per_device_minute: int = Field(default=60, ge=1)
    # A sender refused more often than this in a minute is quarantined for the rest of it: its
    # messages are counted as dead letters without being decoded (ingest/flood_guard.py).
    ingest_quarantine_refused_per_minute: int = Field(default=1000, ge=1)
    # A signed snapshot of the alert engine's catalogue (zone index and what goes with it), so a
    # restarted worker evaluates in seconds instead of rebuilding it from the tables
    # (ingest/index_snapshot.py). Unset: no snapshot. Saved at most every index_snapshot_every_s
    # while zones change, and signed with a key derived from secret_key (refused when that is the
    # development default outside development).
    index_snapshot: Path | None = None
    index_snapshot_every_s: float = Field(default=600.0, gt=0)
    # Subjects whose decoded rule state each ingest worker keeps between batches, used while
    # their rule_state row is still the version it wrote (alerts/state_cache.py): about 8.5 KB
    # each with a full trail, so 20,000 is ~170 MB. Size it to the subjects one worker serves
    # (a full cache admits no newcomer; one smaller than that is of little use). 0: off.
    engine_state_cache: int = Field(default=20_000, ge=0)
    # The young-generation threshold of an ingest worker's garbage collector, set (and the
    # catalogue frozen out of the collector's sight) once the catalogue is loaded
    # (ingest/collector.py). 0: Python's default (700).
    ingest_gc_threshold: int = Field(default=50_000, ge=0)
    # The CPU an ingest worker's threads are kept on (ingest/affinity.py): an index into the
    # CPUs the process may use, modulo their number. Unset: the scheduler decides. One CPU saves
    # the cross-core hand-overs of the interpreter lock between the worker's threads; give each
    # worker of a host its own (worker k: k).
    ingest_cpu: int | None = Field(default=None, ge=0)

    # Liveness and readiness of the processes that serve no HTTP (ingest, the dispatcher;
    # tagwatch/probes.py): /healthz and /readyz on this port when set (each process of a host
    # its own), on probe_host (0.0.0.0 in a pod, for the kubelet). A loop that shows no progress
    # for probe_stall_s fails /healthz; a single batch or delivery must finish well within it.
    probe_port: int | None = Field(default=None, ge=0, le=65535)
    probe_host: str = "127.0.0.1"
    probe_stall_s: float = Field(default=120.0, gt=0)

    # Webhooks: the key that encrypts their signing secrets at rest (a Fernet key; several,
    # comma-separated, to rotate: store/webhook_secrets.py), and the hosts or CIDR networks they
    # may reach although private or loopback, or over http outside development
    # (alerts/webhook_destination.py).
    webhook_secret_key: str | None = Field(default=None, repr=False)
    webhook_allow_hosts: str = ""

    # The notification dispatcher (alerts/dispatcher.py, docs/alerts.md), read from
    # TAGWATCH_DISPATCH_<NAME>; `DispatcherConfig.from_settings` hands them to its core.
    dispatch_workers: int = Field(default=4, ge=1)  # claiming threads, a connection each
    dispatch_batch_size: int = Field(default=10, ge=1)  # rows one worker claims and sends
    dispatch_http_concurrency: int = Field(default=16, ge=1)  # webhook requests in flight
    dispatch_poll_interval_s: float = Field(default=1.0, gt=0)  # when no NOTIFY arrives
    # A failed delivery waits min(cap, base * 2^(n-1)) x [0.5, 1) before attempt n + 1.
    dispatch_backoff_base_s: float = Field(default=2.0, gt=0)
    dispatch_backoff_cap_s: float = Field(default=600.0, gt=0)
    dispatch_max_attempts: int = Field(default=30, ge=1)
    dispatch_http_timeout_s: float = Field(default=10.0, gt=0)
    dispatch_mqtt_timeout_s: float = Field(default=10.0, gt=0)  # waiting for PUBACKs
    # Unset: mqtt_dispatcher_url (its service account) and tagwatch-dispatch-<host>-<pid>.
    dispatch_mqtt_url: str | None = None
    dispatch_mqtt_client_id: str | None = None
    # A private CA to trust for webhook receivers, beside the public ones.
    dispatch_ca_file: str | None = None

    # Commands to devices (store/commands.py, docs/alerts.md "Commands to devices"): how long a
    # command waits for its device by default (the API may ask for 10 s to 1 day), and how
    # often the sender publishes again a tag's command that has no answer yet.
    command_ttl_s: int = Field(default=600, ge=10, le=86_400)
    command_resend_s: float = Field(default=60.0, gt=0)
    # Pursuit (NIJ 1004.00 active tracking): when an exclusion entry, victim proximity, strap
    # tamper or absconder alert opens, the subject's devices report every `interval_s` until it
    # clears or `limit_s` has passed, then go back to their normal (expected) interval.
    pursuit_enabled: bool = True
    pursuit_interval_s: int = Field(default=15, ge=1, le=3600)
    pursuit_limit_s: int = Field(default=1800, ge=60, le=86_400)

    # Routing of critical alerts (issue 16, store/places.py): when no office's service area holds
    # the subject's position, the nearest office's tracing units get it if it lies within this
    # many metres (on the ground); beyond, only the home region is told.
    routing_max_office_distance_m: float = Field(default=50_000.0, ge=0, le=1_000_000)
    # Human channels and escalation (issue 16, docs/alerts.md "Human channels", "Escalation"):
    # the console's address for the link in a message (``{base}/#/alert/{id}``; unset: no
    # link), and how long an alert of each severity may stay unacknowledged before the
    # dispatcher escalates it (seconds from when it was raised; empty or "none": never).
    console_base_url: str | None = None
    ack_deadline_critical_s: float | None = Field(default=300.0, gt=0)
    ack_deadline_warning_s: float | None = Field(default=1800.0, gt=0)
    ack_deadline_info_s: float | None = Field(default=None, gt=0)

    # The absconder reporting template (alerts/absconder_template.py): its months run from
    # midnight to midnight in this IANA time zone, the same for every region, so that the
    # national roll-up adds up regions over the same period.
    absconder_report_timezone: str = "UTC"

    # TimescaleDB policies (applied only when the extension is present).
    compress_after: str = "7 days"
    retain_fixes_for: str = "3650 days"

    @model_validator(mode="before")
    @classmethod
    def _empty_dispatch_is_unset(cls, data: object) -> object:
        """An empty TAGWATCH_DISPATCH_* variable means the default, as it always has (a service
        file that blanks one out should not stop the dispatcher)."""
        if isinstance(data, dict):
            return {
                k: v
                for k, v in data.items()
                if not (isinstance(k, str) and k.startswith("dispatch_") and v == "")
            }
        return data

    @field_validator(
        "ack_deadline_critical_s", "ack_deadline_warning_s", "ack_deadline_info_s", mode="before"
    )
    @classmethod
    def _no_deadline(cls, value: object) -> object:
        """An empty value or ``none`` turns a severity's escalation off."""
        if isinstance(value, str) and value.strip().lower() in {"", "none"}:
            return None
        return value

    def ack_deadlines(self) -> dict[str, float | None]:
        """Severity -> seconds an alert may stay unacknowledged (None: never escalated)."""
        return {
            "critical": self.ack_deadline_critical_s,
            "warning": self.ack_deadline_warning_s,
            "info": self.ack_deadline_info_s,
        }

    @field_validator("absconder_report_timezone")
    @classmethod
    def _known_time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (an IANA name, e.g. UTC)") from exc
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            ipaddress.ip_network(item, strict=False)  # ValueError names the bad entry
        return value

    @property
    def uses_dynsec(self) -> bool:
        """Devices are provisioned into Mosquitto's dynamic security (over mqtt_admin_url)."""
        return self.broker_kind == "mosquitto"

    def _broker_problems(self) -> list[str]:
        return _broker_url_problems(self)

    def _webhook_problems(self) -> list[str]:
        """Both checks are pure parsing, so they live here and not in the layers that use the
        values (store/webhook_secrets.py, alerts/webhook_destination.py import them): settings
        is the bottom layer and imports none of tagwatch (tests/test_architecture.py)."""
        found = [p for p in [webhook_key_problem(self.webhook_secret_key)] if p]
        try:
            parse_allow_hosts(self.webhook_allow_hosts)
        except ValueError as exc:
            found.append(f"TAGWATCH_WEBHOOK_ALLOW_HOSTS: {exc}")
        return found

    @classmethod
    def for_services(cls, env: dict[str, str], **overrides: object) -> Settings:
        """Settings pointing at the private services whose env file `services up` wrote."""
        return cls(
            database_url=env["TAGWATCH_DATABASE_URL"],
            api_database_url=env.get("TAGWATCH_API_DATABASE_URL"),
            ingest_database_url=env.get("TAGWATCH_INGEST_DATABASE_URL"),
            dispatcher_database_url=env.get("TAGWATCH_DISPATCHER_DATABASE_URL"),
            mqtt_url=env["TAGWATCH_MQTT_URL"],
            mqtt_admin_url=env["TAGWATCH_MQTT_ADMIN_URL"],
            mqtt_dispatcher_url=env["TAGWATCH_MQTT_DISPATCHER_URL"],
            mqtt_gateway_url=env.get("TAGWATCH_MQTT_GATEWAY_URL"),
            mqtt_api_url=env.get("TAGWATCH_MQTT_API_URL", DEFAULT_MQTT_API_URL),
            mqtt_device_url=env["TAGWATCH_MQTT_DEVICE_URL"],
            secret_key=env["TAGWATCH_SECRET_KEY"],
            **{
                **{f: env[n] for f, n in WEBHOOK_ENV if env.get(n)},
                **overrides,
            },  # type: ignore[arg-type]
        )

    def problems(self) -> list[str]:
        """What an operator should fix before trusting this configuration."""
        found: list[str] = []
        if self.secret_key == DEV_SECRET:
            found.append("TAGWATCH_SECRET_KEY is the development default")
        elif len(self.secret_key) < 32:
            found.append("TAGWATCH_SECRET_KEY is shorter than 32 characters")
        found += self._broker_problems()
        found += self._webhook_problems()
        if not self.database_url.startswith(("postgresql://", "postgres://")):
            found.append("TAGWATCH_DATABASE_URL must be a postgresql:// URL")
        for process in ("api", "ingest", "dispatcher"):
            url = getattr(self, f"{process}_database_url")
            label = f"TAGWATCH_{process.upper()}_DATABASE_URL"
            if url is None:
                if self.environment != "development":
                    found.append(
                        f"{label} is not set: the {process} would connect as the database owner"
                        " instead of its own least-privilege role"
                    )
            elif not url.startswith(("postgresql://", "postgres://")):
                found.append(f"{label} must be a postgresql:// URL")
        return found

    def database_url_for(self, process: Literal["api", "ingest", "dispatcher"]) -> str:
        """The URL a long-running process connects with: its own role's, else the owner's."""
        own: str | None = getattr(self, f"{process}_database_url")
        return own or self.database_url


SERVICE_BROKER_URLS = ("mqtt_url", "mqtt_admin_url", "mqtt_dispatcher_url", "mqtt_api_url")


def webhook_keys(value: str) -> list[str]:
    """The Fernet keys in ``TAGWATCH_WEBHOOK_SECRET_KEY``: comma-separated, the first encrypts
    (store/webhook_secrets.py), every one decrypts, so a key can be rotated."""
    return [k.strip() for k in value.split(",") if k.strip()]


def webhook_key_problem(value: str | None) -> str | None:
    """What is wrong with a configured webhook key (``check-config``, and the API and dispatcher
    before they touch a secret); None when usable. Missing is a problem: without the key webhook
    secrets cannot be encrypted at rest, so the platform fails closed."""
    if not value or not webhook_keys(value):
        return f"{WEBHOOK_KEY_ENV} is not set: webhook secrets cannot be encrypted at rest"
    for position, key in enumerate(webhook_keys(value), start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            return (
                f"{WEBHOOK_KEY_ENV}: key {position} is not a Fernet key (32 bytes, URL-safe"
                " base64; generate one with `python -c 'from cryptography.fernet import Fernet;"
                " print(Fernet.generate_key().decode())'`)"
            )
    return None


def normal_host(host: str) -> str:
    """A host as compared: no brackets around an IPv6 literal, no trailing dot, lower case."""
    return host.strip().strip("[]").rstrip(".").lower()


def parse_allow_hosts(text: str | None) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """``TAGWATCH_WEBHOOK_ALLOW_HOSTS`` (``"name, 10.0.0.0/8 127.0.0.1"``: comma- or
    space-separated) as its host names and networks; a malformed entry is a ValueError naming it.

    Only the syntax lives here, so ``check-config`` can judge the setting without importing the
    webhook layer; what an entry allows is ``alerts.webhook_destination.AllowList``."""
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for raw in re.split(r"[\s,]+", text or ""):
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        name = normal_host(entry)
        if "/" in entry or not HOST_NAME_RE.match(name):
            msg = f"not a host name, IP address or CIDR network: {entry!r}"
            raise ValueError(msg)
        names.add(name)
    return frozenset(names), tuple(networks)


def _broker_url_problems(settings: Settings) -> list[str]:
    """Service accounts log in with a client certificate over TLS; devices reach the broker over
    TLS unless this is a development machine."""
    found: list[str] = []
    # On EMQX nobody provisions devices over MQTT (the row is the account): the admin URL is
    # neither used nor judged, so a deployment need not set it.
    urls = [
        *(u for u in SERVICE_BROKER_URLS if u != "mqtt_admin_url" or settings.uses_dynsec),
        "mqtt_device_url",
    ]
    if settings.mqtt_gateway_url:
        urls.append("mqtt_gateway_url")
        if settings.environment == "production":
            found.append(
                "TAGWATCH_MQTT_GATEWAY_URL is set: the gateway account is development-only"
            )
    if not settings.ingest_client_id.startswith("tagwatch"):
        found.append(
            "TAGWATCH_INGEST_CLIENT_ID must start with 'tagwatch' (ids no device may take)"
        )
    for name in urls:
        label = f"TAGWATCH_{name.upper()}"
        try:
            broker = MqttEndpoint.parse(getattr(settings, name))
        except ValueError as exc:
            found.append(f"{label}: {exc}")
            continue
        if name == "mqtt_device_url":
            if not broker.tls and settings.environment != "development":
                found.append(
                    f"{label}: devices must connect over TLS (mqtts://) outside development"
                )
            if broker.tls and not broker.ca_file:
                found.append(f"{label}: name the CA devices pin (?ca=...)")
            continue
        if not (broker.tls and broker.cert_file and broker.key_file and broker.ca_file):
            found.append(
                f"{label}: service accounts log in with a client certificate over TLS "
                "(mqtts://NAME@host:port?ca=...&cert=...&key=...)"
            )
            continue
        for path in (broker.ca_file, broker.cert_file, broker.key_file):
            if not Path(path).is_file():
                found.append(f"{label}: {path} is not a readable file")
    return found


class MqttEndpoint:
    """A broker address with the account to use, parsed from a URL.

    `mqtt://user:password@host:port` is plain TCP (a development device listener only);
    `mqtts://user@host:port?ca=CA&cert=CERT&key=KEY` is TLS verified against the CA file, with a
    client certificate when `cert` and `key` are given (the platform's service accounts).
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        *,
        tls: bool = False,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.tls = tls
        self.ca_file = ca_file
        self.cert_file = cert_file
        self.key_file = key_file

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        parts = urlsplit(url)
        if parts.scheme not in {"mqtt", "tcp", "mqtts", "ssl"}:
            msg = f"expected mqtts://user@host:port?ca=... or mqtt://..., got {parts.scheme!r}"
            raise ValueError(msg)
        tls = parts.scheme in {"mqtts", "ssl"}
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"ca", "cert", "key"}
        if unknown:
            msg = f"unknown broker URL parameters: {', '.join(sorted(unknown))}"
            raise ValueError(msg)
        if not tls and query:
            msg = "ca, cert and key need an mqtts:// URL"
            raise ValueError(msg)
        if ("cert" in query) != ("key" in query):
            msg = "a client certificate needs both cert= and key="
            raise ValueError(msg)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=query.get("ca"),
            cert_file=query.get("cert"),
            key_file=query.get("key"),
        )

    def with_account(self, username: str | None, password: str | None) -> MqttEndpoint:
        """The same broker and TLS settings, logging in as someone else (a device)."""
        return MqttEndpoint(
            self.host,
            self.port,
            username,
            password,
            tls=self.tls,
            ca_file=self.ca_file,
            cert_file=None if username else self.cert_file,
            key_file=None if username else self.key_file,
        )


def load_env_file(path: str | None) -> None:
    """Export KEY=VALUE lines into the process environment without overriding what is set."""
    if not path or not Path(path).exists():
        return
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        os.environ.setdefault(key.strip(), value.strip().strip("'\""))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    load_env_file(default_env_file())
    return Settings()
