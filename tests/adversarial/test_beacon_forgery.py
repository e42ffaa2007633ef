"""Forged home-beacon reports, made with a tag's own MQTT credentials and a raw MQTT client over
the devices' TLS listener (issue 14).

The wearer holds the tag and so its credentials. Before the approval existed, any tag that
published `beacon_home_enter` was "home" whatever GPS said, so a wearer out during the curfew
could silence the violation with one message. Now the rules trust an enter only when it names
the beacon a supervisor approved for the subject (`detail.beacon`). Three wearers, each 700 m
from home during the curfew with confident fixes:

- A publishes `beacon_home_enter` without a beacon id: not trusted, the violation opens;
- B names a beacon that is not the approved one: not trusted, the violation opens;
- C names the approved beacon: trusted (the beacon id is a pairing, not a secret: a wearer who
  reads it off the unit can replay it, which docs/security.md says, and what to do about it).

Every beacon event is stored with its detail, none is a dead letter: nothing is lost.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest

from tagwatch.store.subjects import approve_home_beacon
from tests.alerts.test_curfew_end_to_end import curfew_alerts, fix_msg, setup
from tests.support import connect, count, fresh_id, publish_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def event_msg(device_id: str, ts: float, kind: str, detail: Any, seq: int) -> tuple[str, bytes]:
    body: dict[str, Any] = {"ts": ts, "type": kind, "seq": seq}
    if detail is not None:
        body["detail"] = detail
    return f"em/v1/{device_id}/event", json.dumps(body).encode()


def test_a_forged_beacon_enter_does_not_hide_a_curfew_breach(
    settings, provision, running_ingest
) -> None:
    start = time.time() - 300
    wearers: dict[str, dict[str, Any]] = {}
    for name, named in (("A", None), ("B", {"beacon": "HB-GUESS"}), ("C", None)):
        device_id = fresh_id(f"bf{name.lower()}")
        password = provision(device_id)
        with psycopg.connect(settings.database_url) as conn:
            sid = setup(conn, device_id, start)
            approved = f"HB-{device_id}"
            approve_home_beacon(conn, sid, approved, "a supervisor")
            conn.commit()
        detail = {"beacon": approved} if name == "C" else named
        wearers[name] = {"device": device_id, "pw": password, "sid": sid, "detail": detail}
    time.sleep(2)  # the engine syncs subjects (and their approved beacons) by revision

    now = time.time()
    for w in wearers.values():
        device_id = w["device"]
        client = connect(settings.mqtt_device_url, device_id, w["pw"])
        try:
            publish_all(
                client,
                [
                    event_msg(device_id, now - 70, "beacon_home_enter", w["detail"], 1),
                    *[fix_msg(device_id, now - 60 + 10 * i, 700, 0, 8, 10 + i) for i in range(5)],
                ],
            )
        finally:
            client.disconnect()

    def opened(name: str) -> bool:
        return len(curfew_alerts(settings, wearers[name]["sid"])) == 1

    assert wait_for(lambda: opened("A") and opened("B"), timeout=45), running_ingest.log()[-3000:]
    # C's fixes went through the same batches and the same engine; give them the same time
    stored = "SELECT count(*) FROM fixes WHERE device_id = %s"
    assert wait_for(lambda: count(settings.database_url, stored, (wearers["C"]["device"],)) == 5)
    time.sleep(3)
    assert curfew_alerts(settings, wearers["C"]["sid"]) == []

    for name in ("A", "B"):
        ((first_fix, _opened, cleared, _details),) = curfew_alerts(settings, wearers[name]["sid"])
        assert cleared is None
        assert abs(float(first_fix) - (now - 60)) < 0.01  # from the first away fix on

    devices = [w["device"] for w in wearers.values()]
    with psycopg.connect(settings.database_url) as conn:
        events = conn.execute(
            "SELECT device_id, type, detail FROM device_events WHERE device_id = ANY(%s)",
            (devices,),
        ).fetchall()
        dead = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE sender = ANY(%s)", (devices,)
        ).fetchone()[0]
    assert dead == 0
    assert sorted((d, t, detail) for d, t, detail in events) == sorted(
        (w["device"], "beacon_home_enter", w["detail"]) for w in wearers.values()
    )
