"""Private PostgreSQL and Mosquitto instances in one directory, for the demo and the test suite.

Both run as ordinary processes on free loopback ports with everything they write kept in the
directory, so a developer's machine, CI and every test session get their own isolated pair without
touching system services. The broker runs with authentication on from the start: per-device
accounts and ACLs through Mosquitto's dynamic-security plugin, so what the tests exercise is what
production runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from urllib.parse import quote

from tagwatch.ingest.broker_accounts import BrokerAdmin, service_account_commands
from tagwatch.pki import Pki, default_server_names
from tagwatch.store.migrate import ensure_database
from tagwatch.store.roles import PROCESS_ROLES, ensure_roles
from tagwatch.store.webhook_secrets import generate_key

PG_SUPERUSER = "tagwatch"
DATABASE = "tagwatch"
ADMIN_USER = "tagwatch-admin"
INGEST_USER = "tagwatch-ingest"
DISPATCHER_USER = "tagwatch-dispatcher"
GATEWAY_USER = "tagwatch-gateway"
API_USER = "tagwatch-api"
SERVICE_USERS = (ADMIN_USER, INGEST_USER, DISPATCHER_USER, GATEWAY_USER, API_USER)
# The contract's largest payload (256 KiB): the broker refuses anything bigger before it is queued.
MESSAGE_SIZE_LIMIT = 256 * 1024
# What the broker may hold for one client (ingest's persistent session while ingest is down):
# about seven million fixes; past it new messages for that client are dropped, so this is sized
# for a long ingest outage at a national rate rather than left unbounded.
MAX_QUEUED_BYTES = 1024 * 1024 * 1024
MAX_INFLIGHT_BYTES = 64 * 1024 * 1024
DYNSEC_PLUGIN_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)


class ServiceError(RuntimeError):
    """A private service could not be started or stopped; the message says what to do."""


@dataclass
class ServiceState:
    """What `services up` decided, kept in DIR/services.json so a later `up` reuses it."""

    pg_port: int
    # the devices' TLS listener (8883-style)
    mqtt_port: int
    pg_password: str
    secret_key: str
    pg_data: str
    pki_dir: str = ""
    # the services' listener: client certificates only, loopback
    mqtt_service_port: int = 0
    # a plain-TCP device listener on loopback, development only (0: off)
    mqtt_plain_port: int = 0
    # passwords of the per-process database roles (store/roles.py)
    role_passwords: dict[str, str] = field(default_factory=dict)
    # encrypts webhook secrets at rest (store/webhook_secrets.py)
    webhook_secret_key: str = ""
    timescaledb: bool = False

    def _service_url(self, user: str) -> str:
        pki = Pki(Path(self.pki_dir))
        identity = pki.identity(user)
        query = f"ca={quote(str(pki.ca_cert))}&cert={quote(str(identity.cert))}"
        query += f"&key={quote(str(identity.key))}"
        return f"mqtts://{user}@127.0.0.1:{self.mqtt_service_port}?{query}"

    def env(self) -> dict[str, str]:
        ca = quote(str(Pki(Path(self.pki_dir)).ca_cert))
        env = {
            # `services up` is a development tool: real secrets, development rules.
            "TAGWATCH_ENVIRONMENT": "development",
            "TAGWATCH_DATABASE_URL": (
                f"postgresql://{PG_SUPERUSER}:{self.pg_password}@127.0.0.1:{self.pg_port}/{DATABASE}"
            ),
            **{
                f"TAGWATCH_{process.upper()}_DATABASE_URL": (
                    f"postgresql://{role}:{self.role_passwords[role]}"
                    f"@127.0.0.1:{self.pg_port}/{DATABASE}"
                )
                for process, role in PROCESS_ROLES.items()
                if role in self.role_passwords
            },
            "TAGWATCH_MQTT_URL": self._service_url(INGEST_USER),
            "TAGWATCH_MQTT_ADMIN_URL": self._service_url(ADMIN_USER),
            "TAGWATCH_MQTT_DISPATCHER_URL": self._service_url(DISPATCHER_USER),
            "TAGWATCH_MQTT_GATEWAY_URL": self._service_url(GATEWAY_USER),
            "TAGWATCH_MQTT_API_URL": self._service_url(API_USER),
            "TAGWATCH_MQTT_DEVICE_URL": f"mqtts://127.0.0.1:{self.mqtt_port}?ca={ca}",
            "TAGWATCH_SECRET_KEY": self.secret_key,
            "TAGWATCH_WEBHOOK_SECRET_KEY": self.webhook_secret_key,
        }
        if self.mqtt_plain_port:
            env["TAGWATCH_MQTT_PLAIN_DEVICE_URL"] = f"mqtt://127.0.0.1:{self.mqtt_plain_port}"
        return env


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range: a port the kernel hands out
    (bind to 0) can be taken by any outgoing connection before our server binds it, which a
    busy machine (a load test, a benchmark) does often enough to fail a start."""
    low, high = 20_000, 32_000
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        high = min(high, first - 1)
    except (OSError, ValueError, IndexError):
        pass
    rng = secrets.SystemRandom()
    for _ in range(200):
        port = rng.randrange(low, high)
        if port_is_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pg_bindir() -> Path:
    """The newest PostgreSQL server installed the Debian way, or whatever is on PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    msg = "PostgreSQL server not found: install the 'postgresql' package (the setup script does)"
    raise ServiceError(msg)


TIMESCALEDB_SWITCH = "TAGWATCH_TIMESCALEDB"


def timescaledb_wanted(bindir: Path) -> bool:
    """Whether the private server preloads TimescaleDB: `TAGWATCH_TIMESCALEDB` is `auto` (the
    default: when the server's libdir has it), `off` (plain PostgreSQL even when it is installed,
    as CI runs) or `on` (required: an error when it is not installed). Read at each start."""
    switch = os.environ.get(TIMESCALEDB_SWITCH, "auto").strip().lower() or "auto"
    if switch in {"off", "0", "false", "no"}:
        return False
    if switch in {"on", "1", "true", "yes"}:
        if not timescaledb_available(bindir):
            msg = (
                f"{TIMESCALEDB_SWITCH}={switch} but the timescaledb extension is not installed in"
                f" {bindir.parent / 'lib'} (see docs/scaling.md, TimescaleDB)"
            )
            raise ServiceError(msg)
        return True
    if switch != "auto":
        msg = f"{TIMESCALEDB_SWITCH} must be auto, on or off, not {switch!r}"
        raise ServiceError(msg)
    return timescaledb_available(bindir)


def timescaledb_available(bindir: Path) -> bool:
    pg_config = bindir / "pg_config"
    if not pg_config.exists():
        return False
    libdir = subprocess.run(
        [str(pg_config), "--pkglibdir"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return bool(libdir) and any(Path(libdir).glob("timescaledb*.so"))


def dynsec_plugin() -> str:
    for candidate in DYNSEC_PLUGIN_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    msg = "Mosquitto's dynamic-security plugin not found: install the 'mosquitto' package (2.x)"
    raise ServiceError(msg)


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root, so root runs them as the 'postgres' user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if _running_as_root() else cmd


def _traversable_by_others(path: Path) -> bool:
    for parent in [path, *path.parents]:
        if parent.exists() and not (parent.stat().st_mode & 0o001):
            return False
    return True


def _pg_data_dir(base: Path) -> Path:
    """DIR/pg when the postgres user can reach it; else a private folder under /var/tmp.

    As root, the server runs as 'postgres', which cannot enter a 0700 home or temp directory.
    """
    wanted = base / "pg"
    if not _running_as_root() or _traversable_by_others(base):
        return wanted
    digest = hashlib.sha256(str(base).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"tagwatch-pg-{digest}"  # noqa: S108 - 0700 inside, see above


def _chown_postgres(path: Path) -> None:
    if _running_as_root():
        entry = pwd.getpwnam("postgres")
        for root, dirs, files in os.walk(path):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for name in dirs + files:
                os.chown(Path(root) / name, entry.pw_uid, entry.pw_gid)


def _read_state(base: Path) -> ServiceState | None:
    state_file = base / "services.json"
    if not state_file.exists():
        return None
    known = {f.name for f in fields(ServiceState)}
    saved = json.loads(state_file.read_text())
    return ServiceState(**{k: v for k, v in saved.items() if k in known})


def _write_state(base: Path, state: ServiceState) -> None:
    state_file = base / "services.json"
    state_file.write_text(json.dumps(asdict(state), indent=2))
    state_file.chmod(0o600)
    env_file = base / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in state.env().items()))
    env_file.chmod(0o600)


def _pid_alive(pid_file: Path) -> int | None:
    if not pid_file.exists():
        return None
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, PermissionError, IndexError):
        return None
    return pid


# ---------------------------------------------------------------- PostgreSQL


def _pg_running(state: ServiceState) -> bool:
    return _pid_alive(Path(state.pg_data) / "postmaster.pid") is not None


def _pg_init(state: ServiceState, bindir: Path) -> None:
    data = Path(state.pg_data)
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    pwfile = data.parent / f".pw-{secrets.token_hex(4)}"
    pwfile.write_text(state.pg_password + "\n")
    _chown_postgres(data)
    _chown_postgres(pwfile)
    try:
        result = subprocess.run(
            _as_postgres(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    PG_SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                ]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        msg = f"initdb failed: {result.stderr.strip() or result.stdout.strip()}"
        raise ServiceError(msg)


def _pg_configure(state: ServiceState) -> None:
    data = Path(state.pg_data)
    preload = "shared_preload_libraries = 'timescaledb'\n" if state.timescaledb else ""
    conf = (
        f"port = {state.pg_port}\n"
        "listen_addresses = '127.0.0.1'\n"
        f"unix_socket_directories = '{data}'\n"
        "max_connections = 200\n"
        "shared_buffers = 256MB\n"
        "wal_compression = on\n"
        "max_wal_size = 2GB\n"
        "timezone = 'UTC'\n"
        "log_min_messages = warning\n"
        f"{preload}"
    )
    (data / "postgresql.tagwatch.conf").write_text(conf)
    main_conf = data / "postgresql.conf"
    text = main_conf.read_text()
    include = "include = 'postgresql.tagwatch.conf'\n"
    if include not in text:
        main_conf.write_text(text + "\n" + include)
    _chown_postgres(data)


def _pg_start(state: ServiceState, bindir: Path) -> None:
    data = Path(state.pg_data)
    log = data / "server.log"
    result = subprocess.run(
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "start"]),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else ""
        msg = f"PostgreSQL did not start: {result.stderr.strip()}\n{tail}"
        raise ServiceError(msg)


def _pg_create_database(state: ServiceState) -> None:
    import psycopg  # noqa: PLC0415 - only the services command needs it at this point

    url = state.env()["TAGWATCH_DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(url, autocommit=True) as conn:
        ensure_database(conn, DATABASE)
        # one login role per process; `migrate` grants their privileges
        for role in PROCESS_ROLES.values():
            state.role_passwords.setdefault(role, secrets.token_urlsafe(18))
        ensure_roles(conn, state.role_passwords)


def _pg_stop(state: ServiceState, bindir: Path) -> None:
    data = Path(state.pg_data)
    if not _pg_running(state):
        return
    subprocess.run(
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
        capture_output=True,
        check=False,
    )


# ---------------------------------------------------------------- Mosquitto


def _mqtt_dir(base: Path) -> Path:
    return base / "mosquitto"


def _mqtt_write_config(base: Path, state: ServiceState) -> Path:
    mdir = _mqtt_dir(base)
    (mdir / "data").mkdir(parents=True, exist_ok=True)
    user_line = "user root\n" if _running_as_root() else ""
    pki = Pki(Path(state.pki_dir))
    server = pki.identity("server")
    tls = (
        f"cafile {pki.ca_cert}\ncertfile {server.cert}\nkeyfile {server.key}\ntls_version tlsv1.2\n"
    )
    plain = (
        "# development only: plain TCP for devices, loopback\n"
        f"listener {state.mqtt_plain_port} 127.0.0.1\n"
        if state.mqtt_plain_port
        else ""
    )
    conf = (
        f"# Written by `tagwatch services up`; see deploy/mosquitto/ for the production layout.\n"
        "per_listener_settings false\n"
        "# devices: TLS, user name + password, client id pinned to the user name (dynsec)\n"
        f"listener {state.mqtt_port} 127.0.0.1\n"
        f"{tls}"
        "# the platform's services: a client certificate is the login, its CN the user name\n"
        f"listener {state.mqtt_service_port} 127.0.0.1\n"
        f"{tls}"
        "require_certificate true\n"
        "use_identity_as_username true\n"
        f"{plain}"
        "allow_anonymous false\n"
        f"plugin {dynsec_plugin()}\n"
        f"plugin_opt_config_file {mdir / 'dynsec.json'}\n"
        "persistence true\n"
        f"persistence_location {mdir / 'data'}/\n"
        "autosave_interval 30\n"
        # A persistent ingest session must keep every fix published while ingest is down.
        "max_queued_messages 10000000\n"
        f"max_queued_bytes {MAX_QUEUED_BYTES}\n"
        # Unacknowledged messages in flight to one client: ingest acknowledges a whole batch
        # after its commit, so this must exceed the batch size (TAGWATCH_INGEST_BATCH_MESSAGES).
        "max_inflight_messages 10000\n"
        # ... but not 10,000 messages of 256 KiB: in flight to one client at most 64 MiB
        # (ingest's own byte budget, TAGWATCH_INGEST_QUEUE_BYTES), so a flood of large payloads
        # cannot make the broker hold gigabytes for ingest.
        f"max_inflight_bytes {MAX_INFLIGHT_BYTES}\n"
        f"message_size_limit {MESSAGE_SIZE_LIMIT}\n"
        "max_keepalive 120\n"
        f"pid_file {mdir / 'mosquitto.pid'}\n"
        f"log_dest file {mdir / 'mosquitto.log'}\n"
        "log_type error\nlog_type warning\nlog_type notice\n"
        "connection_messages false\n"
        f"{user_line}"
    )
    conf_file = mdir / "mosquitto.conf"
    conf_file.write_text(conf)
    return conf_file


def _mqtt_init_dynsec(base: Path, state: ServiceState) -> None:
    dynsec = _mqtt_dir(base) / "dynsec.json"
    if dynsec.exists():
        return
    # The admin logs in with its client certificate; its password is thrown away.
    result = subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(dynsec), ADMIN_USER, secrets.token_urlsafe(32)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        msg = f"mosquitto_ctrl dynsec init failed: {result.stderr.strip()}"
        raise ServiceError(msg)
    dynsec.chmod(0o600)


def _mqtt_running(base: Path) -> int | None:
    return _pid_alive(_mqtt_dir(base) / "mosquitto.pid")


def _mqtt_start(base: Path, state: ServiceState) -> None:
    conf = _mqtt_write_config(base, state)
    _mqtt_init_dynsec(base, state)
    if shutil.which("mosquitto") is None:
        msg = "mosquitto not found: install the 'mosquitto' package (the setup script does)"
        raise ServiceError(msg)
    result = subprocess.run(
        ["mosquitto", "-c", str(conf), "-d"], capture_output=True, text=True, check=False
    )
    ports = [state.mqtt_port, state.mqtt_service_port] + (
        [state.mqtt_plain_port] if state.mqtt_plain_port else []
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not any(port_is_free(p) for p in ports) and _mqtt_running(base):
            return
        time.sleep(0.05)
    log = _mqtt_dir(base) / "mosquitto.log"
    tail = log.read_text()[-2000:] if log.exists() else ""
    msg = f"Mosquitto did not start: {result.stderr.strip()}\n{tail}"
    raise ServiceError(msg)


def _mqtt_provision_service_accounts(state: ServiceState) -> None:
    admin = BrokerAdmin.from_url(state.env()["TAGWATCH_MQTT_ADMIN_URL"])
    admin.run(
        service_account_commands(
            ingest=INGEST_USER, dispatcher=DISPATCHER_USER, gateway=GATEWAY_USER, api=API_USER
        ),
        tolerate=("already exists",),
    )


def _mqtt_stop(base: Path) -> None:
    pid = _mqtt_running(base)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _mqtt_running(base):
        time.sleep(0.05)
    if _mqtt_running(base):
        os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- public


def up(base: Path, plain_devices: bool = False) -> ServiceState:
    """Start (or reuse) the private pair in `base`; idempotent.

    `plain_devices` also opens a plain-TCP device listener on loopback (development only)."""
    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o711 if _running_as_root() else 0o700)
    bindir = pg_bindir()
    state = _read_state(base)
    if state is None:
        state = ServiceState(
            pg_port=free_port(),
            mqtt_port=free_port(),
            pg_password=secrets.token_urlsafe(18),
            secret_key=secrets.token_urlsafe(48),
            pg_data=str(_pg_data_dir(base) / "data"),
        )
    state.webhook_secret_key = state.webhook_secret_key or generate_key()
    state.pki_dir = str(base / "pki")
    Pki(Path(state.pki_dir)).ensure(default_server_names(), list(SERVICE_USERS))
    mqtt_running = _mqtt_running(base) is not None
    if mqtt_running and not state.mqtt_service_port:
        _mqtt_stop(base)  # started by a tagwatch before the TLS listeners: restart it with them
        mqtt_running = False
    if not mqtt_running:
        state.mqtt_service_port = state.mqtt_service_port or free_port()
        state.mqtt_plain_port = (state.mqtt_plain_port or free_port()) if plain_devices else 0
    if not _pg_running(state):
        if not port_is_free(state.pg_port):
            state.pg_port = free_port()
        if not (Path(state.pg_data) / "PG_VERSION").exists():
            _pg_init(state, bindir)
        # decided at each start (a running server keeps what it was started with)
        state.timescaledb = timescaledb_wanted(bindir)
        _pg_configure(state)
        _pg_start(state, bindir)
    if not mqtt_running:
        for name in ("mqtt_port", "mqtt_service_port", "mqtt_plain_port"):
            port = getattr(state, name)
            if port and not port_is_free(port):
                setattr(state, name, free_port())
        try:
            _mqtt_start(base, state)
        except ServiceError as exc:
            if "Address already in use" not in str(exc):
                raise
            # taken between the check and the bind: once more, on fresh ports
            state.mqtt_port, state.mqtt_service_port = free_port(), free_port()
            state.mqtt_plain_port = free_port() if state.mqtt_plain_port else 0
            _mqtt_start(base, state)
    _pg_create_database(state)
    _write_state(base, state)
    _mqtt_provision_service_accounts(state)
    return state


def down(base: Path) -> None:
    base = base.resolve()
    state = _read_state(base)
    if state is None:
        return
    with contextlib.suppress(ServiceError):
        _pg_stop(state, pg_bindir())
    _mqtt_stop(base)


def status(base: Path) -> dict[str, object]:
    base = base.resolve()
    state = _read_state(base)
    if state is None:
        return {"initialised": False}
    return {
        "initialised": True,
        "postgresql": {
            "running": _pg_running(state),
            "port": state.pg_port,
            "data": state.pg_data,
            "timescaledb": state.timescaledb,
        },
        "mosquitto": {
            "running": _mqtt_running(base) is not None,
            "devices_tls_port": state.mqtt_port,
            "services_port": state.mqtt_service_port,
            "devices_plain_port": state.mqtt_plain_port or None,
            "ca": str(Pki(Path(state.pki_dir)).ca_cert) if state.pki_dir else None,
        },
        "env_file": str(base / "env"),
    }


def up_broker(base: Path) -> ServiceState:
    """Mosquitto alone (its PKI, listeners and service accounts), for a harness that brings its
    own database (`tagwatch chaos db-failover` runs a Patroni cluster). The state's PostgreSQL
    fields are empty: the caller sets the ``TAGWATCH_*DATABASE_URL`` variables itself."""
    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o711 if _running_as_root() else 0o700)
    state = ServiceState(
        pg_port=0,
        mqtt_port=free_port(),
        pg_password="",
        secret_key=secrets.token_urlsafe(48),
        pg_data="",
        pki_dir=str(base / "pki"),
        mqtt_service_port=free_port(),
        webhook_secret_key=generate_key(),
    )
    Pki(Path(state.pki_dir)).ensure(default_server_names(), list(SERVICE_USERS))
    _mqtt_start(base, state)
    _mqtt_provision_service_accounts(state)
    return state


def down_broker(base: Path) -> None:
    _mqtt_stop(base.resolve())
