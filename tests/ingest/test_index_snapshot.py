"""The catalogue snapshot (ingest/index_snapshot.py): a restored engine that catches up is the
engine built from the tables, and a snapshot that is not ours, not this database's, not this
code's, or changed by anyone is never unpickled.

The first tests are in memory (MemoryEngineRepository); the last runs the real ingest process
three times against the real broker and database."""

from __future__ import annotations

import os
import pickle
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from tagwatch.alerts.engine import AlertEngine
from tagwatch.alerts.memory_repository import MemoryEngineRepository
from tagwatch.alerts.ports import SubjectRow, ZoneRow
from tagwatch.alerts.thresholds import DEFAULTS, layered
from tagwatch.geofence import FixBatch
from tagwatch.ingest import index_snapshot as snap
from tagwatch.ingest.index_snapshot import Identity, read_snapshot, snapshot_key, write_snapshot
from tests.alerts.test_engine_end_to_end import CENTRE, fix_msg, gateway
from tests.support import count, fresh_id, publish_all, wait_for

KEY = snapshot_key("a-test-secret-of-more-than-thirty-two-characters")
HERE = Identity("7716069743858088894", 16384, 10_000)
CURFEW = {"weekly": [{"start": "19:00", "end": "07:00"}]}


def _square(lon: float, lat: float, d: float = 0.004) -> dict[str, Any]:
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def _zone(zone_id: int, revision: int, subject: int | None, **changes: Any) -> ZoneRow:
    row = ZoneRow(
        zone_id=zone_id,
        kind="exclusion",
        geometry=_square(18.40 + 0.01 * zone_id, -33.92),
        radius_m=None,
        buffer_m=100.0,
        subject_id=subject,
        group=None,
        victim_subject_id=None,
        schedule=None,
        thresholds=None,
        name=f"zone {zone_id}",
        deleted=False,
        revision=revision,
    )
    return replace(row, **changes)


def _catalogue() -> MemoryEngineRepository:
    """Three subjects with own exclusion, curfew and inclusion zones and a region-wide zone."""
    subjects = [SubjectRow(s, "Africa/Johannesburg", (), "wc", None, s) for s in (1, 2, 3)]
    zones = [
        _zone(10 + s, 10 + s, s) for s in (1, 2, 3)
    ] + [
        _zone(20, 20, 1, kind="curfew", buffer_m=None, schedule=CURFEW,
              geometry={"type": "Point", "coordinates": [18.41, -33.91]}, radius_m=40.0),
        _zone(21, 21, 2, kind="inclusion", buffer_m=None, geometry=_square(18.3, -34.0, 0.3)),
        _zone(22, 22, None, group="region:wc", geometry=_square(18.45, -33.95)),
    ]  # fmt: skip
    return MemoryEngineRepository(subjects=subjects, zones=zones)


def _fixes(n: int = 4000, seed: int = 3) -> FixBatch:
    rng = np.random.default_rng(seed)
    return FixBatch(
        subject_id=rng.integers(1, 4, n),
        lon=rng.uniform(18.30, 18.60, n),
        lat=rng.uniform(-34.00, -33.88, n),
        acc=rng.uniform(3, 60, n),
        time=1.78e9 + rng.uniform(0, 86400, n),
    )


def _pairs(engine: AlertEngine, fixes: FixBatch) -> list[tuple[Any, ...]]:
    got = engine.index.classify(fixes)
    names = ("fix_index", "zone_id", "kind", "state", "in_band", "distance_m", "active")
    columns = [np.asarray(getattr(got, n), dtype=np.float64).round(6).tolist() for n in names]
    return sorted(zip(*columns, strict=True))


def _synced(repo: MemoryEngineRepository) -> AlertEngine:
    engine = AlertEngine()
    engine.sync(repo)
    return engine


