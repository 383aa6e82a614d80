"""Runs and what each did to each record (outcomes): the history `status` and `history` show.

What this module must never do: rewrite an outcome once recorded (the history is append-only;
only a run's own row moves from running to its final status).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row

from connector.state import schema as t
from connector.state.database import Database, as_utc, chunks, utcnow
from connector.state.records import Outcome, RunRecord

# Outcomes that need a human: `recent_failures` lists records whose latest outcome is one of
# these, `iter_outcomes(failed_only=True)` exports every one of them.
FAILURE_OUTCOMES: tuple[str, ...] = ("failed", "refused")

# Built once: a run records a page of outcomes per page of orders.
_INSERT_OUTCOMES = t.record_outcomes.insert()
_GET_RUN = sa.select(t.runs).where(t.runs.c.run_id == sa.bindparam("run_id"))
_O = t.record_outcomes
_TOUCHED = (
    sa.select(_O.c.account_id)
    .where(
        _O.c.billing_account == sa.bindparam("ba"),
        _O.c.account_id.in_(sa.bindparam("ids", expanding=True)),
        _O.c.run_id == sa.bindparam("run_id"),
    )
    .distinct()
)


class RunRepository:
    """`store.runs`: one row per run, one outcome row per record a run touched."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def start(self, mode: str, *, dry_run: bool, partition: str | None = None) -> str:
        run_id = uuid.uuid4().hex
        with self._db.connect(write=True) as conn:
            conn.execute(
                t.runs.insert().values(
                    run_id=run_id,
                    mode=mode,
                    dry_run=dry_run,
                    started_at=utcnow(),
                    status="running",
                    counts={},
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    partition=partition,
                )
            )
        return run_id

    def finish(
        self, run_id: str, *, status: str, counts: Mapping[str, int], error: str | None = None
    ) -> None:
        with self._db.connect(write=True) as conn:
            result = conn.execute(
                t.runs.update()
                .where(t.runs.c.run_id == run_id)
                .values(
                    status=status,
                    counts={k: int(v) for k, v in counts.items()},
                    error=error,
                    finished_at=utcnow(),
                )
            )
        if result.rowcount == 0:
            raise ValueError(f"no run {run_id} in the state store")

    def get(self, run_id: str) -> RunRecord | None:
        with self._db.connect() as conn:
            row = conn.execute(_GET_RUN, {"run_id": run_id}).first()
        return run_record(row) if row is not None else None

    def recent(self, limit: int = 10) -> list[RunRecord]:
        query = sa.select(t.runs).order_by(t.runs.c.started_at.desc()).limit(limit)
        with self._db.connect() as conn:
            return [run_record(row) for row in conn.execute(query)]

    def mark_interrupted(self, partition: str | None = None) -> int:
        """Runs left 'running' by a crash become 'interrupted'. Call only while holding the lock
        (of `partition`, when given: then only runs that covered it, or older runs that do not
        say, are marked; a replica running another partition keeps its run)."""
        r = t.runs.c
        covers: sa.ColumnElement[bool] = sa.true()
        if partition is not None:
            like = partition.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            covers = sa.or_(
                r.partition.is_(None),
                r.partition == partition,
                r.partition.like(f"{like},%", escape="\\"),
                r.partition.like(f"%,{like}", escape="\\"),
                r.partition.like(f"%,{like},%", escape="\\"),
            )
        with self._db.connect(write=True) as conn:
            result = conn.execute(
                t.runs.update()
                .where(r.status == "running", covers)
                .values(
                    status="interrupted",
                    finished_at=utcnow(),
                    error=sa.func.coalesce(
                        t.runs.c.error, "the process stopped before the run finished"
                    ),
                )
            )
        return result.rowcount

    # --- outcomes -----------------------------------------------------------------------------

    def record_outcomes(
        self, run_id: str, outcomes: Iterable[Outcome], *, now: datetime | None = None
    ) -> None:
        at = as_utc(now)
        rows = [
            {
                "run_id": run_id,
                "billing_account": o.billing_account,
                "account_id": o.account_id,
                "order_id": o.order_id,
                "outcome": o.outcome,
                "customer_id": o.customer_id,
                "error_code": o.error_code,
                "error_message": o.error_message,
                "changed_fields": list(o.changed_fields),
                "at": at,
            }
            for o in outcomes
        ]
        if rows:
            with self._db.connect(write=True) as conn:
                self._db.insert_many(conn, _INSERT_OUTCOMES, rows)

    def accounts_with_outcomes(
        self, run_id: str, billing_account: str, account_ids: Iterable[str]
    ) -> set[str]:
        """Which of `account_ids` have an outcome recorded by run `run_id` in a billing account."""
        out: set[str] = set()
        with self._db.connect() as conn:
            for chunk in chunks(account_ids):
                params = {"ba": billing_account, "ids": chunk, "run_id": run_id}
                out.update(conn.execute(_TOUCHED, params).scalars())
        return out

    def outcomes_for_run(self, run_id: str) -> list[Outcome]:
        query = (
            sa.select(t.record_outcomes)
            .where(t.record_outcomes.c.run_id == run_id)
            .order_by(t.record_outcomes.c.id)
        )
        with self._db.connect() as conn:
            return [outcome_record(row) for row in conn.execute(query)]

    def recent_failures(self, limit: int = 50) -> list[tuple[datetime, str, Outcome]]:
        """Records that still need a human: those whose latest recorded outcome is in
        FAILURE_OUTCOMES, newest first, as (at, run_id, outcome).

        An account that failed and has synced since is not listed: its later outcome (created,
        updated, adopted, held...) supersedes the failure. "Latest" is by outcome id, the order
        outcomes were written in, which the single-runner lock makes the order of the runs.
        """
        o = t.record_outcomes
        later = t.record_outcomes.alias("later")
        superseded = (
            sa.select(later.c.id)
            .where(
                later.c.billing_account == o.c.billing_account,
                later.c.account_id == o.c.account_id,
                later.c.id > o.c.id,
            )
            .exists()
        )
        query = (
            sa.select(o)
            .where(o.c.outcome.in_(FAILURE_OUTCOMES), ~superseded)
            .order_by(o.c.at.desc(), o.c.id.desc())
            .limit(limit)
        )
        with self._db.connect() as conn:
            return [(row.at, row.run_id, outcome_record(row)) for row in conn.execute(query)]

    def iter_outcomes(
        self, *, failed_only: bool = False, since: datetime | None = None, batch: int = 2000
    ) -> Iterator[tuple[datetime, str, Outcome]]:
        """Every recorded outcome in the order written, as (at, run_id, outcome), for export."""
        o = t.record_outcomes
        after = 0
        while True:
            query = sa.select(o).where(o.c.id > after).order_by(o.c.id).limit(batch)
            if failed_only:
                query = query.where(o.c.outcome.in_(FAILURE_OUTCOMES))
            if since is not None:
                query = query.where(o.c.at >= since)
            with self._db.connect() as conn:
                rows = list(conn.execute(query))
            for row in rows:
                yield row.at, row.run_id, outcome_record(row)
            if len(rows) < batch:
                return
            after = rows[-1].id


def run_record(row: Row[Any]) -> RunRecord:
    return RunRecord(
        run_id=row.run_id,
        mode=row.mode,
        dry_run=bool(row.dry_run),
        started_at=row.started_at,
        finished_at=row.finished_at,
        status=row.status,
        counts=dict(row.counts or {}),
        error=row.error,
        partition=row.partition,
    )


def outcome_record(row: Row[Any]) -> Outcome:
    return Outcome(
        account_id=row.account_id,
        billing_account=row.billing_account,
        outcome=row.outcome,
        customer_id=row.customer_id,
        order_id=row.order_id,
        error_code=row.error_code,
        error_message=row.error_message,
        changed_fields=tuple(row.changed_fields or ()),
    )
