"""Login throttling per client address and per user name, shared by every API process.

The policy (docs/api.md "Login throttling" has the operator's version):

* **A guess is reserved before the password is checked.** One transaction charges the client
  address and (unless the address is familiar, below) the user name with an ``INSERT ... ON
  CONFLICT DO UPDATE ... WHERE budget left`` each; PostgreSQL serializes those on the row, so of
  any number of parallel guesses exactly the budget gets through and the rest are answered 429
  without the password ever being verified. If either row refuses, the transaction rolls back and
  nothing is charged. A correct password gives its reservation back.
* **Per address: exponential backoff.** ``address_budget`` failures per window; the failure that
  spends it holds the address back for ``backoff_s`` x 2^strikes (capped at ``backoff_max_s``).
  Strikes are forgotten after ``backoff_max_s`` without a failure. An attacker can only slow down
  their own address (and whoever shares it).
* **Per name: a budget, never a lock.** ``name_budget`` failed guesses per window from addresses
  the user has not logged in from. When it is spent, such addresses wait until the window ends
  (Retry-After says when); the name is never locked beyond the window, and refused guesses are not
  counted, so a flood does not push the end further away.
* **Familiar addresses.** An address the user logged in from within ``familiar_s`` is not charged
  to (nor stopped by) the name's budget, only by its own address budget: an attacker spending a
  name's budget from elsewhere does not keep the real user out at their usual workstation.

Unknown user names are counted exactly like known ones, so the answers do not reveal which names
exist.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import HTTPException, status
from psycopg import AsyncConnection, Rollback

from tagwatch.store import login_throttle as store

FAMILIAR_FOR = timedelta(days=90)


@dataclass(frozen=True)
class LoginPolicy:
    name_budget: int = 5
    window_s: float = 900.0
    address_budget: int = 20
    backoff_s: float = 900.0
    backoff_max_s: float = 86400.0
    familiar_s: float = FAMILIAR_FOR.total_seconds()

    @classmethod
    def from_settings(cls, settings: Any) -> LoginPolicy:
        """From TAGWATCH_LOGIN_* (``login_max_failures`` is the name's budget,
        ``login_lockout_s`` the address's first backoff)."""
        default = cls()
        return cls(
            name_budget=int(getattr(settings, "login_max_failures", default.name_budget)),
            window_s=float(getattr(settings, "login_failure_window_s", default.window_s)),
            address_budget=int(
                getattr(settings, "login_address_max_failures", default.address_budget)
            ),
            backoff_s=float(getattr(settings, "login_lockout_s", default.backoff_s)),
            backoff_max_s=float(getattr(settings, "login_backoff_max_s", default.backoff_max_s)),
        )


@dataclass(frozen=True)
class Reservation:
    """One guess that passed the throttle; hand it back with ``succeeded`` or ``failed``."""

    address: str
    username: str
    familiar: bool


@dataclass(frozen=True)
class Refusal:
    """No guess now: which limit, and for how long."""

    scope: str  # "address" or "name"
    retry_after_s: float

    def http(self) -> HTTPException:
        seconds = max(1, math.ceil(self.retry_after_s))
        what = "from this address" if self.scope == "address" else "for this user name"
        return HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail={
                "reason": f"too_many_failed_logins_{self.scope}",
                "message": f"too many failed logins {what}: try again in {seconds} s",
                "retry_after_s": seconds,
            },
            headers={"Retry-After": str(seconds)},
        )