def test_a_restored_engine_that_catches_up_is_the_engine_built_from_the_tables(
    tmp_path: Path,
) -> None:
    repo = _catalogue()
    saved = _synced(repo)
    path = tmp_path / "catalogue.snap"
    write_snapshot(saved, path, KEY, HERE)
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    # after the save: a zone drawn, one deleted, one redrawn, a subject moved to a group
    repo.zones += [
        _zone(30, 30, 3),
        replace(repo.zones[0], deleted=True, revision=31),
        replace(repo.zones[1], geometry=_square(18.55, -33.90), revision=32),
    ]
    repo.subjects.append(SubjectRow(3, "Africa/Johannesburg", ("sex_offence",), "wc", None, 33))
    repo.zones.append(_zone(34, 34, None, group="sex_offence", geometry=_square(18.5, -33.93)))

    loaded = read_snapshot(path, KEY, replace(HERE, high_water=34), DEFAULTS)
    assert loaded.engine is not None, loaded.reason
    assert loaded.engine.revision == saved.revision == 22
    loaded.engine.sync(repo)
    fresh = _synced(repo)
    fixes = _fixes()
    assert _pairs(loaded.engine, fixes) == _pairs(fresh, fixes)
    assert len(_pairs(fresh, fixes)) > 1000  # the comparison is not of two empty results
    assert sorted(loaded.engine.metas) == sorted(fresh.metas)
    assert loaded.engine.metas == fresh.metas
    assert loaded.engine.curfews == fresh.curfews
    assert loaded.engine.schedules.keys() == fresh.schedules.keys()
    assert loaded.engine.subject_tz == fresh.subject_tz


def _saved(tmp_path: Path) -> Path:
    path = tmp_path / "catalogue.snap"
    write_snapshot(_synced(_catalogue()), path, KEY, HERE)
    return path


