"""The audit log of location reads (and of admin changes): who, role, which subject or area,
when, and why if they said (``reason``, kept in ``detail``).

Rows are hash-chained by the database at the commit of the transaction that wrote them (see
store/migrations/0004_security.sql): the chain is serialised on a one-row head, so concurrent
requests never fork it, and `tagwatch audit verify` names the first row that was altered, deleted
or inserted out of chain.

Victims' data (store/migrations/0013_victim_data.sql) is read by supervisors and admins only,
and every read of it is audited like a location read: a row about a victim subject carries
``"victim": true`` in its detail (added here, in SQL, whatever route wrote it), and a read of
zones that protect a victim writes one ``victim_zone`` row per victim, naming the zones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from psycopg import AsyncConnection

from tagwatch.api.security import User
from tagwatch.store import audit as store_audit


async def record(
    conn: AsyncConnection, user: User, action: str, subject_id: int | None, **detail: Any
) -> None:
    """Written in the caller's transaction, so a read that fails to be audited is not served,
    and a read that is rolled back leaves no row (nor a link in the chain)."""
    await store_audit.append(conn, user.username, user.role, action, subject_id, detail)


async def record_victim_zones(
    conn: AsyncConnection,
    user: User,
    protected: Iterable[tuple[int, int]],
    **detail: Any,
) -> None:
    """One ``victim_zone`` row per victim whose protecting zones ``user`` was shown:
    ``protected`` holds (victim subject id, zone id) pairs."""
    zones: dict[int, list[int]] = {}
    for victim, zone_id in protected:
        zones.setdefault(victim, []).append(zone_id)
    for victim, ids in sorted(zones.items()):
        await record(conn, user, "victim_zone", victim, zone_ids=sorted(set(ids)), **detail)
