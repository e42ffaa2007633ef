"""The rules' clock for replays (``rule_clock``): how scenario time maps onto wall time.

A live platform has no row and its rules run on the wall clock. The scenario runner writes one
row while it plays (origin, wall origin, speed) and how far it has published (``played_until``,
migration 0015), so silences and curfews are judged in scenario time and never run ahead of the
player; the engine's repository reads it (store.engine_repository).
"""

from __future__ import annotations

from typing import Any

import psycopg


def set_clock(
    conn: psycopg.Connection[Any], origin: float, wall_origin: float, speed: float
) -> None:
    """Scenario time ``origin`` (epoch seconds) is wall time ``wall_origin``, and scenario time
    runs ``speed`` times as fast; replaces any clock set before."""
    with conn.transaction():
        conn.execute("DELETE FROM rule_clock")
        conn.execute(
            "INSERT INTO rule_clock (origin, wall_origin, speed)"
            " VALUES (to_timestamp(%s), to_timestamp(%s), %s)",
            (origin, wall_origin, speed),
        )


def set_played_until(conn: psycopg.Connection[Any], at: float | None) -> None:
    """How far the player has published (None: on time), so the rules' clock waits for it."""
    conn.execute("UPDATE rule_clock SET played_until = to_timestamp(%s)", (at,))


def clear(conn: psycopg.Connection[Any]) -> None:
    """Give the rules back the wall clock."""
    with conn.transaction():
        conn.execute("DELETE FROM rule_clock")
