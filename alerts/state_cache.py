"""Decoded rule states kept between batches, valid only while their row is unchanged.

Profiled on the engine-on ingest path (issue 17), reading a batch's rule_state rows back into
`SubjectState`s was about a sixth of the writer's time: the jsonb text and the packed trail
travel from PostgreSQL, are parsed, and become objects again, although in steady state the row
is exactly the one this worker wrote a batch ago. This cache keeps, per subject, the state the
engine last wrote or read together with the row's *version* (the repository's opaque token:
PostgreSQL's ``xmin``, which changes with every new row version whoever writes it). The
repository's locking read is told the versions held; a row still at that version comes back
without its document or trail, and the engine takes the kept state instead of decoding.

Safety rests on three rules, each tested:

* an entry is taken out of the cache when its state is handed to the rules (they mutate it), and
  goes back only as *pending* with the version of the row the batch wrote;
* pending entries become usable only when the caller says the transaction committed
  (`committed`); a rollback, an engine error or a new batch started without that word drops
  them (`discarded`, `begin`);
* the cache is dropped whole when the database connection is new (another server after a
  failover may reuse a transaction id): `clear`.

A state equals its own encode/decode round trip (checked for every state the engine saved over
the alert and scenario tests), so a kept state and a decoded one evaluate alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tagwatch.alerts.ports import StateRow
from tagwatch.alerts.rules import SubjectState


@dataclass(slots=True)
class Kept:
    """A state and the stored row it equals (for the engine's "nothing changed" test)."""

    version: str
    state: SubjectState
    row: StateRow


class StateCache:
    """At most ``capacity`` subjects' states, first come first kept; 0 turns it off."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._held: dict[int, Kept] = {}
        self._pending: dict[int, Kept] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._held)

    def versions(self, subjects: Iterable[int]) -> dict[int, str]:
        """The versions held for those subjects (what the locking read is told)."""
        held = self._held
        return {sid: held[sid].version for sid in subjects if sid in held}

    def take(self, subject_id: int, version: str | None) -> Kept | None:
        """The kept state if it is at ``version``; either way the entry leaves the cache (the
        caller now owns and may mutate the state)."""
        kept = self._held.pop(subject_id, None)
        if kept is not None and version is not None and kept.version == version:
            self.hits += 1
            return kept
        self.misses += 1
        return None

    def drop(self, subject_id: int) -> None:
        """The entry leaves the cache unused, counted neither hit nor miss: the caller read the
        row whole anyway (the clock's due states)."""
        self._held.pop(subject_id, None)

    def begin(self) -> None:
        """A new transaction: anything staged and not confirmed is forgotten."""
        self._pending.clear()

    def stage(
        self, subject_id: int, version: str | None, state: SubjectState, row: StateRow
    ) -> None:
        """The state as the row the transaction leaves at ``version`` (None: unknown, not kept)."""
        if self.capacity and version is not None:
            self._pending[subject_id] = Kept(version, state, row)
        else:
            self._pending.pop(subject_id, None)

    def committed(self) -> None:
        """The transaction committed: its staged states are the rows' states now."""
        if not self._pending:
            return
        held = self._held
        for sid, kept in self._pending.items():
            # A full cache admits no newcomer: a worker serving more subjects than it holds
            # (round robin over a national caseload) would otherwise evict and re-admit on every
            # batch, paying for the cache and never hitting it. Subjects it holds keep their
            # place (their entry was taken for the batch and comes back here).
            if sid in held or len(held) < self.capacity:
                held[sid] = kept
        self._pending.clear()

    def discarded(self) -> None:
        """The transaction rolled back: its staged states never became rows."""
        self._pending.clear()

    def clear(self) -> None:
        self._held.clear()
        self._pending.clear()
