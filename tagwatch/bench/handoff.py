"""`tagwatch bench handoff`: the network thread → decoder hand-off of an ingest worker, alone.

Every message a worker receives crosses this hand-off once, so its CPU is paid per fix. The
bench moves ``messages`` small messages from a producer thread (paho's network loop in a
worker) to a consumer thread that gathers batches as ingest's decode stage does (up to 2,000
messages or 50 ms), both kept on one CPU as `TAGWATCH_INGEST_CPU` keeps a worker's threads, and
prints the process CPU a message: ``queue.Queue`` with the collector ingest used until
2026-12-07 (the baseline, kept here), against ``ingest.inbox.Inbox``, alternated ``rounds``
times in the same run.
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tagwatch.ingest import affinity
from tagwatch.ingest.inbox import Inbox

BATCH_MESSAGES = 2000  # the defaults of TAGWATCH_INGEST_BATCH_MESSAGES and _SECONDS
BATCH_SECONDS = 0.05
QUEUE_MESSAGES = 20000
YIELD_EVERY = 20  # the producer lets the consumer run now and then, as a network read does


@dataclass(slots=True)
class Message:
    n: int

    @property
    def size(self) -> int:
        return 100


def _collect_from_queue(inbox: queue.Queue[Message]) -> list[Message]:
    """The collector of ingest/service.py before the Inbox (the baseline)."""
    try:
        first = inbox.get(timeout=0.2)
    except queue.Empty:
        return []
    batch = [first]
    deadline = time.monotonic() + BATCH_SECONDS
    while len(batch) < BATCH_MESSAGES:
        remaining = deadline - time.monotonic()
        try:
            batch.append(inbox.get_nowait() if remaining <= 0 else inbox.get(timeout=remaining))
        except queue.Empty:
            break
        if remaining <= 0:
            while len(batch) < BATCH_MESSAGES:
                try:
                    batch.append(inbox.get_nowait())
                except queue.Empty:
                    break
            break
    return batch


def _through_queue(messages: int) -> int:
    inbox: queue.Queue[Message] = queue.Queue(maxsize=QUEUE_MESSAGES)
    return _drive(messages, inbox.put, lambda: _collect_from_queue(inbox))


def _through_inbox(messages: int) -> int:
    inbox: Inbox[Message] = Inbox(QUEUE_MESSAGES)
    stop = threading.Event()
    return _drive(
        messages,
        lambda m: inbox.put(m, stop),
        lambda: inbox.take(BATCH_MESSAGES, 1 << 40, BATCH_SECONDS),
    )


def _drive(messages: int, put: Callable[[Message], None], take: Callable[[], list[Message]]) -> int:
    """Produce in this thread, consume in another; how many the consumer saw in order."""
    seen = 0
    in_order = True

    def consume() -> None:
        nonlocal seen, in_order
        while seen < messages:
            for message in take():
                in_order &= message.n == seen
                seen += 1

    consumer = threading.Thread(target=consume, name="bench-handoff-consumer")
    consumer.start()
    for n in range(messages):
        put(Message(n))
        if n % YIELD_EVERY == 0:
            time.sleep(0)
    consumer.join()
    if seen != messages or not in_order:
        raise AssertionError(
            f"the hand-off lost or reordered messages: {seen} of {messages}, in order {in_order}"
        )
    return seen


def run(
    messages: int = 200_000, rounds: int = 3, echo: Callable[[str], object] = print
) -> dict[str, float]:
    """Alternate the two hand-offs ``rounds`` times; return the median µs of CPU a message."""
    before = set(affinity.allowed_cpus())
    cpu = affinity.pin_to_cpu(0) if before else None
    echo(
        f"bench handoff: {messages:,} messages a run, batches of up to {BATCH_MESSAGES:,}"
        f" or {BATCH_SECONDS * 1000:.0f} ms"
        + (f", producer and consumer on CPU {cpu}" if cpu is not None else "")
    )
    results: dict[str, list[float]] = {"queue.Queue (before)": [], "Inbox": []}
    try:
        for _ in range(rounds):
            for name, through in (
                ("queue.Queue (before)", _through_queue),
                ("Inbox", _through_inbox),
            ):
                started_cpu = time.process_time()
                started = time.perf_counter()
                seen = through(messages)
                cpu_us = 1e6 * (time.process_time() - started_cpu) / seen
                results[name].append(cpu_us)
                echo(
                    f"  {name:<22} {cpu_us:5.2f} µs of CPU a message,"
                    f" {seen / (time.perf_counter() - started):>10,.0f} messages/s"
                )
    finally:
        if before:
            affinity.set_process_cpus(before)
    figures = {
        "queue_us_per_message": statistics.median(results["queue.Queue (before)"]),
        "inbox_us_per_message": statistics.median(results["Inbox"]),
    }
    echo(
        f"  median: {figures['queue_us_per_message']:.2f} → {figures['inbox_us_per_message']:.2f}"
        " µs of CPU a message"
    )
    return figures
