"""Keeping an ingest worker's threads on one CPU.

A worker is one Python process with three busy threads (paho's network loop, the decoder and the
writer) that take turns holding the interpreter lock. When the scheduler runs them on different
cores, every hand-over of the lock is a wake-up across cores (the waiting thread sleeps on a
futex until the holder lets go), and the threads spend more CPU handing the lock over than
working. `tagwatch bench ingest`, one worker, 100,000 single fixes, runs alternating (2026-12-07):

    engine off: 9,833 fixes/s at 103 µs of CPU a fix free, 16,576 at 59 µs pinned
    engine on:  6,524 fixes/s at 137 µs free, 7,157 at 113 µs pinned

On one CPU a hand-over is an ordinary context switch. The worker loses nothing it could use: only
one of its threads runs Python at a time anyway, and PostgreSQL and the broker (other processes)
keep the other cores.

`TAGWATCH_INGEST_CPU` says which CPU: an index into the CPUs the process may use (its affinity
mask, e.g. a container's cpuset), taken modulo their number, so worker k of a host can be given
CPU k. Unset: the scheduler decides, as before. Linux only; elsewhere a request is logged and
ignored.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger("tagwatch.ingest")


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on, in order (empty where the OS does not say)."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))


def pin_to_cpu(index: int) -> int | None:
    """Bind this process (each of its threads) and every thread it starts afterwards to the
    ``index``-th of its allowed CPUs (modulo their number); return the CPU, or None where that
    cannot be done. A thread takes its mask from the thread that starts it."""
    cpus = allowed_cpus()
    if not cpus or not hasattr(os, "sched_setaffinity"):
        log.warning("ingest: TAGWATCH_INGEST_CPU=%d ignored: no CPU affinity here", index)
        return None
    cpu = cpus[index % len(cpus)]
    set_process_cpus({cpu})
    return cpu


def set_process_cpus(cpus: set[int]) -> None:
    """Give every thread of this process, and those it starts afterwards, the mask ``cpus``.
    On Linux the mask is per thread: the caller's, and those of the threads already running (a
    metrics server, the caller's parent thread), so that the whole process is on those CPUs."""
    tasks = Path("/proc/self/task")
    for tid in sorted(int(t.name) for t in tasks.iterdir()) if tasks.is_dir() else ():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(tid, cpus)
    os.sched_setaffinity(0, cpus)
