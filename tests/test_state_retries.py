"""`store.retries`: the retry list and its backoff, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from state_fixtures import T0, account_id, db_url, store

from connector.state.retries import RETRY_BASE, RETRY_CAP, retry_delay
from connector.state.store import StateStore

__all__ = ["db_url", "store"]  # fixtures, imported for pytest


def test_retry_backoff_doubles_and_is_capped() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [RETRY_BASE * m for m in (1, 2, 4, 8)]
    assert retry_delay(9) == timedelta(minutes=256)
    assert retry_delay(10) == RETRY_CAP == timedelta(hours=6)
    assert retry_delay(10_000) == RETRY_CAP


def test_schedule_retry_counts_attempts(store: StateStore) -> None:
    a = account_id(1)
    first = store.retries.schedule("default", {a: "timeout"}, now=T0)[a]
    assert (first.attempts, first.next_attempt_at, first.last_error) == (
        1,
        T0 + timedelta(minutes=1),
        "timeout",
    )
    second = store.retries.schedule("default", {a: "rate limited"}, now=T0 + timedelta(minutes=1))[a]
    assert (second.attempts, second.next_attempt_at) == (2, T0 + timedelta(minutes=3))
    assert store.retries.all("default") == [second]
    for _ in range(20):
        last = store.retries.schedule("default", {a: "down"}, now=T0)[a]
    assert last.next_attempt_at == T0 + RETRY_CAP
    with store._engine.connect() as conn:
        first_failed = conn.execute(sa.text("SELECT first_failed_at FROM retry_queue")).scalar()
    assert first_failed is not None


def test_due_retries_and_clear(store: StateStore) -> None:
    store.retries.schedule("default", {account_id(1): "e"}, now=T0)
    store.retries.schedule("default", {account_id(2): "e"}, now=T0 + timedelta(minutes=30))
    store.retries.schedule("eu", {account_id(3): "e"}, now=T0)
    due = store.retries.due("default", now=T0 + timedelta(minutes=5))
    assert [r.account_id for r in due] == [account_id(1)]
    assert len(store.retries.due("default", now=T0 + timedelta(hours=1))) == 2
    assert len(store.retries.due("default", now=T0 + timedelta(hours=1), limit=1)) == 1
    many = store.retries.schedule("default", {account_id(n): "e" for n in range(10, 1010)}, now=T0)
    assert len(many) == 1000 and all(r.attempts == 1 for r in many.values())
    store.retries.clear("default", [account_id(1), account_id(2), *many])
    assert store.retries.all("default") == []
    assert len(store.retries.all("eu")) == 1
