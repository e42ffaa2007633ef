"""What a batch hands the engine: its new fixes and events, column by column, typed.

The engine reads six fields of a fix and three of an event. It used to take ingest's stored row
tuples and pick them out by position, so the rule core depended on the storage layout of the
fixes table. These columns are the engine's own input type: ingest (``ingest.decode``) and the
offline scorer build them from whatever rows they hold, and the engine never sees a row.
Times are epoch seconds (timezone-free by construction); a fix without a reported accuracy
carries NaN: its accuracy is unknown, so it counts as communication and never as evidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

MODE_UNKNOWN: Final = -99  # no `m` sent (OwnTracks' own -1 means quiet)


@dataclass(frozen=True, slots=True)
class NewFixes:
    """Fixes stored for the first time in this batch, one list per field, same length."""

    device_id: Sequence[str] = ()
    ts: Sequence[float] = ()  # epoch seconds
    lon: Sequence[float] = ()
    lat: Sequence[float] = ()
    acc: Sequence[float] = ()  # metres, 68 % radius
    src: Sequence[str] = ()  # gps, wifi or cell

    def __post_init__(self) -> None:
        n = len(self.device_id)
        lengths = (len(self.ts), len(self.lon), len(self.lat), len(self.acc), len(self.src))
        if any(length != n for length in lengths):
            raise ValueError(f"fix columns of unequal length: {n}, {lengths}")

    def __len__(self) -> int:
        return len(self.device_id)

    @classmethod
    def of(cls, fixes: Iterable[tuple[str, float, float, float, float, str]]) -> NewFixes:
        """Columns from (device_id, ts, lon, lat, acc, src) tuples."""
        rows = list(fixes)
        if not rows:
            return cls()
        device_id, ts, lon, lat, acc, src = (list(column) for column in zip(*rows, strict=True))
        return cls(device_id, ts, lon, lat, acc, src)


def beacon_of(detail: Any) -> str | None:
    """The beacon an event names: ``detail["beacon"]`` when ``detail`` is an object and that is
    a string (docs/contract-extensions.md), else None. The same reading as the SQL function
    ``beacon_of`` (migration 0019), so stored and live events are judged alike."""
    if isinstance(detail, dict):
        beacon = detail.get("beacon")
        if isinstance(beacon, str):
            return beacon
    return None


@dataclass(frozen=True, slots=True)
class NewEvents:
    """Device events stored for the first time in this batch, one list per field. ``beacon``
    is the beacon each event names (`beacon_of` its detail); empty means none names one."""

    device_id: Sequence[str] = ()
    ts: Sequence[float] = ()  # epoch seconds
    type: Sequence[str] = ()
    beacon: Sequence[str | None] = ()

    def __post_init__(self) -> None:
        if not len(self.device_id) == len(self.ts) == len(self.type):
            raise ValueError("event columns of unequal length")
        if self.beacon and len(self.beacon) != len(self.device_id):
            raise ValueError("event beacon column of unequal length")

    def __len__(self) -> int:
        return len(self.device_id)

    def beacons(self) -> Sequence[str | None]:
        """The beacon column, one entry per event."""
        return self.beacon if self.beacon else [None] * len(self.device_id)

    @classmethod
    def of(cls, events: Iterable[tuple[str, float, str, str | None]]) -> NewEvents:
        """Columns from (device_id, ts, type, beacon) tuples."""
        rows = list(events)
        if not rows:
            return cls()
        device_id, ts, type_, beacon = (list(column) for column in zip(*rows, strict=True))
        return cls(device_id, ts, type_, beacon)


@dataclass(frozen=True, slots=True)
class NewPhoneReports:
    """What a phone said about itself, one per OwnTracks message stored for the first time.

    ``kind`` is ``location`` (a fresh position, also a fix), ``ping`` (a `t: "p"` location: the
    phone is alive, its position is not fresh), ``lwt`` (the broker says the connection was
    lost: not communication from the phone), or ``message`` (anything else it sent). ``batt``
    is NaN when unknown; ``charging`` is OwnTracks `bs` (0 unknown, also when not sent,
    1 unplugged, 2 charging, 3 full); ``mode`` is `m` (-1 quiet, 0 manual, 1 significant,
    2 move) or ``MODE_UNKNOWN`` when not sent; ``conn`` is `w`, `m`, `o` or ''."""

    device_id: Sequence[str] = ()
    ts: Sequence[float] = ()
    kind: Sequence[str] = ()
    batt: Sequence[float] = ()
    charging: Sequence[int] = ()
    mode: Sequence[int] = ()
    conn: Sequence[str] = ()

    def __post_init__(self) -> None:
        n = len(self.device_id)
        lengths = (
            len(self.ts),
            len(self.kind),
            len(self.batt),
            len(self.charging),
            len(self.mode),
            len(self.conn),
        )
        if any(length != n for length in lengths):
            raise ValueError(f"phone report columns of unequal length: {n}, {lengths}")

    def __len__(self) -> int:
        return len(self.device_id)

    @classmethod
    def of(cls, reports: Iterable[tuple[str, float, str, float, int, int, str]]) -> NewPhoneReports:
        """Columns from (device_id, ts, kind, batt, charging, mode, conn) tuples."""
        rows = list(reports)
        if not rows:
            return cls()
        columns = [list(column) for column in zip(*rows, strict=True)]
        return cls(*columns)