class RefusalCache:
    """Refusals this process has just had from the database, kept for a few seconds so that a
    flood of guesses is answered 429 from memory instead of each taking a database round trip.

    It only ever refuses (the counting stays in PostgreSQL), and only what the database refused a
    moment ago: an address held back, or an (address, name) pair whose name budget is spent (the
    address is unfamiliar: it could only become familiar by a login it is refused). Entries live
    at most ``ttl_s`` (so a password reset that gives a name's budget back takes effect within
    that), and at most ``max_entries`` are kept (the oldest go first).
    """

    def __init__(self, ttl_s: float = 2.0, max_entries: int = 10000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str | None], tuple[float, float, str]] = {}

    def refusal(self, address: str, username: str) -> Refusal | None:
        now = time.monotonic()
        for key in ((address, None), (address, username)):
            entry = self._entries.get(key)
            if entry is None:
                continue
            expires, retry_at, scope = entry
            if expires <= now:
                del self._entries[key]
                continue
            return Refusal(scope, retry_at - now)
        return None

    def remember(self, address: str, username: str, refusal: Refusal) -> None:
        now = time.monotonic()
        key = (address, None if refusal.scope == "address" else username)
        retry_at = now + refusal.retry_after_s
        self._entries.pop(key, None)
        self._entries[key] = (min(retry_at, now + self.ttl_s), retry_at, refusal.scope)
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]


def _interval(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


async def reserve(
    conn: AsyncConnection, address: str, username: str, policy: LoginPolicy
) -> Reservation | Refusal:
    """Charge one guess to the address and the name, atomically, or say why not (committed
    before returning, so the count is visible to every process while the password is checked)."""
    window = _interval(policy.window_s)
    refusal: Refusal | None = None
    async with conn.transaction():
        familiar = await store.is_familiar(conn, username, address, _interval(policy.familiar_s))
        # Always address first, then name: every transaction locks in the same order.
        if not await store.charge_address(
            conn,
            address,
            budget=policy.address_budget,
            window=window,
            forget=_interval(policy.backoff_max_s),
        ):
            refusal = Refusal("address", await _address_wait(conn, address))
        elif not familiar and not await store.charge_name(
            conn, username, budget=policy.name_budget, window=window
        ):
            refusal = Refusal("name", await _name_wait(conn, username, policy))
        if refusal is not None:
            raise Rollback  # nothing charged; the block swallows it
    await conn.commit()
    return refusal or Reservation(address=address, username=username, familiar=familiar)


async def _address_wait(conn: AsyncConnection, address: str) -> float:
    blocked_for = await store.address_blocked_for(conn, address)
    if blocked_for is not None and blocked_for > 0:
        return blocked_for
    return 1.0  # the budget's last guess is being checked right now


async def _name_wait(conn: AsyncConnection, username: str, policy: LoginPolicy) -> float:
    left = await store.name_window_left(conn, username, _interval(policy.window_s))
    return max(1.0, left) if left is not None else 1.0


async def failed(conn: AsyncConnection, reservation: Reservation, policy: LoginPolicy) -> None:
    """The guess was wrong: it stays counted; if it spent the address's budget, hold the
    address back (exponential backoff)."""
    await store.hold_back_address(
        conn,
        reservation.address,
        budget=policy.address_budget,
        base_s=policy.backoff_s,
        cap_s=policy.backoff_max_s,
    )
    await conn.commit()


async def give_back(conn: AsyncConnection, reservation: Reservation) -> None:
    """The guess was not a failure (right password, or never checked): uncount it."""
    await store.uncount_address(conn, reservation.address)
    if not reservation.familiar:
        await store.uncount_name(conn, reservation.username)
    await conn.commit()


async def succeeded(conn: AsyncConnection, reservation: Reservation) -> None:
    """The password was right: give the reservation back and remember the address as familiar
    for this user."""
    await give_back(conn, reservation)
    await store.remember_familiar(conn, reservation.username, reservation.address)
    await conn.commit()


async def forget_stale(conn: AsyncConnection, policy: LoginPolicy) -> None:
    """Drop rows no window or backoff needs any more (run after successful logins, so the
    tables stay as small as the recent failures)."""
    keep = _interval(max(policy.window_s, policy.backoff_max_s) * 2)
    await store.forget_stale(conn, keep, _interval(policy.familiar_s))
    await conn.commit()
