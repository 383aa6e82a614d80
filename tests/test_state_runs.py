"""`store.runs`: runs and their recorded outcomes, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
import sqlalchemy as sa
from state_fixtures import T0, account_id, db_url, store

from connector.state.records import Outcome
from connector.state.store import StateStore

__all__ = ["db_url", "store"]  # fixtures, imported for pytest


def test_run_lifecycle(store: StateStore) -> None:
    run_id = store.runs.start("sync", dry_run=True)
    assert len(run_id) == 32
    run = store.runs.get(run_id)
    assert run is not None and run.status == "running" and run.dry_run and run.finished_at is None
    assert run.started_at.tzinfo is UTC
    store.runs.finish(run_id, status="partial", counts={"created": 3, "failed": 1}, error="x")
    run = store.runs.get(run_id)
    assert run is not None
    assert (run.status, run.counts, run.error) == ("partial", {"created": 3, "failed": 1}, "x")
    assert run.finished_at is not None and run.finished_at >= run.started_at
    assert store.runs.get("nope") is None
    with pytest.raises(ValueError, match="no run"):
        store.runs.finish("nope", status="succeeded", counts={})


def test_recent_runs_newest_first_and_interrupted_runs_marked(store: StateStore) -> None:
    first = store.runs.start("backfill", dry_run=False)
    second = store.runs.start("sync", dry_run=False)
    store.runs.finish(second, status="succeeded", counts={})
    assert [r.run_id for r in store.runs.recent()] == [second, first]
    assert len(store.runs.recent(limit=1)) == 1
    assert store.runs.mark_interrupted() == 1
    run = store.runs.get(first)
    assert run is not None and run.status == "interrupted" and run.finished_at is not None
    assert run.error and "stopped" in run.error
    assert store.runs.get(second).status == "succeeded"  # type: ignore[union-attr]
    assert store.runs.mark_interrupted() == 0


def _outcomes() -> list[Outcome]:
    return [
        Outcome(
            account_id(1),
            "default",
            "created",
            customer_id="cus_1",
            order_id="801A",
            changed_fields=("name", "email"),
        ),
        Outcome(
            account_id(2),
            "default",
            "failed",
            error_code="timeout",
            error_message="Stripe timed out",
        ),
        Outcome(account_id(3), "default", "refused", error_code="merge_after_sync"),
        Outcome(account_id(4), "default", "unchanged"),
    ]


def test_record_and_read_outcomes(store: StateStore) -> None:
    run_id = store.runs.start("sync", dry_run=False)
    store.runs.record_outcomes(run_id, _outcomes())
    store.runs.record_outcomes(run_id, [])
    assert store.runs.outcomes_for_run(run_id) == _outcomes()
    assert store.runs.outcomes_for_run("other") == []


def test_outcomes_need_a_known_run(store: StateStore) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        store.runs.record_outcomes("no-such-run", _outcomes()[:1])


def test_recent_failures_and_export(store: StateStore) -> None:
    old_run = store.runs.start("sync", dry_run=False)
    store.runs.record_outcomes(old_run, _outcomes(), now=T0)
    new_run = store.runs.start("sync", dry_run=False)
    store.runs.record_outcomes(new_run, _outcomes()[1:2], now=T0 + timedelta(hours=1))

    failures = store.runs.recent_failures()
    # account 2 failed twice: only its latest failure is listed
    assert [(at, run, o.account_id) for at, run, o in failures] == [
        (T0 + timedelta(hours=1), new_run, account_id(2)),
        (T0, old_run, account_id(3)),
    ]
    assert len(store.runs.recent_failures(limit=1)) == 1

    everything = list(store.runs.iter_outcomes())
    assert len(everything) == 5 and everything[0][1] == old_run and everything[0][0].tzinfo is UTC
    assert len(list(store.runs.iter_outcomes(failed_only=True))) == 3
    assert [o.account_id for _, _, o in store.runs.iter_outcomes(since=T0 + timedelta(minutes=1))] == [
        account_id(2)
    ]
    assert len(list(store.runs.iter_outcomes(batch=2))) == 5


def test_recent_failures_lists_only_records_whose_latest_outcome_failed(store: StateStore) -> None:
    first = store.runs.start("sync", dry_run=False)
    store.runs.record_outcomes(first, _outcomes(), now=T0)  # 2 failed, 3 refused
    later = store.runs.start("sync", dry_run=False)
    store.runs.record_outcomes(
        later,
        [
            Outcome(account_id(2), "default", "updated", customer_id="cus_2"),  # synced since
            Outcome(account_id(3), "eu", "created", customer_id="cus_3"),  # another billing account
            Outcome(account_id(5), "default", "failed", error_code="api_error"),
        ],
        now=T0 + timedelta(hours=1),
    )

    failures = store.runs.recent_failures()

    assert [(o.account_id, o.billing_account, run) for _, run, o in failures] == [
        (account_id(5), "default", later),
        (account_id(3), "default", first),
    ]
    # the history keeps every failure for export
    assert len(list(store.runs.iter_outcomes(failed_only=True))) == 3
