"""`tagwatch bench ingest`'s two-worker measurement, with tiny numbers: two ingest worker processes
on the bench's shared subscription drain a backlog the broker queued for their absent sessions,
each doing part of it, the engine on, every fix stored once and no engine error."""

from __future__ import annotations

import os

import pytest

from tagwatch.bench.ingest import (
    _engine_messages,
    _register_subjects,
    check_stored,
    measure_workers,
)
from tagwatch.settings import MqttEndpoint
from tests.support import fresh_id

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_bench_workers_drain_a_queued_backlog_storing_each_fix_once(settings, tmp_path):
    prefix = fresh_id("bw")
    # Enough fixes that each thread's CPU is sure to show at the clock's 10 ms tick: with 400,
    # each worker's MQTT client spent about 8 ms in all and once read as 0 (a TimescaleDB run).
    devices, fixes = 100, 4_000
    _register_subjects(settings.database_url, prefix, devices)
    messages = _engine_messages(prefix, devices, fixes)
    assert settings.mqtt_gateway_url
    drained = measure_workers(
        settings,
        MqttEndpoint.parse(settings.mqtt_gateway_url),
        messages,
        fixes,
        2,
        tmp_path,
        pin=True,
    )
    check = check_stored(settings.database_url, prefix, fixes, drained.ids, drained.logs)
    assert check.ok, check.describe()
    assert check.rows == fixes
    # Mosquitto queued the share round-robin for both absent members
    assert all(stored > 0 for stored in check.per_worker.values()), check.describe()
    assert sum(check.per_worker.values()) == fixes
    assert drained.fixes_per_s > 0
    assert drained.msgs_per_s > 0
    assert len(drained.worker_cpu_s) == 2
    assert all(cpu > 0 for cpu in drained.worker_cpu_s)
    # where the workers' CPU went, by thread: the MQTT client and the writer both worked, and
    # the split accounts for the workers' CPU (to the clock's 10 ms tick per thread)
    roles = drained.thread_cpu_s
    assert roles.get("MQTT client", 0) > 0 and roles.get("write and engine", 0) > 0, roles
    assert abs(sum(roles.values()) - sum(drained.worker_cpu_s)) < 0.1 + 0.02 * len(roles), roles
    micros = drained.micros_per_fix(fixes)
    assert micros["all"] == pytest.approx(1e6 * sum(drained.worker_cpu_s) / fixes)
    assert "of ingest's sessions active per sample" in drained.sessions
    # pinned (TAGWATCH_INGEST_CPU = k): each worker said which of the allowed CPUs it runs on
    cpus = sorted(os.sched_getaffinity(0))
    for k, log in enumerate(drained.logs):
        assert f"its threads run on CPU {cpus[k % len(cpus)]}" in log.read_text(), k
