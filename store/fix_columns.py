"""A fix's numbers as stored (migration 0027) and as read.

A number is stored as a scaled integer where that integer gives the sent value back bit for bit
(lat/lon in 10⁻⁷ degree, accuracy, speed and heading in hundredths), and in its float column
otherwise: TimescaleDB compresses the integers to a third of the floats (docs/scaling.md, "Bytes
per fix"). The receive time is stored as milliseconds after the fix time. `compact` makes the
stored form on ingest's path; `as_read` and `value` are the SQL that reads every form back, so a
fix written before 0027, by hand, or compactly reads the same.
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

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


def _negative_zero(value: float) -> bool:
    """-0.0: an integer 0 would give back +0.0, so it keeps its float column, bit for bit."""
    return value == 0.0 and math.copysign(1.0, value) < 0


def _scaled(value: float, scale: float) -> int | None:
    """The integer that gives the float8 ``value`` back as ``integer / scale``, or None."""
    if not math.isfinite(value) or _negative_zero(value):
        return None
    k = round(value * scale)
    return k if abs(k) <= _INT4 and k / scale == value else None


def _scaled_real(value: float | None) -> int | None:
    """The integer k with real(k / 100) equal to real(``value``) (what a real column would
    hold), or None."""
    if value is None or not math.isfinite(value):
        return None
    try:
        stored = _real(value)
    except OverflowError:  # beyond a real's range (the decoder's limits are far below it)
        return None
    if _negative_zero(stored):
        return None
    k = round(stored * 100)
    return k if abs(k) <= _INT4 and _real(k / 100) == stored else None


COLUMNWISE_FROM = 16  # rows; below that the per-row version is cheaper


def compact_rows(rows: list[tuple[Any, ...]], received: float) -> list[tuple[Any, ...]]:
    """`compact` of a batch's rows, column-wise with NumPy: the same stored form (tested), at a
    third of the cost on ingest's writer thread."""
    if len(rows) < COLUMNWISE_FROM:
        return [compact(row, received) for row in rows]
    device_id, ts, seq, lat, lon, acc, alt, spd, hdg, sats, batt, src = zip(*rows, strict=True)
    lat_e7, lat_f = _scaled_column(lat, 1e7)
    lon_e7, lon_f = _scaled_column(lon, 1e7)
    acc_cm, acc_f = _scaled_real_column(acc)
    spd_cms, spd_f = _scaled_real_column(spd)
    hdg_cdeg, hdg_f = _scaled_real_column(hdg)
    epoch = np.fromiter((t.timestamp() for t in ts), dtype=np.float64, count=len(rows))
    delay = np.rint((received - epoch) * 1000)
    fits = np.abs(delay) <= _INT4
    received_ms = np.where(fits, delay, 0).astype(np.int64).tolist()
    ms = [d if f else None for d, f in zip(received_ms, fits.tolist(), strict=True)]
    at = [None if f else datetime.fromtimestamp(received, UTC) for f in fits.tolist()]
    return list(
        zip(
            device_id, ts, seq, lat_f, lon_f, acc_f, alt, spd_f, hdg_f, sats, batt, src,
            at, lat_e7, lon_e7, acc_cm, spd_cms, hdg_cdeg, ms,
            strict=True,
        )
    )  # fmt: skip


def _scaled_column(
    values: tuple[float, ...], scale: float
) -> tuple[list[int | None], list[float | None]]:
    """Per value: the integer of `_scaled` and None, or None and the value (as `compact`)."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        k = np.rint(v * scale)
        ok = np.isfinite(v) & (np.abs(k) <= _INT4) & ~_negative_zeros(v)
        k = np.where(ok, k, 0.0)
        ok &= k / scale == v
    return _split(values, k, ok)


def _scaled_real_column(
    values: tuple[float | None, ...],
) -> tuple[list[int | None], list[float | None]]:
    """Per value: the integer of `_scaled_real` and None, or None and the value (None stays
    None in both)."""
    present = np.fromiter((x is not None for x in values), dtype=np.bool_, count=len(values))
    v = np.fromiter(
        (math.nan if x is None else x for x in values), dtype=np.float64, count=len(values)
    )
    with np.errstate(invalid="ignore", over="ignore"):
        stored = v.astype(np.float32)
        k = np.rint(stored.astype(np.float64) * 100)
        ok = present & np.isfinite(stored) & (np.abs(k) <= _INT4) & ~_negative_zeros(stored)
        k = np.where(ok, k, 0.0)
        ok &= (k / 100).astype(np.float32) == stored
    return _split(values, k, ok)


def _negative_zeros(v: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.bool_]:
    """`_negative_zero`, element-wise."""
    return np.asarray((v == 0.0) & np.signbit(v), dtype=np.bool_)


def _split(
    values: tuple[float | None, ...], k: npt.NDArray[np.float64], ok: npt.NDArray[np.bool_]
) -> tuple[list[int | None], list[float | None]]:
    """Per value, where ``ok``: its integer ``k`` and no float; elsewhere no integer and the
    value as sent."""
    exact = ok.tolist()
    ints = k.astype(np.int64).tolist()
    return (
        [i if o else None for i, o in zip(ints, exact, strict=True)],
        [None if o else x for x, o in zip(values, exact, strict=True)],
    )


def compact(row: tuple[Any, ...], received: float) -> tuple[Any, ...]:
    """The stored form of a decoded fix row (device_id, ts, seq, lat, lon, acc, alt, spd, hdg,
    sats, batt, src), received at the epoch ``received``: each number in its integer column
    where that is exact, else in its float column (never both, never neither)."""
    device_id, ts, seq, lat, lon, acc, alt, spd, hdg, sats, batt, src = row
    lat_e7, lon_e7 = _scaled(lat, 1e7), _scaled(lon, 1e7)
    acc_cm, spd_cms, hdg_cdeg = _scaled_real(acc), _scaled_real(spd), _scaled_real(hdg)
    delay = round((received - ts.timestamp()) * 1000)
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
        None if received_ms is not None else datetime.fromtimestamp(received, UTC),
        lat_e7,
        lon_e7,
        acc_cm,
        spd_cms,
        hdg_cdeg,
        received_ms,
    )