def test_a_changed_byte_anywhere_is_refused(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    for where in (len(snap.MAGIC) + 10, len(data) // 2, len(data) - 1):
        changed = bytearray(data)
        changed[where] ^= 0x01
        path.write_bytes(bytes(changed))
        loaded = read_snapshot(path, KEY, HERE, DEFAULTS)
        assert loaded.engine is None
        assert "signature" in loaded.reason
    path.write_bytes(bytes(data[: len(data) // 3]))  # cut short: a crash while copying it
    assert "signature" in read_snapshot(path, KEY, HERE, DEFAULTS).reason
    path.write_bytes(b"")
    assert read_snapshot(path, KEY, HERE, DEFAULTS).reason == "not a catalogue snapshot"
    assert read_snapshot(tmp_path / "none", KEY, HERE, DEFAULTS).reason == "no snapshot yet"


class _Payload:
    """What an attacker who can write the file puts in it: a pickle that runs a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_forged_snapshot_is_never_unpickled(tmp_path: Path) -> None:
    """The attacker writes a well-formed file (magic, a header that matches everything) around
    a pickle that runs a command, and signs it with every key they could know: none, the
    development secret's key, the key of another deployment. Nothing runs."""
    path = _saved(tmp_path)
    marker = tmp_path / "pwned"
    good = path.read_bytes()
    lead = len(snap.MAGIC) + 4
    (size,) = snap._HEADER_LEN.unpack_from(good, len(snap.MAGIC))
    head = good[: lead + size]
    evil = pickle.dumps(_Payload(marker))
    keys = [
        b"\0" * 64,
        snapshot_key("development-only-secret-change-me"),
        snapshot_key("another-deployment-secret-of-some-length"),
    ]
    for key in keys:
        body = head + evil
        tag = snap.hashlib.blake2b(body, key=key, digest_size=snap.TAG_BYTES).digest()
        for forged in (body + tag, body + good[-snap.TAG_BYTES :], body):
            path.write_bytes(forged)
            loaded = read_snapshot(path, KEY, HERE, DEFAULTS)
            assert loaded.engine is None
            assert not marker.exists()
    # the check itself is sound: the same bytes signed with the right key do run
    body = head + evil
    path.write_bytes(body + snap.hashlib.blake2b(body, key=KEY, digest_size=64).digest())
    read_snapshot(path, KEY, HERE, DEFAULTS)
    assert marker.exists()


def test_another_database_code_timeline_or_thresholds_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _saved(tmp_path)
    cases = {
        "another database": (replace(HERE, database=16385), DEFAULTS),
        "another cluster": (replace(HERE, system="1"), DEFAULTS),
        "ahead of the database": (replace(HERE, high_water=21), DEFAULTS),
        "other global thresholds": (HERE, layered({"entry_s": 45})),
    }
    for what, (identity, thresholds) in cases.items():
        loaded = read_snapshot(path, KEY, identity, thresholds)
        assert loaded.engine is None, what
        assert loaded.reason, what
    assert (
        "another database" in read_snapshot(path, KEY, cases["another cluster"][0], DEFAULTS).reason
    )
    assert "backup" in read_snapshot(path, KEY, cases["ahead of the database"][0], DEFAULTS).reason
    monkeypatch.setattr(snap, "code_digest", lambda: "another release")
    assert read_snapshot(path, KEY, HERE, DEFAULTS).reason == "written by other code"
    monkeypatch.undo()
    assert read_snapshot(path, KEY, HERE, DEFAULTS).engine is not None


# ---------------------------------------------------------------- the real ingest process


def _subject_with_zone(conn: psycopg.Connection, device_id: str, start: float) -> tuple[int, int]:
    conn.execute(
        "INSERT INTO regions (id, name) VALUES ('za-wc', 'Western Cape') ON CONFLICT DO NOTHING"
    )
    (sid,) = conn.execute(
        "INSERT INTO subjects (name, region_id, timezone) VALUES (%s, 'za-wc',"
        " 'Africa/Johannesburg') RETURNING id",
        (device_id,),
    ).fetchone()
    conn.execute(
        "INSERT INTO device_assignments (device_id, subject_id, role, during)"
        " VALUES (%s, %s, 'offender', tstzrange(to_timestamp(%s), NULL))",
        (device_id, sid, start - 3600),
    )
    return sid, _exclusion(conn, sid)


def _exclusion(conn: psycopg.Connection, sid: int) -> int:
    (zid,) = conn.execute(
        "INSERT INTO zones (name, kind, geometry, radius_m, subject_id)"
        " VALUES ('victim home', 'exclusion', %s, 150, %s) RETURNING id",
        (Jsonb({"type": "Point", "coordinates": list(CENTRE)}), sid),
    ).fetchone()
    return int(zid)


def _entries(settings: Any, sid: int) -> list[int]:
    with psycopg.connect(settings.database_url) as conn:
        return [
            int(z)
            for (z,) in conn.execute(
                "SELECT zone_id FROM alerts WHERE subject_id = %s"
                " AND type = 'exclusion_zone_entry' ORDER BY id",
                (sid,),
            )
        ]


def _walk_in(settings: Any, service_env: dict[str, str], device_id: str, start: float) -> None:
    gw = gateway(settings, service_env)
    publish_all(gw, [fix_msg(device_id, start + 30 * i, 10, i) for i in range(10)])
    gw.disconnect()


def test_a_restarted_ingest_loads_the_snapshot_and_catches_up(
    settings, service_env, provision, ingest_factory, tmp_path: Path
) -> None:
    """Ingest builds from the tables and saves; a zone is drawn and another deleted while it is
    down; restarted, it loads the snapshot, catches up, and raises the entry into the new zone
    only. A snapshot changed on disk is refused and the catalogue is built from the tables."""
    path = tmp_path / "catalogue.snap"
    first, second, third = (fresh_id("snap") for _ in range(3))
    for device_id in (first, second, third):
        provision(device_id)
    start = time.time() - 600
    with psycopg.connect(settings.database_url) as conn:
        s1, z1 = _subject_with_zone(conn, first, start)
        s2, old_zone = _subject_with_zone(conn, second, start)

    ingest = ingest_factory()
    ingest.env["TAGWATCH_INDEX_SNAPSHOT"] = str(path)
    ingest.start_and_wait(60)
    assert wait_for(lambda: "catalogue snapshot saved" in ingest.log(), 60), ingest.log()[-3000:]
    assert "catalogue snapshot not used: no snapshot yet" in ingest.log()
    _walk_in(settings, service_env, first, start)
    assert wait_for(lambda: _entries(settings, s1) == [z1], 20), ingest.log()[-3000:]
    ingest.stop()

    with psycopg.connect(settings.database_url) as conn:  # while ingest is down
        conn.execute("UPDATE zones SET deleted_at = now() WHERE id = %s", (old_zone,))
        new_zone = _exclusion(conn, s2)
    ingest.start_and_wait(60)
    assert wait_for(
        lambda: "zone index ready" in ingest.log().split("catalogue snapshot saved")[-1]
    )
    assert "catalogue snapshot loaded" in ingest.log(), ingest.log()[-3000:]
    _walk_in(settings, service_env, second, start)
    assert wait_for(lambda: _entries(settings, s2) == [new_zone], 20), ingest.log()[-3000:]
    time.sleep(1)
    assert _entries(settings, s2) == [new_zone]  # never the zone deleted while it was down
    ingest.stop()

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with psycopg.connect(settings.database_url) as conn:
        s3, z3 = _subject_with_zone(conn, third, start)
    ingest.start_and_wait(60)
    assert wait_for(lambda: "catalogue snapshot not used: signature" in ingest.log(), 30)
    _walk_in(settings, service_env, third, start)
    assert wait_for(lambda: _entries(settings, s3) == [z3], 20), ingest.log()[-3000:]
    stored = "SELECT count(*) FROM fixes WHERE device_id = ANY(%s)"
    assert count(settings.database_url, stored, ([first, second, third],)) == 30
