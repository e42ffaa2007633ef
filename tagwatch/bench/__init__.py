"""The benchmarks behind `tagwatch bench` (ingest, geofence, alerts), sharing one harness
(`harness`: the webhook receiver the test suite uses too, and the process runner)."""
