"""An ingest worker pinned to one CPU (`TAGWATCH_INGEST_CPU`): the process and the threads it
starts afterwards run on that CPU only, chosen among the CPUs it may use. Run in a child process,
so that the test session itself stays free."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux only"
)

CHILD = """
import json, os, threading
from tagwatch.ingest.affinity import allowed_cpus, pin_to_cpu
before = allowed_cpus()
earlier = {{}}
gate = threading.Event()
def _earlier():  # a thread already running when the worker pins itself
    gate.wait()
    earlier.update(thread=sorted(os.sched_getaffinity(0)))
e = threading.Thread(target=_earlier)
e.start()
cpu = pin_to_cpu({index})
gate.set(); e.join()
seen = {{}}
t = threading.Thread(target=lambda: seen.update(thread=sorted(os.sched_getaffinity(0))))
t.start(); t.join()
print(json.dumps({{"before": before, "cpu": cpu, "process": sorted(os.sched_getaffinity(0)),
                  "thread": seen["thread"], "earlier": earlier["thread"]}}))
"""


def _pinned(index: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(index=index)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize("index", [0, 1, 7])
def test_a_pinned_worker_and_its_later_threads_run_on_one_allowed_cpu(index: int):
    result = _pinned(index)
    allowed = result["before"]
    expected = allowed[index % len(allowed)]  # the index wraps round the CPUs it may use
    assert result["cpu"] == expected
    assert result["process"] == [expected]
    assert result["thread"] == [expected]  # a thread takes its mask from its creator
    assert result["earlier"] == [expected]  # and one already running is moved too
