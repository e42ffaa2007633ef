"""A fix's numbers stored compactly (migration 0027, store/fix_columns) read back as sent, bit for
bit: for the values devices send (7 decimals, hundredths), which go into the integer columns,
and for any other double, which stays in its float column. Written through ingest's own COPY and
read through the SQL every reader uses, on the real database."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from tagwatch.store.fix_columns import WRITE_COLUMNS, WRITE_TYPES, as_read, compact, compact_rows

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _as_real_reads(value: float) -> float:
    """What a real column holding ``value`` reads as: the single nearest to it, which PostgreSQL
    prints as its shortest exact decimal (as NumPy prints a float32) and psycopg parses."""
    return float(str(np.float32(value)))


def _decimals(low: float, high: float, places: int) -> st.SearchStrategy[float]:
    """Numbers as a device prints them: at most ``places`` decimals, parsed as JSON would."""
    scale = 10**places
    return st.integers(math.ceil(low * scale), math.floor(high * scale)).map(
        lambda k: float(f"{k / scale:.{places}f}")
    )


def _either(low: float, high: float, places: int) -> st.SearchStrategy[float]:
    """Device precision, any double in range, or -0.0 (which the decoder's ranges accept)."""
    return st.one_of(_decimals(low, high, places), st.floats(low, high), st.just(-0.0))


@pytest.fixture(scope="module")
def conn(settings):
    with psycopg.connect(settings.database_url) as connection:
        yield connection


def _store_and_read(conn, row: tuple, received: float) -> tuple:
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        with cur.copy(f"COPY fixes ({WRITE_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(WRITE_TYPES)
            copy.write_row(compact(row, received))
        read = cur.execute(
            f"SELECT lat, lon, acc, spd, hdg, received_at FROM (SELECT {as_read('x')}"
            " FROM fixes x WHERE x.device_id = %s) f",
            (row[0],),
        ).fetchone()
    assert read is not None
    return read


@examples(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lat=_either(-90, 90, 7),
    lon=_either(-180, 180, 7),
    acc=st.one_of(st.none(), _either(0, 100_000, 2)),
    spd=st.one_of(st.none(), _either(0, 1000, 2)),
    hdg=st.one_of(st.none(), _either(0, 360, 2)),
    delay=st.one_of(st.floats(-300, 8 * 86_400), st.just(40 * 86_400.0)),
)
def test_every_number_reads_back_as_sent(conn, lat, lon, acc, spd, hdg, delay) -> None:
    ts = T0 + timedelta(microseconds=123_457)
    row = ("compact-1", ts, 7, lat, lon, acc, None, spd, hdg, 9, 80.0, "gps")
    received = ts.timestamp() + delay
    got = _store_and_read(conn, row, received)
    assert got[0] == lat and math.copysign(1, got[0]) == math.copysign(1, lat)
    assert got[1] == lon and math.copysign(1, got[1]) == math.copysign(1, lon)
    # a real column held the nearest single before 0027; it still reads that single
    for sent, read in zip((acc, spd, hdg), got[2:5], strict=True):
        assert read == (None if sent is None else _as_real_reads(sent))
    assert abs((got[5] - ts).total_seconds() - delay) <= 0.0005 + 1e-6 * abs(delay)


def test_what_devices_send_goes_into_the_integers(conn) -> None:
    """A tag's fix (7 decimals, tenths of a metre, hundredths of m/s, tenths of a degree) keeps
    no float; a phone's full double stays in its float column."""
    ts = T0
    tag = compact(("t", ts, 1, -33.9249123, 18.4241, 7.5, None, 1.35, 271.3, 8, 80.0, "gps"), 1e9)
    assert tag[3:6] == (None, None, None) and tag[7:9] == (None, None)
    assert tag[13:18] == (-339249123, 184241000, 750, 135, 27130)
    phone = compact(("p", ts, 1, 51.123456789012, 0.5, 12.0, None, 10 / 3.6, None, None, 50.0,
                     "gps"), ts.timestamp() + 2.0)  # fmt: skip
    assert phone[3] == 51.123456789012 and phone[13] is None  # more than 7 decimals
    assert phone[4] is None and phone[14] == 5_000_000
    assert phone[7] == 10 / 3.6 and phone[16] is None  # km/h in m/s: not hundredths
    assert phone[12] is None and phone[18] == 2000  # received 2 s after the fix
    late = compact(("l", ts, 1, 1.0, 1.0, 1.0, None, None, None, None, None, "gps"), 1e10)
    assert late[12] is not None and late[18] is None  # does not fit an integer of ms


_ROWS = st.lists(
    st.tuples(
        _either(-90, 90, 7),
        _either(-180, 180, 7),
        st.one_of(st.none(), _either(0, 100_000, 2)),
        st.one_of(st.none(), _either(0, 1000, 2)),
        st.one_of(st.none(), _either(0, 360, 2)),
        st.one_of(st.floats(-300, 8 * 86_400), st.just(40 * 86_400.0)),
    ),
    max_size=60,
)


@examples(max_examples=200, deadline=None)
@given(rows=_ROWS)
def test_the_batch_form_is_the_row_form(rows) -> None:
    """ingest's writer compacts a batch column-wise (compact_rows): the same values, the same
    types, in the same places as compacting each row."""
    received = T0.timestamp() + 1_000.0
    batch = [
        ("d", T0 - timedelta(seconds=delay), i, lat, lon, acc, None, spd, hdg, 7, 50.0, "gps")
        for i, (lat, lon, acc, spd, hdg, delay) in enumerate(rows)
    ]
    got, want = compact_rows(batch, received), [compact(r, received) for r in batch]
    assert [tuple(map(repr, r)) for r in got] == [tuple(map(repr, r)) for r in want]
