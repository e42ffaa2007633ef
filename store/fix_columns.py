"""A fix's numbers as stored (migration 0027) and as read.

A number is stored as a scaled integer where that integer gives the sent value back bit for bit
(lat/lon in 10⁻⁷ degree, accuracy, speed and heading in hundredths), and in its float column
otherwise: TimescaleDB compresses the integers to a third of the floats (docs/scaling.md, "Bytes
per fix"). The receive time is stored as milliseconds after the fix time. `compact` makes the
stored form on ingest's path; `AS_READ` and `value` are the SQL that reads every form back, so a
fix written before 0027, by hand, or compactly reads the same.
"""

from __future__ import annotations

import math
import struct
from datetime import datetime
from typing import Any

# The columns of a fix as the service reads them, in the order of the table before 0027.
READ_COLUMNS = (
    "device_id",
    "ts",
    "seq",
    "lat",
    "lon",
    "acc",
    "alt",
    "spd",
    "hdg",
    "sats",
    "batt",
    "src",
    "received_at",
)
_SCALED = {
    "lat": "COALESCE({t}.lat, {t}.lat_e7 / 1e7::float8)",
    "lon": "COALESCE({t}.lon, {t}.lon_e7 / 1e7::float8)",
    # integer / float8 then to real: the same rounding `compact` checks (_real of k / 100)
    "acc": "COALESCE({t}.acc, ({t}.acc_cm / 100::float8)::real)",
    "spd": "COALESCE({t}.spd, ({t}.spd_cms / 100::float8)::real)",
    "hdg": "COALESCE({t}.hdg, ({t}.hdg_cdeg / 100::float8)::real)",
    "received_at": (
        "COALESCE({t}.received_at, {t}.ts + {t}.received_ms * INTERVAL '1 millisecond')"
    ),
}


def value(column: str, table: str) -> str:
    """The SQL expression of ``column`` of a fix as read, for the fixes table aliased ``table``."""
    template = _SCALED.get(column)
    return f"{table}.{column}" if template is None else template.format(t=table)


def as_read(table: str) -> str:
    """Every column of a fix as read, named as in the table: what `SELECT x.*` was."""
    return ", ".join(
        f"{value(c, table)} AS {c}" if c in _SCALED else f"{table}.{c}" for c in READ_COLUMNS
    )


# The columns ingest writes (store/ingest_writer): the fix as decoded, then its compact form.
WRITE_COLUMNS = (
    "device_id, ts, seq, lat, lon, acc, alt, spd, hdg, sats, batt, src,"
    " received_at, lat_e7, lon_e7, acc_cm, spd_cms, hdg_cdeg, received_ms"
)
WRITE_TYPES = [
    "text",
    "timestamptz",
    "int8",
    "float8",
    "float8",
    "float4",
    "float4",
    "float4",
    "float4",
    "int2",
    "float4",
    "text",
    "timestamptz",
    "int4",
    "int4",
    "int4",
    "int4",
    "int4",
    "int4",
]
_INT4 = 2**31 - 1
_FLOAT32 = struct.Struct("<f")


def _real(value: float) -> float:
    """``value`` as PostgreSQL stores it in a real column (IEEE single, nearest)."""
    return float(_FLOAT32.unpack(_FLOAT32.pack(value))[0])


def _scaled(value: float, scale: float) -> int | None:
    """The integer that gives the float8 ``value`` back as ``integer / scale``, or None."""
    if not math.isfinite(value):
        return None
    k = round(value * scale)
    return k if abs(k) <= _INT4 and k / scale == value else None


def _scaled_real(value: float | None) -> int | None:
    """The integer k with real(k / 100) equal to real(``value``) (what a real column would
    hold), or None."""
    if value is None or not math.isfinite(value):
        return None
    stored = _real(value)
    k = round(stored * 100)
    return k if abs(k) <= _INT4 and _real(k / 100) == stored else None


def compact(row: tuple[Any, ...], received: float) -> tuple[Any, ...]:
    """The stored form of a decoded fix row (device_id, ts, seq, lat, lon, acc, alt, spd, hdg,
    sats, batt, src), received at the epoch ``received``: each number in its integer column
    where that is exact, else in its float column (never both, never neither)."""
    device_id, ts, seq, lat, lon, acc, alt, spd, hdg, sats, batt, src = row
    lat_e7, lon_e7 = _scaled(lat, 1e7), _scaled(lon, 1e7)
    acc_cm, spd_cms, hdg_cdeg = _scaled_real(acc), _scaled_real(spd), _scaled_real(hdg)
    delay = round((received - _epoch(ts)) * 1000)
    received_ms = delay if abs(delay) <= _INT4 else None
    return (
        device_id,
        ts,
        seq,
        None if lat_e7 is not None else lat,
        None if lon_e7 is not None else lon,
        None if acc_cm is not None else acc,
        alt,
        None if spd_cms is not None else spd,
        None if hdg_cdeg is not None else hdg,
        sats,
        batt,
        src,
        None if received_ms is not None else datetime.fromtimestamp(received, ts.tzinfo),
        lat_e7,
        lon_e7,
        acc_cm,
        spd_cms,
        hdg_cdeg,
        received_ms,
    )


def _epoch(ts: datetime) -> float:
    return ts.timestamp()
