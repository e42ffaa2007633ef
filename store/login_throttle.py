"""The login throttle's counters: failures per client address, per user name, and the addresses
each user logged in from (the policy is api/login_throttle.py's; docs/api.md "Login throttling").

Each charge is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE budget left RETURNING``:
PostgreSQL serialises those on the row, so of any number of parallel guesses exactly the budget
is charged and the rest get no row back. That is what makes the check and the count one atomic
step; the caller runs the charges in one transaction (address first, then name, so every
transaction locks in the same order) and rolls it back when either refuses.

Nothing here commits: the caller decides when a count becomes visible to other processes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection

CHARGE_ADDRESS = """
INSERT INTO login_address_throttle AS t (address, failures, window_start, last_failure_at)
VALUES (%(key)s, 1, now(), now())
ON CONFLICT (address) DO UPDATE SET
    failures = CASE WHEN t.window_start < now() - %(window)s THEN 1 ELSE t.failures + 1 END,
    window_start = CASE WHEN t.window_start < now() - %(window)s THEN now()
                        ELSE t.window_start END,
    strikes = CASE WHEN t.last_failure_at < now() - %(forget)s THEN 0 ELSE t.strikes END,
    last_failure_at = now()
WHERE (t.blocked_until IS NULL OR t.blocked_until <= now())
  AND (t.failures < %(budget)s OR t.window_start < now() - %(window)s)
RETURNING failures
"""

CHARGE_NAME = """
INSERT INTO login_throttle AS t (username, failures, window_start, last_failure_at)
VALUES (%(key)s, 1, now(), now())
ON CONFLICT (username) DO UPDATE SET
    failures = CASE WHEN t.window_start < now() - %(window)s THEN 1 ELSE t.failures + 1 END,
    window_start = CASE WHEN t.window_start < now() - %(window)s THEN now()
                        ELSE t.window_start END,
    last_failure_at = now()
WHERE t.failures < %(budget)s OR t.window_start < now() - %(window)s
RETURNING failures
"""


async def is_familiar(
    conn: AsyncConnection[Any], username: str, address: str, within: timedelta
) -> bool:
    """Whether ``username`` logged in from ``address`` within ``within``."""
    row = await (
        await conn.execute(
            "SELECT EXISTS (SELECT 1 FROM login_familiar_addresses WHERE username = %s"
            " AND address = %s AND last_success_at > now() - %s)",
            (username, address, within),
        )
    ).fetchone()
    return bool(row and row[0])


async def charge_address(
    conn: AsyncConnection[Any],
    address: str,
    *,
    budget: int,
    window: timedelta,
    forget: timedelta,
) -> bool:
    """Count one failure against ``address`` unless it is held back or its ``budget`` in the
    ``window`` is spent (False: nothing counted). Strikes are forgotten after ``forget`` without
    a failure."""
    row = await (
        await conn.execute(
            CHARGE_ADDRESS, {"key": address, "budget": budget, "window": window, "forget": forget}
        )
    ).fetchone()
    return row is not None


async def charge_name(
    conn: AsyncConnection[Any], username: str, *, budget: int, window: timedelta
) -> bool:
    """Count one failure against ``username`` unless its ``budget`` in the ``window`` is spent
    (False: nothing counted)."""
    row = await (
        await conn.execute(CHARGE_NAME, {"key": username, "budget": budget, "window": window})
    ).fetchone()
    return row is not None


async def address_blocked_for(conn: AsyncConnection[Any], address: str) -> float | None:
    """Seconds until ``address`` is no longer held back (negative once past); None when it has no
    row or no hold."""
    row = await (
        await conn.execute(
            "SELECT EXTRACT(EPOCH FROM blocked_until - now()) FROM login_address_throttle"
            " WHERE address = %s",
            (address,),
        )
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def name_window_left(
    conn: AsyncConnection[Any], username: str, window: timedelta
) -> float | None:
    """Seconds until ``username``'s current window ends; None when the name has no row."""
    row = await (
        await conn.execute(
            "SELECT EXTRACT(EPOCH FROM window_start + %s - now()) FROM login_throttle"
            " WHERE username = %s",
            (window, username),
        )
    ).fetchone()
    return None if row is None else float(row[0])


async def hold_back_address(
    conn: AsyncConnection[Any], address: str, *, budget: int, base_s: float, cap_s: float
) -> None:
    """If ``address`` has spent its ``budget``, hold it back for ``base_s`` x 2^strikes (at most
    ``cap_s``), add a strike and start a new window."""
    await conn.execute(
        "UPDATE login_address_throttle SET"
        " blocked_until = now() + least(%(base)s * power(2, least(strikes, 40)), %(cap)s)"
        "  * interval '1 second',"
        " strikes = strikes + 1, failures = 0, window_start = now()"
        " WHERE address = %(key)s AND failures >= %(budget)s",
        {"key": address, "budget": budget, "base": base_s, "cap": cap_s},
    )


async def uncount_address(conn: AsyncConnection[Any], address: str) -> None:
    """Give one counted failure back to ``address`` (never below zero)."""
    await conn.execute(
        "UPDATE login_address_throttle SET failures = greatest(failures - 1, 0) WHERE address = %s",
        (address,),
    )


async def uncount_name(conn: AsyncConnection[Any], username: str) -> None:
    """Give one counted failure back to ``username`` (never below zero)."""
    await conn.execute(
        "UPDATE login_throttle SET failures = greatest(failures - 1, 0) WHERE username = %s",
        (username,),
    )


async def remember_familiar(conn: AsyncConnection[Any], username: str, address: str) -> None:
    """``username`` logged in from ``address`` now."""
    await conn.execute(
        "INSERT INTO login_familiar_addresses (username, address) VALUES (%s, %s)"
        " ON CONFLICT (username, address) DO UPDATE SET last_success_at = now()",
        (username, address),
    )


async def forget_stale(
    conn: AsyncConnection[Any], keep: timedelta, familiar_for: timedelta
) -> None:
    """Drop counters without a failure for ``keep`` (and no hold still running), and familiar
    addresses not used for ``familiar_for``."""
    await conn.execute(
        "DELETE FROM login_address_throttle WHERE last_failure_at < now() - %s"
        " AND (blocked_until IS NULL OR blocked_until < now())",
        (keep,),
    )
    await conn.execute("DELETE FROM login_throttle WHERE last_failure_at < now() - %s", (keep,))
    await conn.execute(
        "DELETE FROM login_familiar_addresses WHERE last_success_at < now() - %s",
        (familiar_for,),
    )


async def lift_name(conn: AsyncConnection[Any], username: str) -> None:
    """Forget the name's counted failures (an admin reset the password)."""
    await conn.execute("DELETE FROM login_throttle WHERE username = %s", (username,))
