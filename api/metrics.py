"""Prometheus text built from the counters ingest commits with each batch.

Reading them from the database (rather than from process memory) makes the figures survive
restarts, add up across several ingest workers, and agree exactly with what was stored.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from psycopg import AsyncConnection

from tagwatch.store import metrics as store_metrics

COUNTERS = {
    "messages_total": ("tagwatch_ingest_messages", "MQTT messages taken by ingest"),
    "fixes_stored_total": ("tagwatch_ingest_fixes_stored", "fixes stored (each once)"),
    "fix_duplicates_total": ("tagwatch_ingest_fix_duplicates", "repeated fixes not stored again"),
    "events_stored_total": ("tagwatch_ingest_events_stored", "device events stored"),
    "event_duplicates_total": ("tagwatch_ingest_event_duplicates", "repeated events"),
    "dead_letters_not_stored_total": (
        "tagwatch_ingest_dead_letters_not_stored",
        "refused input beyond the per-device dead-letter rate: counted, not kept",
    ),
    "phone_messages_stored_total": (
        "tagwatch_ingest_phone_messages_stored",
        "OwnTracks messages kept in phone_messages (each once)",
    ),
    "phone_message_duplicates_total": (
        "tagwatch_ingest_phone_message_duplicates",
        "repeated OwnTracks messages not stored again",
    ),
}


class _Snapshot:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families


async def _acknowledgement_families(conn: AsyncConnection) -> list[Any]:
    """Time to acknowledge per region (docs/alerts.md "Escalation"): quantiles over the alerts
    acknowledged in the last 24 hours, and the alerts escalated because nobody did."""
    waits = GaugeMetricFamily(
        "tagwatch_alert_time_to_acknowledge_seconds",
        "time from raising an alert to its acknowledgement, alerts acknowledged in the last"
        " 24 h, by region (quantile 0.5 and 0.9)",
        labels=["region", "quantile"],
    )
    counted = GaugeMetricFamily(
        "tagwatch_alerts_acknowledged_24h",
        "alerts acknowledged in the last 24 h, by region",
        labels=["region"],
    )
    for region, count, median, p90 in await store_metrics.time_to_acknowledge(conn):
        counted.add_metric([region], count)
        for quantile, value in (("0.5", median), ("0.9", p90)):
            if value is not None:
                waits.add_metric([region, quantile], value)
    escalated = CounterMetricFamily(
        "tagwatch_alerts_escalated_unacknowledged",
        "alerts escalated because nobody acknowledged them in time, by region",
        labels=["region"],
    )
    for region, count in await store_metrics.escalated_unacknowledged(conn):
        escalated.add_metric([region], count)
    return [waits, counted, escalated]


async def render_metrics(conn: AsyncConnection) -> bytes:
    values = await store_metrics.ingest_counters(conn)
    families: list[Any] = []
    for key, (name, doc) in COUNTERS.items():
        family = CounterMetricFamily(name, doc)
        family.add_metric([], values.get(key, {}).get("", 0.0))
        families.append(family)
    dead = CounterMetricFamily(
        "tagwatch_ingest_dead_letters",
        "refused input (dead letters, kept or only counted)",
        labels=["reason"],
    )
    for reason, value in sorted(values.get("dead_letters_total", {}).items()):
        dead.add_metric([reason], value)
    families.append(dead)
    ignored = CounterMetricFamily(
        "tagwatch_ingest_messages_ignored",
        "messages acknowledged with nothing to store (OwnTracks' empty retained clear, the"
        " platform's own commands on a phone's cmd topic)",
        labels=["reason"],
    )
    for reason, value in sorted(values.get("messages_ignored_total", {}).items()):
        ignored.add_metric([reason], value)
    families.append(ignored)
    # Declared before the first batch too, so that dashboards and alert rules find the family
    # on a new site (deploy/grafana; tests/deploy/test_dashboard_metrics.py).
    histogram = HistogramMetricFamily(
        "tagwatch_ingest_batch_seconds", "time to decode, write and commit one batch"
    )
    buckets = values.get("ingest_batch_seconds_bucket", {})
    if buckets:
        ordered = sorted(buckets.items(), key=lambda kv: float(kv[0]))
        histogram.add_metric(
            [],
            [("+Inf" if float(b) == float("inf") else b, v) for b, v in ordered],
            sum_value=values.get("ingest_batch_seconds_sum", {}).get("", 0.0),
        )
    families.append(histogram)
    open_alerts = GaugeMetricFamily("tagwatch_alerts_open", "alerts not yet resolved")
    open_alerts.add_metric([], await store_metrics.open_alerts(conn))
    families.append(open_alerts)
    families += await _acknowledgement_families(conn)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return generate_latest(registry)
