"""Every metric the provisioned Grafana dashboard queries is one the API's /metrics exports (the
only tagwatch process that serves metrics: ingest's counters are committed with its batches and
read back there), read from the real app over the real database."""

from __future__ import annotations

import json
import re

from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.manifests import DEPLOY

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "tagwatch.json"
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def queried_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    names: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names |= set(re.findall(r"\btagwatch_[a-z0-9_]+", target["expr"]))
    return names


def test_every_queried_metric_is_exported(api):
    response = api.get("/metrics")
    assert response.status_code == 200
    exported: set[str] = set()
    # Families are declared even while they have no sample yet (a histogram before any batch):
    # the sample names follow from each family's type.
    for family in text_string_to_metric_families(response.text):
        suffixes = SAMPLE_SUFFIXES.get(family.type, ("",))
        exported |= {family.name + suffix for suffix in suffixes}
    for line in response.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            exported |= {name + s for s in SAMPLE_SUFFIXES.get(kind, ("",))}
    queried = queried_metrics()
    assert len(queried) >= 10
    assert queried <= exported, sorted(queried - exported)
