"""Ingest waits a database outage out (retrying with backoff, forever) and a stop request cuts the
wait short. The integration tests (test_outages.py, test_crash_safety.py) show that no fix is
lost; these show the retry policy itself, without a database."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
import tenacity

from tagwatch.ingest.service import DATABASE_BACKOFF, database_retrying


class Flaky:
    """Fails with the given error ``failures`` times, then answers."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.calls = 0
        self.error = error or psycopg.OperationalError("connection refused")

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "stored"


def test_an_outage_is_waited_out() -> None:
    flaky = Flaky(failures=5)
    retrying = database_retrying(threading.Event(), "test", wait=tenacity.wait_fixed(0.01))
    assert retrying(flaky) == "stored"
    assert flaky.calls == 6


def test_a_bug_is_not_retried() -> None:
    flaky = Flaky(failures=1, error=psycopg.errors.UniqueViolation("duplicate key"))
    retrying = database_retrying(threading.Event(), "test", wait=tenacity.wait_fixed(0.01))
    with pytest.raises(psycopg.errors.UniqueViolation):
        retrying(flaky)
    assert flaky.calls == 1


def test_a_stop_request_ends_a_long_wait_at_once() -> None:
    stop = threading.Event()
    flaky = Flaky(failures=10**9)
    retrying = database_retrying(stop, "test", wait=tenacity.wait_fixed(60))
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        retrying(flaky)
    assert time.monotonic() - started < 5
    assert flaky.calls == 2  # the first, and the last one after the interrupted wait


def test_the_backoff_grows_to_three_seconds_with_jitter() -> None:
    def wait(attempt: int) -> float:
        state = tenacity.RetryCallState(None, None, (), {})
        state.attempt_number = attempt
        return DATABASE_BACKOFF(state)

    for attempt, step in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (50, 3.0)):
        waits = [wait(attempt) for _ in range(200)]
        assert all(step / 2 <= w <= step for w in waits), (attempt, min(waits), max(waits))
        assert max(waits) - min(waits) > step / 10  # jittered: workers do not retry in step
