"""The subject lookup (subject id -> row of the subject table) that every classified batch starts
with: a direct table while the ids are not too sparse, a binary search through the sorted ids
otherwise. Both must give exactly the rows the index registered, and -1 for any id it does not
know, whatever the ids look like."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tagwatch.geofence import ZoneIndex
from tagwatch.geofence.index import LOOKUP_TABLE_SPREAD

ids = st.integers(min_value=-(2**40), max_value=2**40)


def _check(index: ZoneIndex, registered: list[int], probes: list[int]) -> None:
    rows = index.subject_rows(np.asarray(probes, dtype=np.int64))
    assert rows.dtype == np.int64
    for probe, row in zip(probes, rows.tolist(), strict=True):
        if probe in registered:
            assert row >= 0
            assert index._row_of[probe] == row
        else:
            assert row == -1


@settings(max_examples=60, deadline=None)
@given(
    registered=st.lists(ids, min_size=1, max_size=40, unique=True),
    strangers=st.lists(ids, max_size=20),
    dense=st.booleans(),
)
def test_every_registered_id_finds_its_row_and_no_other_id_finds_one(
    registered: list[int], strangers: list[int], dense: bool
) -> None:
    if dense:  # ids close together, as a database sequence gives them: the direct table
        base = registered[0]
        registered = sorted({base + abs(i) % 97 for i in registered})
    index = ZoneIndex()
    for subject in registered:
        index.set_subject(subject)
    probes = registered + strangers + [min(registered) - 1, max(registered) + 1]
    _check(index, registered, probes)


def test_the_direct_table_and_the_binary_search_agree_and_follow_changes() -> None:
    spread = LOOKUP_TABLE_SPREAD
    for step in (1, 7, spread * 4):  # dense, bench-like (ids 7 apart), too sparse for a table
        index = ZoneIndex()
        registered = [1_000 + step * i for i in range(5_000)]
        for subject in registered:
            index.set_subject(subject)
        probes = list(range(900, 1_000 + step * 5_100, max(1, step // 3)))
        _check(index, registered, probes)
        assert (index._lookup_table.size > 0) == (step < spread)
        index.remove_subject(registered[10])
        index.set_subject(10**12)  # one id far away: the table would be too sparse now
        registered = [*registered[:10], *registered[11:], 10**12]
        _check(index, registered, [*probes, 10**12, registered[10]])
        assert index._lookup_table.size == 0
