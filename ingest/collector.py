"""The cyclic garbage collector of an ingest worker, set for a process that holds millions of
long-lived objects.

A worker holds its alert engine's catalogue (the zone index's Python side, zone metadata,
schedules: millions of objects at national size) and the decoded rule states it keeps between
batches, and every batch allocates tens of thousands of short-lived ones (decoded fixes, rows,
rule results). With Python's default thresholds (700, 10, 10) the collector runs a young
collection every 700 allocations and, every hundred of those, walks the old generation again:
the profile of the engine's batch path showed it as time inside constructors
(`StateCache.stage`, `_kept_row`, `unpack_trail`), and `tagwatch bench engine-states` ran
7,370 fixes/s with the defaults and 10,769 with a young threshold of 50,000 (engine on with kept
states: 9,818 and 12,060; docs/scaling.md).

`settle` runs once the catalogue is loaded: it collects, then freezes every object alive
(``gc.freeze``: the collector never walks them again, and the catalogue snapshot's forked child
does not copy their pages for the collector's bookkeeping), and raises the young threshold.
Cycles are still collected, only in larger steps; the catalogue is not garbage, so nothing is
lost by never scanning it.
"""

from __future__ import annotations

import gc

DEFAULT_YOUNG_THRESHOLD = 50_000  # TAGWATCH_INGEST_GC_THRESHOLD
OLDER_THRESHOLDS = (20, 100)  # young collections per middle one, middle ones per full one


def settle(young_threshold: int) -> tuple[int, int, int]:
    """Freeze what is alive now and set the thresholds; ``young_threshold`` 0 keeps Python's.
    Returns the thresholds in force."""
    gc.collect()
    gc.freeze()
    if young_threshold > 0:
        gc.set_threshold(young_threshold, *OLDER_THRESHOLDS)
    return gc.get_threshold()
