"""A signed snapshot of the alert engine's catalogue, so that a restarted ingest evaluates at once.

Building the zone index of a national caseload from the tables (100,000 subjects, 351,000 zones)
reads every zone's GeoJSON and compiles every polygon: tens of seconds in which a restarted worker
evaluates nothing. Ingest therefore keeps the catalogue it built (`AlertEngine.catalogue`: the
index and what `sync` keeps beside it) in a file, and a worker that starts loads it in a few
seconds and then catches up with the ordinary `sync` from the snapshot's revision: zones and
subjects changed since are read like any change between two batches (migration 0025 makes the
revisions follow commit order, so nothing committed before the snapshot's revision is missed).

The file is a pickle, which runs code when loaded, so it is never trusted as it is:

* it is signed with a key derived from ``TAGWATCH_SECRET_KEY`` (keyed BLAKE2b over every byte
  before the tag) and the signature is checked before anything is unpickled; a file written or
  changed by anyone without the key is refused;
* its header names the code that wrote it (a digest of the geofence and alerts sources), the
  database (cluster system identifier and database OID) and the revision; a snapshot from other
  code, another database, or a revision this database has not reached (restored from a backup)
  is refused, and so is one built under other global thresholds (zone thresholds are layered
  over them when a zone is loaded);
* a refused or unreadable snapshot is logged with its reason and the catalogue is built from the
  tables, as without a snapshot: a snapshot can make a start faster, never different.

Saving pickles the whole catalogue (seconds at national size), which must not stop ingest: the
writer thread forks between two batches and the child writes the file from its copy-on-write view
of a catalogue nobody is changing, then exits; the parent reaps it later. The file is written
beside its final name and renamed, so a reader sees the old snapshot or the new one, never half.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import hmac
import json
import logging
import os
import pickle
import secrets
import struct
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import tagwatch
from tagwatch.alerts.engine import AlertEngine
from tagwatch.alerts.thresholds import Thresholds

log = logging.getLogger("tagwatch.ingest")

MAGIC = b"TAGWATCH-CATALOGUE-SNAPSHOT\n"
FORMAT = 1
TAG_BYTES = 64
_HEADER_LEN = struct.Struct(">I")
_SOURCES = ("geofence", "alerts")  # the packages whose classes a snapshot pickles


def snapshot_key(secret_key: str) -> bytes:
    """The signing key: derived from the platform's secret, so it is never the secret itself."""
    return hmac.new(secret_key.encode(), b"tagwatch catalogue snapshot v1", "sha512").digest()[:64]


