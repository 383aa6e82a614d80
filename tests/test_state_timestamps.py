"""Times go in aware, in any zone, and come back as the same instant in UTC; comparisons in SQL
(due retries, outcomes since) agree with Python's, also on SQLite where they are text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.state.records import Intent
from connector.state.retries import retry_delay
from connector.state.store import StateStore

aware = st.datetimes(
    min_value=datetime(1971, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.timezones()
)
STORE = StateStore.open("sqlite:///:memory:")


@settings(max_examples=30, deadline=None)
@given(created=aware)
def test_any_aware_time_round_trips_as_utc(created: datetime) -> None:
    STORE.intents.record(Intent("default", "001000000000000001", "k", "h", created))
    got = STORE.intents.get("default", "001000000000000001")
    assert got is not None
    # PEP 495: a time in a DST fold or gap never compares equal across zones, so compare with
    # the instant Python itself assigns it.
    assert got.created_at == created.astimezone(UTC)
    assert got.created_at.tzinfo is UTC


@settings(max_examples=30, deadline=None)
@given(failed_at=aware, now=aware)
def test_due_retries_compare_instants_not_text(failed_at: datetime, now: datetime) -> None:
    STORE.retries.clear("default", ["001000000000000002"])
    item = STORE.retries.schedule("default", {"001000000000000002": "e"}, now=failed_at)["001000000000000002"]
    failed_utc, now_utc = failed_at.astimezone(UTC), now.astimezone(UTC)
    assert item.next_attempt_at == failed_utc + retry_delay(1)
    due = STORE.retries.due("default", now=now)
    assert bool(due) == (failed_utc + timedelta(minutes=1) <= now_utc)


@given(attempts=st.integers(min_value=1, max_value=10_000))
def test_backoff_grows_and_stays_capped(attempts: int) -> None:
    assert retry_delay(attempts) <= retry_delay(attempts + 1) <= timedelta(hours=6)
