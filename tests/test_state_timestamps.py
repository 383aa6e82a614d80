"""Times go in aware, in any zone, and come back as the same instant in UTC; comparisons in SQL
(due retries, outcomes since) agree with Python's: on SQLite, where they are text, and on
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from state_fixtures import BACKENDS, pg_schema_url

from connector.state.records import Intent
from connector.state.retries import retry_delay
from connector.state.store import StateStore

aware = st.datetimes(
    min_value=datetime(1971, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.timezones()
)


@pytest.fixture(scope="module", params=BACKENDS)
def shared_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StateStore]:
    """One store per backend for the whole module: hypothesis runs many examples per test."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("timestamps") / "state.db"
        with StateStore.open(f"sqlite:///{path}") as store:
            yield store
    else:
        with pg_schema_url() as url, StateStore.open(url) as store:
            yield store


@settings(max_examples=30, deadline=None)
@given(created=aware)
def test_any_aware_time_round_trips_as_utc(shared_store: StateStore, created: datetime) -> None:
    shared_store.intents.record(Intent("default", "001000000000000001", "k", "h", created))
    got = shared_store.intents.get("default", "001000000000000001")
    assert got is not None
    # PEP 495: a time in a DST fold or gap never compares equal across zones, so compare with
    # the instant Python itself assigns it.
    assert got.created_at == created.astimezone(UTC)
    assert got.created_at.tzinfo is UTC


@settings(max_examples=30, deadline=None)
@given(failed_at=aware, now=aware)
def test_due_retries_compare_instants_not_text(
    shared_store: StateStore, failed_at: datetime, now: datetime
) -> None:
    account = "001000000000000002"
    shared_store.retries.clear("default", [account])
    item = shared_store.retries.schedule("default", {account: "e"}, now=failed_at)[account]
    failed_utc, now_utc = failed_at.astimezone(UTC), now.astimezone(UTC)
    assert item.next_attempt_at == failed_utc + retry_delay(1)
    due = shared_store.retries.due("default", now=now)
    assert bool(due) == (failed_utc + timedelta(minutes=1) <= now_utc)


@given(attempts=st.integers(min_value=1, max_value=10_000))
def test_backoff_grows_and_stays_capped(attempts: int) -> None:
    assert retry_delay(attempts) <= retry_delay(attempts + 1) <= timedelta(hours=6)
