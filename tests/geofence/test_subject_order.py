"""The order classify measures a batch in (subject rows, stable) is exactly NumPy's stable
argsort, for any rows: unknown subjects (-1), rows past 16 bits, and rows too wide for the radix
passes."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tagwatch.geofence.classification import stable_order, subject_order

ROWS = st.one_of(
    st.integers(-1, 40),
    st.integers(-1, 300_000),
    st.integers(-1, 2**40),
)


@given(rows=arrays(np.int64, st.integers(0, 3_000), elements=ROWS))
def test_subject_order_is_the_stable_argsort(rows: np.ndarray) -> None:
    assert np.array_equal(subject_order(rows), np.argsort(rows, kind="stable"))


def test_a_national_batch() -> None:
    rng = np.random.default_rng(3)
    rows = rng.integers(-1, 100_000, 65_536)
    assert np.array_equal(subject_order(rows), np.argsort(rows, kind="stable"))


@given(keys=arrays(np.int64, st.integers(0, 3_000), elements=st.integers(0, 2**33)))
def test_stable_order_is_the_stable_argsort(keys: np.ndarray) -> None:
    assert np.array_equal(stable_order(keys), np.argsort(keys, kind="stable"))
