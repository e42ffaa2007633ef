"""The network thread → decode stage hand-off (ingest/inbox.py): every message once, in order,
batches bounded by count, bytes and time, and a full inbox holding the network thread back."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

from tagwatch.ingest.inbox import Inbox


@dataclass(frozen=True)
class Item:
    n: int
    size: int = 10


def test_every_message_once_in_order_across_threads() -> None:
    """A producer that sometimes pauses (so the consumer waits on an empty inbox, the path where
    a lost wake-up would show) and sometimes floods: the consumer sees 0..N-1 exactly."""
    inbox: Inbox[Item] = Inbox(max_messages=64)
    stop = threading.Event()
    total = 20_000
    rng = random.Random(7)
    pauses = {rng.randrange(total) for _ in range(200)}

    def produce() -> None:
        for n in range(total):
            if n in pauses:
                time.sleep(rng.choice((0.0, 0.0005, 0.003)))
            inbox.put(Item(n), stop)

    producer = threading.Thread(target=produce)
    producer.start()
    seen: list[int] = []
    batches = 0
    started = time.monotonic()
    while len(seen) < total and time.monotonic() - started < 60:
        batch = inbox.take(limit=500, max_bytes=10**9, seconds=0.002, idle_s=0.05)
        assert len(batch) <= 500
        seen.extend(item.n for item in batch)
        batches += bool(batch)
    producer.join(10)
    assert seen == list(range(total))
    assert batches > 1
    assert inbox.empty()


def test_batch_bounds() -> None:
    inbox: Inbox[Item] = Inbox(max_messages=1000)
    stop = threading.Event()
    for n in range(10):
        inbox.put(Item(n, size=100), stop)
    assert [i.n for i in inbox.take(limit=3, max_bytes=10**6, seconds=1.0)] == [0, 1, 2]
    # bytes: the item that crosses the bound is the batch's last
    assert [i.n for i in inbox.take(limit=100, max_bytes=250, seconds=1.0)] == [3, 4, 5]
    started = time.monotonic()
    rest = inbox.take(limit=100, max_bytes=10**6, seconds=0.05)
    waited = time.monotonic() - started
    assert [i.n for i in rest] == [6, 7, 8, 9]
    assert 0.04 <= waited < 1.0  # gathered for its seconds, then returned what it had
    started = time.monotonic()
    assert inbox.take(limit=100, max_bytes=10**6, seconds=1.0, idle_s=0.05) == []
    assert time.monotonic() - started < 1.0


def test_a_message_during_the_gathering_wakes_the_consumer() -> None:
    inbox: Inbox[Item] = Inbox(max_messages=10)
    stop = threading.Event()
    inbox.put(Item(0), stop)
    timer = threading.Timer(0.05, lambda: inbox.put(Item(1), stop))
    timer.start()
    started = time.monotonic()
    batch = inbox.take(limit=2, max_bytes=10**6, seconds=5.0)
    assert [i.n for i in batch] == [0, 1]
    assert time.monotonic() - started < 2.0  # woken by the put, not by the 5 s deadline
    timer.join()


def test_a_full_inbox_holds_the_network_thread_until_the_decoder_takes() -> None:
    inbox: Inbox[Item] = Inbox(max_messages=10)
    stop = threading.Event()
    for n in range(10):
        inbox.put(Item(n), stop)
    done = threading.Event()

    def put_one_more() -> None:
        inbox.put(Item(10), stop)
        done.set()

    producer = threading.Thread(target=put_one_more)
    producer.start()
    assert not done.wait(0.1)  # full: waits
    assert len(inbox.take(limit=4, max_bytes=10**6, seconds=0.0)) == 4
    assert done.wait(2.0)
    assert len(inbox) == 7
    producer.join()
    # a stop request releases a network thread waiting on a full inbox
    for n in range(3):
        inbox.put(Item(11 + n), stop)
    blocked = threading.Thread(target=lambda: inbox.put(Item(99), stop))
    blocked.start()
    time.sleep(0.05)
    stop.set()
    blocked.join(2.0)
    assert not blocked.is_alive()
    assert len(inbox) == 11  # released by the stop, it still appended (nothing is acknowledged)


def test_an_empty_inbox_is_waited_on_for_the_whole_idle_time() -> None:
    inbox: Inbox[Item] = Inbox(max_messages=10)
    started = time.monotonic()
    assert inbox.take(limit=10, max_bytes=10**6, seconds=0.01, idle_s=0.3) == []
    assert time.monotonic() - started >= 0.25


def test_a_stale_wake_up_does_not_end_the_wait_early() -> None:
    """The network thread appends, the decoder takes it and waits again, and only then does the
    network thread set the event for that message: the decoder wakes to an empty inbox and must
    go on waiting for the rest of its time, not return an empty batch."""
    inbox: Inbox[Item] = Inbox(max_messages=10)
    stop = threading.Event()
    inbox.put(Item(0), stop)
    assert [i.n for i in inbox.take(limit=1, max_bytes=10**6, seconds=0.0)] == [0]
    timer = threading.Timer(0.05, inbox._arrived.set)  # the late set() of that put
    later = threading.Timer(0.3, lambda: inbox.put(Item(1), stop))
    timer.start()
    later.start()
    started = time.monotonic()
    batch = inbox.take(limit=1, max_bytes=10**6, seconds=0.0, idle_s=5.0)
    waited = time.monotonic() - started
    timer.join()
    later.join()
    assert [i.n for i in batch] == [1]
    assert 0.25 <= waited < 4.0  # past the stale wake-up, woken by the real put


def test_a_message_arriving_while_the_decoder_waits_wakes_it() -> None:
    inbox: Inbox[Item] = Inbox(max_messages=10)
    stop = threading.Event()
    timer = threading.Timer(0.05, lambda: inbox.put(Item(7), stop))
    timer.start()
    started = time.monotonic()
    batch = inbox.take(limit=1, max_bytes=10**6, seconds=0.0, idle_s=5.0)
    timer.join()
    assert [i.n for i in batch] == [7]
    assert time.monotonic() - started < 2.0
