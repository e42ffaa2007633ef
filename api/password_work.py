"""argon2 off the event loop: a small pool of low-priority worker threads, one per process.

Hashing or verifying a password costs ~64 MiB and tens of milliseconds of CPU on several cores
(argon2id with 4 lanes). On the event loop it would stall every request and the alert feed;
in the general worker pool a login flood could take every thread. So it runs here:

* at most ``login_verify_threads`` at once per process (later ones wait their turn, as
  coroutines, not threads); when more than ``QUEUE_PER_THREAD`` per thread already wait, the
  caller gets ``Busy`` at once instead of queueing without bound;
* at a lower CPU priority (``nice`` +10 on the worker threads, which argon2's own lane threads
  inherit, Linux): when the machine is busy, the event loop and the database come first and a
  login waits a little longer. argon2 releases the GIL, so the loop keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

QUEUE_PER_THREAD = 64
NICENESS = 10
T = TypeVar("T")


class Busy(Exception):
    """Too many password checks already wait in this process."""


def _lower_priority() -> None:
    """Runs first in each worker thread: on Linux, nice applies per thread (and is inherited by
    the threads argon2 starts). Elsewhere, or when refused, the thread keeps its priority."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)


class PasswordWork:
    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="argon2", initializer=_lower_priority
        )
        self._pending = 0
        self._lock = threading.Lock()

    async def run(self, function: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self._pending >= self.threads * (QUEUE_PER_THREAD + 1):
                raise Busy
            self._pending += 1
        try:
            return await asyncio.wrap_future(self._executor.submit(function, *args))
        finally:
            with self._lock:
                self._pending -= 1


_work: PasswordWork | None = None
_work_lock = threading.Lock()


def password_work(threads: int) -> PasswordWork:
    """The process's pool (sized by the first caller: settings are per process)."""
    global _work  # noqa: PLW0603 - one pool per process, made on first use
    with _work_lock:
        if _work is None:
            _work = PasswordWork(max(1, threads))
        return _work
