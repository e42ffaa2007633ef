"""A three-node Patroni PostgreSQL cluster and its etcd on loopback, in one directory.

Debian's ``patroni`` and ``etcd-server`` packages (``TAGWATCH_SETUP_CHAOS=1 scripts/setup.sh``)
and the PostgreSQL server the rest of the suite uses. Everything runs as ordinary processes on
free loopback ports with its files in the directory, like ``tagwatch.services``; as root, Patroni
(and so PostgreSQL) runs as the ``postgres`` user, which initdb and postgres insist on.

Replication is synchronous (``synchronous_mode: true``): a commit returns only once one standby
has the WAL, and Patroni promotes only that synchronous standby, so a commit that returned is never
lost in a failover. ``synchronous_mode_strict: true`` as well: with no standby left the primary
stops accepting commits instead of going on alone. For this platform that is the right trade:
ingest acknowledges MQTT only after a commit, so while commits block the broker holds the fixes
(a delay), whereas a commit on a lone primary that then dies would be a fix acknowledged and lost.

Timings (``ttl`` 10 s, ``loop_wait`` 1 s, ``retry_timeout`` 4 s) are shorter than Patroni's
defaults (30/10/10) so that a failover takes seconds in a test, not half a minute; they keep
``loop_wait + 2 x retry_timeout <= ttl`` as Patroni requires.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tagwatch.services import ServiceError, free_port, pg_bindir

SCOPE = "tagwatch-chaos"
SUPERUSER = "tagwatch"
REPLICATOR = "replicator"
NODE_NAMES = ("pg1", "pg2", "pg3")
DCS = {
    "ttl": 10,
    "loop_wait": 1,
    "retry_timeout": 4,
    "maximum_lag_on_failover": 16 * 1024 * 1024,
    "synchronous_mode": True,
    "synchronous_mode_strict": True,
    "postgresql": {
        "use_pg_rewind": True,
        "use_slots": True,
        "parameters": {
            "max_connections": 200,
            "shared_buffers": "128MB",
            "wal_level": "replica",
            "hot_standby": "on",
            "wal_log_hints": "on",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "wal_keep_size": "256MB",
            "timezone": "UTC",
            "log_min_messages": "warning",
        },
    },
}


def missing_tools() -> list[str]:
    """What this machine lacks for a cluster: empty when it can run one."""
    missing = [name for name in ("patroni", "etcd") if shutil.which(name) is None]
    try:
        pg_bindir()
    except ServiceError:
        missing.append("postgresql")
    return missing


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _postgres_ids() -> tuple[int, int]:
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def _give_to_postgres(path: Path) -> None:
    if _running_as_root():
        uid, gid = _postgres_ids()
        os.chown(path, uid, gid)


def _get_json(url: str, timeout: float = 1.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - loopback http
        return json.loads(answer.read())


@dataclass
class Node:
    name: str
    pg_port: int
    api_port: int
    data: Path
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def postmaster_pid(self) -> int | None:
        """The running postmaster of this data directory (a stale pid file is ignored: its
        pid may belong to another process by now)."""
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        return pid if str(self.data).encode() in cmdline else None

    def role(self) -> str | None:
        """'primary', 'replica' or None (Patroni's REST API; None when it does not answer)."""
        try:
            state = _get_json(f"http://127.0.0.1:{self.api_port}/patroni")
        except (OSError, ValueError, urllib.error.URLError):
            return None
        role = state.get("role")
        return "primary" if role == "master" else str(role) if role else None


@dataclass
class Cluster:
    """etcd and three Patroni nodes. ``start`` waits for a primary and two streaming
    replicas, one of them synchronous; ``crash`` kills a node as a power cut would."""

    base: Path
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    replication_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    nodes: list[Node] = field(default_factory=list)
    etcd_client_port: int = 0
    etcd_peer_port: int = 0
    etcd: subprocess.Popen[bytes] | None = None

    @classmethod
    def in_new_directory(cls) -> Cluster:
        """A fresh directory the ``postgres`` user can enter (as root, under /var/tmp: the
        server runs as ``postgres``, which cannot enter a 0700 temp or home directory)."""
        root = "/var/tmp" if _running_as_root() else None  # noqa: S108 - 0700 inside, see above
        base = Path(tempfile.mkdtemp(prefix="tagwatch-chaos-", dir=root))
        base.chmod(0o711 if _running_as_root() else 0o700)
        return cls(base)

    # ------------------------------------------------------------ addresses

    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{n.pg_port}" for n in self.nodes)

    def url(self, user: str, password: str, database: str) -> str:
        """The multi-host URL the platform's processes use: libpq tries the hosts in turn and
        keeps the one that accepts writes."""
        return (
            f"postgresql://{user}:{password}@{self.hosts()}/{database}"
            "?target_session_attrs=read-write&connect_timeout=3"
        )

    def superuser_url(self, database: str = "postgres") -> str:
        return self.url(SUPERUSER, self.password, database)

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 90.0) -> None:
        missing = missing_tools()
        if missing:
            msg = (
                f"missing {', '.join(missing)}: run TAGWATCH_SETUP_CHAOS=1 scripts/setup.sh"
                " (or apt-get install --no-install-recommends patroni etcd-server)"
            )
            raise ServiceError(msg)
        self._start_etcd()
        bindir = pg_bindir()
        for name in NODE_NAMES:
            node_dir = self.base / name
            node_dir.mkdir(mode=0o700)
            _give_to_postgres(node_dir)
            node = Node(
                name,
                free_port(),
                free_port(),
                node_dir / "data",
                node_dir / "patroni.yml",
                node_dir / "patroni.log",
            )
            node.config.write_text(yaml.safe_dump(self._node_config(node, node_dir, bindir)))
            _give_to_postgres(node.config)
            self.nodes.append(node)
        # the first node bootstraps the cluster alone; the others then clone it
        self._start_node(self.nodes[0])
        self.wait_for(lambda: self.primary() is not None, timeout, "a primary")
        for node in self.nodes[1:]:
            self._start_node(node)
        self.wait_for(lambda: self._streaming() >= 2, timeout, "two streaming replicas")
        self.wait_for(lambda: self.sync_standby() is not None, timeout, "a synchronous standby")

    def _start_etcd(self) -> None:
        self.etcd_client_port, self.etcd_peer_port = free_port(), free_port()
        client = f"http://127.0.0.1:{self.etcd_client_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        log = (self.base / "etcd.log").open("ab")
        self.etcd = subprocess.Popen(
            [
                "etcd",
                "--name=etcd0",
                f"--data-dir={self.base / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=etcd0={peer}",
                f"--initial-cluster-token={SCOPE}-{secrets.token_hex(4)}",
                "--initial-cluster-state=new",
                "--log-level=warn",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

        def healthy() -> bool:
            try:
                return str(_get_json(f"{client}/health").get("health")) == "true"
            except (OSError, ValueError, urllib.error.URLError):
                return False

        self.wait_for(healthy, 20, "etcd")

    def _node_config(self, node: Node, node_dir: Path, bindir: Path) -> dict[str, Any]:
        scram = "scram-sha-256"
        return {
            "scope": SCOPE,
            "name": node.name,
            "log": {"level": "WARNING", "dir": str(node_dir)},
            "restapi": {
                "listen": f"127.0.0.1:{node.api_port}",
                "connect_address": f"127.0.0.1:{node.api_port}",
            },
            "etcd3": {"hosts": [f"127.0.0.1:{self.etcd_client_port}"]},
            "bootstrap": {
                "dcs": DCS,
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, {"auth": scram}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.pg_port}",
                "connect_address": f"127.0.0.1:{node.pg_port}",
                "data_dir": str(node.data),
                "bin_dir": str(bindir),
                "pgpass": str(node_dir / "pgpass"),
                "authentication": {
                    "superuser": {"username": SUPERUSER, "password": self.password},
                    "replication": {
                        "username": REPLICATOR,
                        "password": self.replication_password,
                    },
                    "rewind": {"username": SUPERUSER, "password": self.password},
                },
                "parameters": {"unix_socket_directories": str(node_dir)},
                "pg_hba": [
                    f"host replication {REPLICATOR} 127.0.0.1/32 {scram}",
                    f"host all all 127.0.0.1/32 {scram}",
                    f"local all all {scram}",
                ],
            },
            "tags": {"nofailover": False, "noloadbalance": False},
        }

    def _start_node(self, node: Node) -> None:
        log = node.log.open("ab")
        extra: dict[str, Any] = {}
        if _running_as_root():
            uid, gid = _postgres_ids()
            extra = {"user": uid, "group": gid, "extra_groups": []}
            _give_to_postgres(node.log)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "TAGWATCH_"))}
        node.process = subprocess.Popen(
            ["patroni", str(node.config)],
            stdout=log,
            stderr=log,
            cwd=node.config.parent,
            env=env,
            start_new_session=True,
            **extra,
        )

    def wait_for(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                tails = "\n".join(
                    f"--- {n.name}\n{n.log.read_text(errors='replace')[-1500:]}"
                    for n in self.nodes
                    if n.log.exists()
                )
                msg = f"no {what} in the cluster after {timeout:g} s\n{tails}"
                raise ServiceError(msg)
            time.sleep(0.2)

    # ------------------------------------------------------------ state

    def members(self) -> list[dict[str, Any]]:
        """Patroni's view of the cluster, asked of any node that answers."""
        for node in self.nodes:
            with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
                return list(_get_json(f"http://127.0.0.1:{node.api_port}/cluster")["members"])
        return []

    def primary(self) -> Node | None:
        for member in self.members():
            if member.get("role") == "leader" and member.get("state") == "running":
                return self.node(member["name"])
        return None

    def sync_standby(self) -> Node | None:
        for member in self.members():
            if member.get("role") == "sync_standby" and member.get("state") in (
                "running",
                "streaming",
            ):
                return self.node(member["name"])
        return None

    def _streaming(self) -> int:
        return sum(
            m.get("role") in ("replica", "sync_standby")
            and m.get("state") in ("running", "streaming")
            for m in self.members()
        )

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    # ------------------------------------------------------------ faults

    def crash(self, node: Node) -> None:
        """SIGKILL the node's Patroni, then its postmaster and every server process: a power
        cut, as far as one machine can stage it (clients see their connections reset)."""
        postmaster = node.postmaster_pid()
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait(5)
        if postmaster is not None:
            # Patroni starts the postmaster in a session of its own: its group is the server
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(postmaster, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(postmaster, signal.SIGKILL)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(30)
            except subprocess.TimeoutExpired:
                self.crash(node)
            postmaster = node.postmaster_pid()
            if postmaster is not None:  # an orphaned server (its Patroni was killed)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(postmaster, signal.SIGKILL)
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.terminate()
            try:
                self.etcd.wait(10)
            except subprocess.TimeoutExpired:
                self.etcd.kill()
                self.etcd.wait(5)

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
