"""Quarantine for a sender that floods ingest with refused input.

Mosquitto cannot rate-limit one client's publishes, and every message reaches ingest through the
one queue of its session, in order. A wearer who floods with malformed payloads (or batches of
500 invalid fixes, 500 dead letters a message) would otherwise make ingest spend its time
validating garbage while honest devices' fixes wait behind it. So a sender whose input was refused
more than `refused_per_minute` times in the current minute is quarantined until the minute ends:
its messages are no longer decoded, each is refused whole as `sender_quarantined` (counted, and
kept under the same per-sender dead-letter limit as any refused input, prefix and SHA-256).

An honest device refuses nothing, however much it uploads (a tag emptying a week's buffer sends
only valid fixes), so it is never quarantined. The price is that a device whose firmware sends
garbage mixed with real fixes loses its real fixes to dead letters for the rest of such a minute;
they are counted by sender and reason, never silently dropped. The state is per ingest process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WINDOW_S = 60.0


@dataclass
class FloodGuard:
    refused_per_minute: int
    _window: dict[str, tuple[float, int]] = field(default_factory=dict)

    def quarantined(self, sender: str, now: float) -> bool:
        entry = self._window.get(sender)
        if entry is None:
            return False
        started, refused = entry
        if now - started >= WINDOW_S:
            del self._window[sender]
            return False
        return refused > self.refused_per_minute

    def record(self, sender: str, refused: int, now: float) -> None:
        if refused <= 0:
            return
        started, count = self._window.get(sender, (now, 0))
        if now - started >= WINDOW_S:
            started, count = now, 0
        self._window[sender] = (started, count + refused)
        if len(self._window) > 100_000:  # many senders: forget the finished windows
            self._window = {s: e for s, e in self._window.items() if now - e[0] < WINDOW_S}