@functools.cache
def code_digest() -> str:
    """A digest of the sources whose objects a snapshot holds: a snapshot written by other code
    (another release, a patched module) is refused rather than unpickled into new classes."""
    digest = hashlib.blake2b(f"format {FORMAT}".encode(), digest_size=16)
    root = Path(tagwatch.__file__).resolve().parent
    for package in _SOURCES:
        base = (root / package).resolve()
        for source in sorted(base.rglob("*.py")):
            digest.update(str(source.relative_to(base)).encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Identity:
    """The database a catalogue is read from (store/engine_repository.catalogue_identity)."""

    system: str  # cluster system identifier
    database: int  # database OID
    high_water: int  # highest zone or subject revision committed


def _thresholds_digest(thresholds: Thresholds) -> str:
    return hashlib.blake2b(repr(thresholds).encode(), digest_size=16).hexdigest()


class _Signing:
    """A file writer that signs every byte it writes."""

    def __init__(self, out: IO[bytes], key: bytes) -> None:
        self.out = out
        self.mac = hashlib.blake2b(key=key, digest_size=TAG_BYTES)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.mac.update(data)
        return self.out.write(data)


def write_snapshot(engine: AlertEngine, path: Path, key: bytes, identity: Identity) -> int:
    """Write the engine's catalogue to ``path`` (atomically, mode 0600); returns its size."""
    header = {
        "format": FORMAT,
        "code": code_digest(),
        "system": identity.system,
        "database": identity.database,
        "revision": engine.revision,
        "thresholds": _thresholds_digest(engine.global_thresholds),
        "zones": len(engine.index),
        "subjects": engine.index.subject_count,
        "saved_at": datetime.now(UTC).isoformat(),
    }
    encoded = json.dumps(header, sort_keys=True).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    # workers that share one snapshot file (a volume) may write at once: each its own partial
    partial = path.with_name(f".{path.name}.{secrets.token_hex(8)}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            signing = _Signing(raw, key)
            signing.write(MAGIC)
            signing.write(_HEADER_LEN.pack(len(encoded)))
            signing.write(encoded)
            pickle.dump(engine.catalogue(), signing, protocol=pickle.HIGHEST_PROTOCOL)
            raw.write(signing.mac.digest())
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path.stat().st_size


@dataclass(frozen=True, slots=True)
class Loaded:
    engine: AlertEngine | None
    reason: str  # why it was refused, or what was loaded
    header: dict[str, Any]


def read_snapshot(path: Path, key: bytes, identity: Identity, thresholds: Thresholds) -> Loaded:
    """The engine saved in ``path`` if it is signed with ``key``, was written by this code from
    this database at a revision it has reached, under these global thresholds; otherwise no
    engine and the reason. Nothing is unpickled before the signature is checked."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Loaded(None, "no snapshot yet", {})
    except OSError as exc:
        return Loaded(None, f"unreadable ({exc.strerror or exc})", {})
    lead = len(MAGIC) + _HEADER_LEN.size
    if len(data) < lead + TAG_BYTES or not data.startswith(MAGIC):
        return Loaded(None, "not a catalogue snapshot", {})
    body, tag = memoryview(data)[:-TAG_BYTES], data[-TAG_BYTES:]
    mac = hashlib.blake2b(body, key=key, digest_size=TAG_BYTES).digest()
    if not hmac.compare_digest(mac, tag):
        return Loaded(None, "signature does not match (another key, or the file was changed)", {})
    (size,) = _HEADER_LEN.unpack_from(data, len(MAGIC))
    try:
        header = json.loads(bytes(body[lead : lead + size]))
    except ValueError:
        return Loaded(None, "header unreadable", {})
    if header.get("format") != FORMAT or header.get("code") != code_digest():
        return Loaded(None, "written by other code", header)
    if header.get("system") != identity.system or header.get("database") != identity.database:
        return Loaded(None, "written from another database", header)
    revision = header.get("revision")
    if not isinstance(revision, int) or revision > identity.high_water:
        return Loaded(
            None,
            f"at revision {revision}, ahead of the database ({identity.high_water}):"
            " restored from a backup?",
            header,
        )
    if header.get("thresholds") != _thresholds_digest(thresholds):
        return Loaded(None, "built under other global thresholds", header)
    enabled = gc.isenabled()
    gc.disable()  # millions of objects: the cyclic collector would walk them again and again
    try:
        # only after the signature: this code's own bytes (S301 is about untrusted data)
        catalogue = pickle.loads(body[lead + size :])  # noqa: S301
        engine = AlertEngine.from_catalogue(catalogue)
    except Exception as exc:  # signed by us, but unreadable: build from the tables
        return Loaded(None, f"unreadable ({type(exc).__name__}: {exc})", header)
    finally:
        if enabled:
            gc.enable()
    if engine.revision != revision:
        return Loaded(None, "header and catalogue disagree", header)
    return Loaded(
        engine,
        f"{header.get('zones', '?')} zones at revision {revision}, saved {header.get('saved_at')}",
        header,
    )


class SnapshotKeeper:
    """Loads the snapshot at start and saves a new one in a forked child when the catalogue has
    changed and ``every_s`` has passed since the last save (and at once after a build from the
    tables, which is what a snapshot spares the next start)."""

    def __init__(self, path: Path, key: bytes, every_s: float) -> None:
        self.path = path
        self.key = key
        self.every_s = every_s
        self.identity: Identity | None = None
        self._child: int | None = None
        self._child_revision = -1
        self._saved_revision = -1
        self._last_save = 0.0
        self.saves = 0  # children that wrote a snapshot
        self.failures = 0

    def load(self, identity: Identity, thresholds: Thresholds) -> Loaded:
        self.identity = identity
        loaded = read_snapshot(self.path, self.key, identity, thresholds)
        if loaded.engine is not None:
            self._saved_revision = loaded.engine.revision
            self._last_save = time.monotonic()
        return loaded

    def maybe_save(self, engine: AlertEngine, *, now: bool = False) -> bool:
        """Fork a child that writes the snapshot, if one is due; True when one was started."""
        self.reap()
        if self._child is not None or self.identity is None:
            return False
        if engine.revision == self._saved_revision:
            return False
        if not now and time.monotonic() - self._last_save < self.every_s:
            return False
        self._last_save = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: write, and leave without running anything of the parent's
            code = 1
            try:
                write_snapshot(engine, self.path, self.key, self.identity)
                code = 0
            finally:
                os._exit(code)
        self._child = pid
        self._child_revision = engine.revision
        return True

    def reap(self, wait_s: float = 0.0) -> None:
        """Collect a finished child (waiting up to ``wait_s`` for it) and log how it ended."""
        if self._child is None:
            return
        deadline = time.monotonic() + wait_s
        while True:
            pid, status = os.waitpid(self._child, os.WNOHANG)
            if pid or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if not pid:
            return
        self._child = None
        if os.waitstatus_to_exitcode(status) == 0:
            self.saves += 1
            self._saved_revision = self._child_revision
            log.info("catalogue snapshot saved at revision %d: %s", self._child_revision, self.path)
        else:
            self.failures += 1
            log.warning("catalogue snapshot not saved (child status %s)", status)
