"""Growable NumPy storage with range allocation, so that the index changes in place.

The classifier wants every zone's data in a few flat arrays (one gather per column per pair); the
index wants to add, change and remove one zone at a time without rebuilding them. A pool gives out
ranges at the end of its arrays (doubling the capacity when full), takes freed ranges back as
garbage, and compacts only when garbage outweighs live data, so each change costs amortized
O(size of the change).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

AnyArray = npt.NDArray[Any]  # columns of mixed dtypes; callers know theirs


class RangePool:
    def __init__(self, columns: dict[str, tuple[np.dtype[np.generic], tuple[int, ...]]]) -> None:
        """``columns`` maps a name to (dtype, shape of one row)."""
        self._layout = columns
        self.capacity = 64
        self.arrays: dict[str, AnyArray] = {
            name: np.zeros((self.capacity, *shape), dtype=dtype)
            for name, (dtype, shape) in columns.items()
        }
        self.used = 0
        self.garbage = 0

    def __getitem__(self, name: str) -> AnyArray:
        return self.arrays[name]

    def __getstate__(self) -> dict[str, Any]:
        """Only the rows handed out: the spare capacity (up to half the arrays after a doubling)
        would otherwise be written to, and read back from, every catalogue snapshot."""
        state = dict(self.__dict__)
        state["arrays"] = {name: a[: self.used] for name, a in self.arrays.items()}
        state["capacity"] = self.used
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays.values())

    def _reserve(self, size: int) -> None:
        if size <= self.capacity:
            return
        capacity = max(size, 2 * self.capacity)
        for name, old in self.arrays.items():
            grown = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            grown[: self.used] = old[: self.used]
            self.arrays[name] = grown
        self.capacity = capacity

    def alloc(self, n: int) -> int:
        self._reserve(self.used + n)
        start = self.used
        self.used += n
        return start

    def put_many(self, values: dict[str, list[npt.NDArray[Any]]]) -> npt.NDArray[np.int64]:
        """put for many ranges at once: one allocation, each column's pieces concatenated
        straight into the pool (no intermediate array); returns each piece's start. A bulk
        load puts a hundred thousand polygons: one at a time, that was 5 array writes each."""
        pieces = next(iter(values.values()))
        sizes = np.fromiter((len(a) for a in pieces), dtype=np.int64, count=len(pieces))
        total = int(sizes.sum())
        start = self.alloc(total)
        if total:
            for name, parts in values.items():
                np.concatenate(parts, out=self.arrays[name][start : start + total])
        return start + np.cumsum(sizes) - sizes

    def free(self, n: int) -> None:
        self.garbage += n

    def wants_compaction(self) -> bool:
        return self.garbage > 4096 and self.garbage > self.used // 2

    def compact(
        self, starts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """Keep only the live ranges (given by their owners), in their current order; return
        their new starts."""
        order = np.argsort(starts, kind="stable")
        s = starts[order]
        n = lengths[order]
        new_sorted = np.cumsum(n) - n
        total = int(n.sum())
        rows = np.repeat(s - new_sorted, n) + np.arange(total)
        for name, old in self.arrays.items():
            fresh = np.zeros((max(total, 64), *old.shape[1:]), dtype=old.dtype)
            fresh[:total] = old[rows]
            self.arrays[name] = fresh
        self.capacity = max(total, 64)
        self.used = total
        self.garbage = 0
        out = np.empty_like(starts)
        out[order] = new_sorted
        return out


class SlotTable:
    """Fixed-width rows addressed by slot number, with slot reuse; the zone and subject tables."""

    def __init__(
        self, columns: dict[str, tuple[np.dtype[np.generic], tuple[int, ...], object]]
    ) -> None:
        """``columns`` maps a name to (dtype, shape of one row, fill value of a free row)."""
        self._columns = columns
        self.capacity = 64
        self.arrays: dict[str, AnyArray] = {}
        for name, (dtype, shape, fill) in columns.items():
            self.arrays[name] = np.full((self.capacity, *shape), fill, dtype=dtype)
        self.size = 0  # slots ever handed out
        self._free: list[int] = []

    def __getitem__(self, name: str) -> AnyArray:
        return self.arrays[name]

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays.values())

    def take(self) -> int:
        if self._free:
            return self._free.pop()
        if self.size == self.capacity:
            self._grow(2 * self.capacity)
        slot = self.size
        self.size += 1
        return slot

    def take_many(self, n: int) -> list[int]:
        """n slots, the same ones n calls of take would give, growing the arrays at most once."""
        reused = min(n, len(self._free))
        slots = [self._free.pop() for _ in range(reused)]
        fresh = n - reused
        if self.size + fresh > self.capacity:
            capacity = self.capacity
            while capacity < self.size + fresh:
                capacity *= 2
            self._grow(capacity)
        slots.extend(range(self.size, self.size + fresh))
        self.size += fresh
        return slots

    def _grow(self, capacity: int) -> None:
        for name, (dtype, shape, fill) in self._columns.items():
            grown = np.full((capacity, *shape), fill, dtype=dtype)
            grown[: self.capacity] = self.arrays[name]
            self.arrays[name] = grown
        self.capacity = capacity

    def release(self, slot: int) -> None:
        for name, (_, _, fill) in self._columns.items():
            self.arrays[name][slot] = fill
        self._free.append(slot)
