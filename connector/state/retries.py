"""The retry list: records that failed, when each is tried again, and why it failed last.

What this module must never do: drop a record from the list unless told it succeeded (`clear`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row

from connector.state import schema as t
from connector.state.database import Database, InIds, as_utc, chunks
from connector.state.records import RetryItem

# Retry backoff: RETRY_BASE after the first failure, doubling per attempt, never above RETRY_CAP.
RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=6)


def retry_delay(attempts: int) -> timedelta:
    """Wait before the next try after `attempts` failures: 1 min, 2, 4, ... capped at 6 h."""
    exponent = min(max(attempts, 1) - 1, 30)  # 2**30 minutes is far past the cap already
    delay: timedelta = RETRY_BASE * (2**exponent)
    return min(delay, RETRY_CAP)


_Q = t.retry_queue
_BA: sa.BindParameter[str] = sa.bindparam("ba")
# Built once: the engine clears the retries of every page it wrote.
_PREVIOUS = sa.select(_Q.c.account_id, _Q.c.attempts, _Q.c.first_failed_at).where(
    _Q.c.billing_account == _BA, InIds(_Q.c.account_id)
)
_CLEAR = _Q.delete().where(_Q.c.billing_account == _BA, InIds(_Q.c.account_id))
_UPDATE_COLUMNS = ("attempts", "next_attempt_at", "last_error")


class RetryRepository:
    """`store.retries`: per billing account, the accounts to try again and when."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def schedule(
        self, billing_account: str, errors: Mapping[str, str], *, now: datetime | None = None
    ) -> dict[str, RetryItem]:
        """Count one more failure for each account in `errors` (account id -> error) and set
        its next attempt per `retry_delay`, in one transaction."""
        now = as_utc(now)
        if not errors:
            return {}
        q = t.retry_queue
        out: dict[str, RetryItem] = {}
        with self._db.connect(write=True) as conn:
            previous: dict[str, tuple[int, datetime]] = {}
            for chunk in chunks(errors):
                params = {"ba": billing_account, "ids": chunk}
                for account_id, attempts, first in conn.execute(_PREVIOUS, params):
                    previous[account_id] = (attempts, first)
            rows = []
            for account_id, error in errors.items():
                attempts, first = previous.get(account_id, (0, now))
                item = RetryItem(
                    billing_account=billing_account,
                    account_id=account_id,
                    attempts=attempts + 1,
                    next_attempt_at=now + retry_delay(attempts + 1),
                    last_error=error,
                )
                out[account_id] = item
                rows.append(
                    {
                        "billing_account": billing_account,
                        "account_id": account_id,
                        "attempts": item.attempts,
                        "next_attempt_at": item.next_attempt_at,
                        "last_error": error,
                        "first_failed_at": first,
                    }
                )
            stmt = self._db.upsert(q, ("billing_account", "account_id"), _UPDATE_COLUMNS)
            conn.execute(stmt, rows)
        return out

    def due(
        self, billing_account: str, *, now: datetime | None = None, limit: int = 2000
    ) -> list[RetryItem]:
        q = t.retry_queue
        query = (
            sa.select(q)
            .where(q.c.billing_account == billing_account, q.c.next_attempt_at <= as_utc(now))
            .order_by(q.c.next_attempt_at, q.c.account_id)
            .limit(limit)
        )
        with self._db.connect() as conn:
            return [retry_record(row) for row in conn.execute(query)]

    def all(self, billing_account: str) -> list[RetryItem]:
        q = t.retry_queue
        query = (
            sa.select(q)
            .where(q.c.billing_account == billing_account)
            .order_by(q.c.next_attempt_at, q.c.account_id)
        )
        with self._db.connect() as conn:
            return [retry_record(row) for row in conn.execute(query)]

    def clear(self, billing_account: str, account_ids: Iterable[str]) -> None:
        with self._db.connect(write=True) as conn:
            for chunk in chunks(account_ids):
                conn.execute(_CLEAR, {"ba": billing_account, "ids": chunk})


def retry_record(row: Row[Any]) -> RetryItem:
    return RetryItem(
        billing_account=row.billing_account,
        account_id=row.account_id,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
    )
