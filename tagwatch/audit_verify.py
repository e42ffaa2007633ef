"""`tagwatch audit verify`: walk the audit log's hash chain and name the first row that breaks it.

The chain is written by the database itself (store/migrations/0004_security.sql): each row has
its position `seq` (1, 2, 3, ... without gaps), the hash of the row before it (`prev_hash`, the
genesis value of 64 zeros for the first) and its own `hash`, SHA-256 over a length-prefixed
serialisation of (seq, id, at, username, role, action, subject_id, detail, prev_hash). Here the
same hash is recomputed independently in Python, so that:

- a row whose content was changed (an UPDATE of its detail, its user, its time...) no longer
  matches its hash: reported as ``altered``;
- a deleted row leaves a gap in `seq` and a successor whose `prev_hash` points at nothing:
  reported as ``deleted``; a deleted tail is caught against the chain head (`audit_chain_head`);
- a row inserted behind the chain's back (triggers disabled, or a forged position) has no `seq`,
  or a `seq` or `prev_hash` that does not follow: reported as ``inserted``.

The head hash printed on success can be kept elsewhere (a ticket, a signed e-mail): a later
verify that ends in the same hash proves that nothing before it changed, even against someone who
could rewrite the whole table and recompute every hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from tagwatch.store import audit
from tagwatch.store.audit import chain_head, chain_rows, first_unchained, one_snapshot

GENESIS = "0" * 64
PREFIX = b"tagwatch-audit-v1;"


def _field(value: str | None) -> bytes:
    if value is None:
        return b"N;"
    raw = value.encode()
    return str(len(raw)).encode() + b":" + raw + b";"


def format_at(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_hash(
    seq: int,
    row_id: int,
    at: datetime,
    username: str,
    role: str,
    action: str,
    subject_id: int | None,
    detail_text: str,
    prev_hash: str,
) -> str:
    """The hash the database wrote for a row, recomputed (``detail_text`` is ``detail::text``)."""
    payload = PREFIX + b"".join(
        _field(v)
        for v in (
            str(seq),
            str(row_id),
            format_at(at),
            username,
            role,
            action,
            None if subject_id is None else str(subject_id),
            detail_text,
            prev_hash,
        )
    )
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True)
class Problem:
    kind: str  # altered, deleted, inserted
    row_id: int | None
    seq: int | None
    message: str


@dataclass(frozen=True)
class Verdict:
    rows: int
    head_seq: int
    head_hash: str
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(conn: psycopg.Connection[Any], batch: int = 5000) -> Verdict:
    """Walk the whole chain in one snapshot; stop at the first break."""
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if idle:  # one snapshot for the head and the rows
            one_snapshot(conn)
        head = chain_head(conn)
        head_seq, head_hash = (head.last_seq, head.last_hash) if head else (0, GENESIS)
        unchained = first_unchained(conn)
        rows = 0
        expected_seq, prev = 1, GENESIS
        previous_id: int | None = None
        problem: Problem | None = None
        with closing(chain_rows(conn, batch)) as chained:
            for r in chained:
                computed = row_hash(
                    r.seq, r.id, r.at, r.username, r.role, r.action, r.subject_id,
                    r.detail_text, r.prev_hash or "",
                )  # fmt: skip
                problem = _check(
                    r.seq, r.id, expected_seq, prev, previous_id, r.prev_hash, r.hash, computed
                )
                if problem is not None:
                    break
                rows += 1  # the stored hash is the computed one (else _check said so)
                expected_seq, prev, previous_id = r.seq + 1, computed, r.id
        if problem is None and unchained is not None:
            problem = Problem(
                "inserted",
                unchained,
                None,
                f"row id {unchained} is not in the chain (no seq): inserted behind its back",
            )
        if problem is None and (expected_seq - 1 != head_seq or prev != head_hash):
            problem = Problem(
                "deleted",
                None,
                expected_seq,
                f"the chain head records {head_seq} rows ending in {head_hash[:16]}..., but the "
                f"log ends at seq {expected_seq - 1}"
                + (f" (row id {previous_id})" if previous_id is not None else "")
                + ": the rows after it were deleted, or the head was altered",
            )
    return Verdict(rows=rows, head_seq=head_seq, head_hash=head_hash, problem=problem)


def _check(
    seq: int,
    row_id: int,
    expected_seq: int,
    prev: str,
    previous_id: int | None,
    prev_hash: str | None,
    stored: str | None,
    computed: str,
) -> Problem | None:
    after = f"row id {previous_id} (seq {expected_seq - 1})" if previous_id else "the genesis"
    if seq > expected_seq:
        missing = (
            f"seq {expected_seq}" if seq == expected_seq + 1 else f"seqs {expected_seq}..{seq - 1}"
        )
        return Problem(
            "deleted",
            row_id,
            expected_seq,
            f"{missing} missing between {after} and row id {row_id} (seq {seq}): deleted",
        )
    if seq < expected_seq:
        return Problem(
            "inserted",
            row_id,
            seq,
            f"row id {row_id} repeats seq {seq}: inserted out of chain",
        )
    if prev_hash != prev:
        return Problem(
            "inserted",
            row_id,
            seq,
            f"row id {row_id} (seq {seq}) does not link to {after}: its prev_hash differs, so "
            f"either it was inserted out of chain or {after} was altered and rehashed",
        )
    if stored != computed:
        return Problem(
            "altered",
            row_id,
            seq,
            f"row id {row_id} (seq {seq}) was altered: its content no longer matches its hash",
        )
    return None


def run_verify(database_url: str, echo: Callable[[str], None]) -> int:
    """The CLI's `audit verify`: 0 and the count when intact, 1 naming the first break."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        verdict = verify(conn)
    if verdict.problem is not None:
        echo(f"audit chain BROKEN after {verdict.rows} intact rows: {verdict.problem.message}")
        return 1
    echo(
        f"audit chain intact: {verdict.rows} rows, head seq {verdict.head_seq}, "
        f"head hash {verdict.head_hash}"
    )
    return 0


def recent(
    database_url: str,
    limit: int = 50,
    subject_id: int | None = None,
    username: str | None = None,
    action: str | None = None,
) -> list[dict[str, Any]]:
    """The latest audit rows, newest first, for `audit list`."""
    with psycopg.connect(database_url) as conn:
        return audit.recent(conn, limit, subject_id, username, action)
