"""A decode stage that dies stops its worker (and says why) instead of leaving paho receiving
into an inbox nobody empties; `tagwatch ingest` then exits non-zero for its supervisor."""

from __future__ import annotations

import threading

from tagwatch.ingest.service import IngestService


def test_a_failed_decode_stage_stops_the_worker(settings, monkeypatch) -> None:
    service = IngestService(settings.model_copy(update={"alerts_enabled": False}))

    def broken() -> list:
        raise RuntimeError("a bug in the decode stage")

    monkeypatch.setattr(service, "_collect", broken)
    decoder = threading.Thread(target=service._decode_loop)
    decoder.start()
    decoder.join(5)
    assert not decoder.is_alive()
    assert service.stop_requested.is_set()
    assert isinstance(service.failure, RuntimeError)
    service.registry.close()
