"""Behaviour of every StateStore method, on SQLite and on PostgreSQL."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from state_fixtures import T0, account_id, db_url, make_link, make_order, store

from connector.errors import ConflictError
from connector.state.records import Intent, Outcome
from connector.state.store import (
    LOOKUP_CHUNK,
    RETRY_BASE,
    RETRY_CAP,
    ConflictResolutionError,
    StateStore,
    retry_delay,
)

__all__ = ["db_url", "store"]  # fixtures, imported for pytest


def _count_statements(s: StateStore, table: str) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def listener(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT") and f"FROM {table}" in statement:
            seen.append((statement, params))

    sa.event.listen(s._engine, "before_cursor_execute", listener)
    return seen


# --- store basics ---------------------------------------------------------------------------


def test_url_hides_password_and_names_dialect(store: StateStore) -> None:
    assert store.dialect in ("sqlite", "postgresql")
    assert store.url.startswith(store.dialect)
    assert "***" not in store.url


def test_url_never_contains_a_password(tmp_path: Any) -> None:
    s = StateStore(
        sa.create_engine("postgresql+psycopg://bc:s3cret@db.example/state"),
        db_path=None,
        busy_timeout=1,
    )
    assert "s3cret" not in s.url and s.url == "postgresql+psycopg://bc@db.example/state"


def test_timestamps_come_back_aware_utc_and_naive_ones_are_refused(store: StateStore) -> None:
    store.save_links([make_link(account_id(1), first_synced_at=T0, last_synced_at=T0)])
    link = store.get_link("default", account_id(1))
    assert link is not None and link.first_synced_at == T0
    assert link.first_synced_at.tzinfo is UTC
    with pytest.raises(Exception, match="naive datetime"):
        store.save_links([make_link(account_id(2), first_synced_at=datetime(2026, 1, 1))])


def test_transaction_groups_calls_and_rolls_back_together(store: StateStore) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.set_cursor("orders", "a")
        with store.transaction():  # nested: joins
            store.save_links([make_link(account_id(1))])
        raise RuntimeError("boom")
    assert store.get_cursor("orders") is None
    assert store.get_link("default", account_id(1)) is None
    with store.transaction():
        store.set_cursor("orders", "b")
        assert store.get_cursor("orders") == "b"  # reads inside see the transaction's writes
    assert store.get_cursor("orders") == "b"


# --- runs -------------------------------------------------------------------------------------


def test_run_lifecycle(store: StateStore) -> None:
    run_id = store.start_run("sync", dry_run=True)
    assert len(run_id) == 32
    run = store.get_run(run_id)
    assert run is not None and run.status == "running" and run.dry_run and run.finished_at is None
    assert run.started_at.tzinfo is UTC
    store.finish_run(run_id, status="partial", counts={"created": 3, "failed": 1}, error="x")
    run = store.get_run(run_id)
    assert run is not None
    assert (run.status, run.counts, run.error) == ("partial", {"created": 3, "failed": 1}, "x")
    assert run.finished_at is not None and run.finished_at >= run.started_at
    assert store.get_run("nope") is None
    with pytest.raises(ValueError, match="no run"):
        store.finish_run("nope", status="succeeded", counts={})


def test_recent_runs_newest_first_and_interrupted_runs_marked(store: StateStore) -> None:
    first = store.start_run("backfill", dry_run=False)
    second = store.start_run("sync", dry_run=False)
    store.finish_run(second, status="succeeded", counts={})
    assert [r.run_id for r in store.recent_runs()] == [second, first]
    assert len(store.recent_runs(limit=1)) == 1
    assert store.mark_interrupted_runs() == 1
    run = store.get_run(first)
    assert run is not None and run.status == "interrupted" and run.finished_at is not None
    assert run.error and "stopped" in run.error
    assert store.get_run(second).status == "succeeded"  # type: ignore[union-attr]
    assert store.mark_interrupted_runs() == 0


# --- links ------------------------------------------------------------------------------------


def test_save_and_get_links(store: StateStore) -> None:
    link = make_link(account_id(1), writeback_pending=False, status="held")
    store.save_links([link, make_link(account_id(2))])
    got = store.get_links("default", [account_id(1), account_id(2), account_id(3)])
    assert set(got) == {account_id(1), account_id(2)}
    one = got[account_id(1)]
    assert replace(one, first_synced_at=None, last_synced_at=None) == link
    assert one.payload == {"name": f"Account {account_id(1)}", "address": {"country": "DE"}}
    assert store.get_links("other", [account_id(1)]) == {}
    assert store.get_link("default", account_id(3)) is None
    by_customer = store.get_link_by_customer("default", f"cus_{account_id(2)}")
    assert by_customer is not None and by_customer.account_id == account_id(2)
    assert store.get_link_by_customer("default", "cus_none") is None
    assert store.get_links("default", []) == {}


def test_upsert_keeps_first_synced_at_and_updates_the_rest(store: StateStore) -> None:
    store.save_links([make_link(account_id(1), first_synced_at=T0, last_synced_at=T0)])
    later = T0 + timedelta(days=3)
    store.save_links(
        [
            make_link(
                account_id(1),
                payload_hash="h2",
                payload={"name": "New"},
                first_synced_at=later,
                last_synced_at=later,
                writeback_pending=False,
            )
        ]
    )
    link = store.get_link("default", account_id(1))
    assert link is not None
    assert link.first_synced_at == T0
    assert link.last_synced_at == later
    assert (link.payload_hash, link.payload, link.writeback_pending) == (
        "h2",
        {"name": "New"},
        False,
    )


def test_missing_sync_times_default_to_now(store: StateStore) -> None:
    before = datetime.now(UTC)
    store.save_links([make_link(account_id(1))])
    link = store.get_link("default", account_id(1))
    assert link is not None and link.first_synced_at is not None and link.last_synced_at is not None
    assert before - timedelta(seconds=1) <= link.first_synced_at <= datetime.now(UTC)


def test_a_customer_linked_to_another_account_is_refused_and_nothing_written(
    store: StateStore,
) -> None:
    store.save_links([make_link(account_id(1), customer_id="cus_A")])
    with pytest.raises(ConflictError, match=f"already linked to account {account_id(1)}") as err:
        store.save_links([make_link(account_id(3)), make_link(account_id(2), customer_id="cus_A")])
    assert err.value.code == "customer_already_linked"
    assert store.get_link("default", account_id(3)) is None
    with pytest.raises(ConflictError):
        store.save_links(
            [
                make_link(account_id(4), customer_id="cus_B"),
                make_link(account_id(5), customer_id="cus_B"),
            ]
        )
    # the same customer in another billing account is fine
    store.save_links([make_link(account_id(2), customer_id="cus_A", billing_account="eu")])


def test_a_merged_link_keeps_its_customer_while_the_survivor_takes_it(store: StateStore) -> None:
    loser, winner = account_id(1), account_id(2)
    store.save_links([make_link(loser, customer_id="cus_A")])
    store.set_link_status("default", loser, "merged")
    store.save_links([make_link(winner, customer_id="cus_A")])
    links = store.get_links("default", [loser, winner])
    assert (links[loser].status, links[loser].customer_id) == ("merged", "cus_A")
    assert links[winner].customer_id == "cus_A"
    owner = store.get_link_by_customer("default", "cus_A")
    assert owner is not None and owner.account_id == winner  # the link in use comes first
    # the same, in one batch: the loser is merged away and the survivor takes its customer
    store.save_links([make_link(account_id(3), customer_id="cus_B")])
    store.save_links(
        [
            make_link(account_id(4), customer_id="cus_B"),
            make_link(account_id(3), customer_id="cus_B", status="merged"),
        ]
    )
    assert store.get_link_by_customer("default", "cus_B").account_id == account_id(4)  # type: ignore[union-attr]
    # but a merged link cannot be brought back into use while another account has its customer
    with pytest.raises(ConflictError, match=f"already linked to account {winner}"):
        store.save_links([make_link(loser, customer_id="cus_A")])


def test_lookup_of_5000_ids_is_chunked(store: StateStore) -> None:
    ids = [account_id(n) for n in range(5000)]
    store.save_links([make_link(a) for a in ids[::2]])
    seen = _count_statements(store, "links")
    got = store.get_links("default", ids)
    assert len(got) == 2500
    assert len(seen) == math.ceil(5000 / LOOKUP_CHUNK)
    for _, params in seen:
        assert len(params) <= LOOKUP_CHUNK + 1  # ids + billing account
    assert LOOKUP_CHUNK < 999  # SQLite's historic bound-variable limit


def test_iter_links_pages_and_filters(store: StateStore) -> None:
    ids = [account_id(n) for n in range(25)]
    store.save_links(
        [make_link(a, status="deleted" if n % 5 == 0 else "active") for n, a in enumerate(ids)]
    )
    assert [link.account_id for link in store.iter_links("default", batch=7)] == ids
    deleted = [link.account_id for link in store.iter_links("default", status="deleted", batch=2)]
    assert deleted == ids[::5]
    assert list(store.iter_links("other")) == []
    assert store.count_links("default") == {"active": 20, "deleted": 5}
    assert store.count_links("other") == {}


def test_set_link_status(store: StateStore) -> None:
    store.save_links([make_link(account_id(1))])
    assert store.set_link_status("default", account_id(1), "merged")
    assert store.get_link("default", account_id(1)).status == "merged"  # type: ignore[union-attr]
    assert not store.set_link_status("default", account_id(2), "merged")


def test_writebacks_pending_until_marked(store: StateStore) -> None:
    store.save_links(
        [
            make_link(account_id(1)),
            make_link(account_id(2)),
            make_link(account_id(3), writeback_pending=False),
            make_link(account_id(4), status="deleted"),
        ]
    )
    pending = store.pending_writebacks("default")
    assert {link.account_id for link in pending} == {account_id(1), account_id(2)}
    assert len(store.pending_writebacks("default", limit=1)) == 1
    store.mark_written_back("default", [account_id(1)])
    assert [link.account_id for link in store.pending_writebacks("default")] == [account_id(2)]
    store.mark_written_back("default", [])


# --- orders and cursors -----------------------------------------------------------------------


def test_order_links_upsert(store: StateStore) -> None:
    store.save_order_links([make_order("801A", account_id(1)), make_order("801B", account_id(1))])
    store.save_order_links([make_order("801A", account_id(2))])  # reparented by a merge
    got = store.get_order_links("default", ["801A", "801B", "801C"])
    assert set(got) == {"801A", "801B"}
    assert got["801A"].account_id == account_id(2)
    assert got["801A"].customer_id == f"cus_{account_id(2)}"
    assert store.get_order_links("other", ["801A"]) == {}
    with store._engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT first_seen_at, last_seen_at FROM order_links WHERE order_id = '801A'")
        ).one()
    assert row[0] <= row[1]


def test_cursors(store: StateStore) -> None:
    assert store.get_cursor("orders:default") is None
    store.set_cursor("orders:default", "2026-01-01T00:00:00Z")
    store.set_cursor("orders:default", "2026-01-02T00:00:00Z")
    assert store.get_cursor("orders:default") == "2026-01-02T00:00:00Z"


# --- outcomes ---------------------------------------------------------------------------------


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
    run_id = store.start_run("sync", dry_run=False)
    store.record_outcomes(run_id, _outcomes())
    store.record_outcomes(run_id, [])
    assert store.outcomes_for_run(run_id) == _outcomes()
    assert store.outcomes_for_run("other") == []


def test_outcomes_need_a_known_run(store: StateStore) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        store.record_outcomes("no-such-run", _outcomes()[:1])


def test_recent_failures_and_export(store: StateStore) -> None:
    old_run = store.start_run("sync", dry_run=False)
    store.record_outcomes(old_run, _outcomes(), now=T0)
    new_run = store.start_run("sync", dry_run=False)
    store.record_outcomes(new_run, _outcomes()[1:2], now=T0 + timedelta(hours=1))

    failures = store.recent_failures()
    assert [(at, run, o.account_id) for at, run, o in failures] == [
        (T0 + timedelta(hours=1), new_run, account_id(2)),
        (T0, old_run, account_id(3)),
        (T0, old_run, account_id(2)),
    ]
    assert len(store.recent_failures(limit=1)) == 1

    everything = list(store.iter_outcomes())
    assert len(everything) == 5 and everything[0][1] == old_run and everything[0][0].tzinfo is UTC
    assert len(list(store.iter_outcomes(failed_only=True))) == 3
    assert [o.account_id for _, _, o in store.iter_outcomes(since=T0 + timedelta(minutes=1))] == [
        account_id(2)
    ]
    assert len(list(store.iter_outcomes(batch=2))) == 5


# --- retry list -------------------------------------------------------------------------------


def test_retry_backoff_doubles_and_is_capped() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [RETRY_BASE * m for m in (1, 2, 4, 8)]
    assert retry_delay(9) == timedelta(minutes=256)
    assert retry_delay(10) == RETRY_CAP == timedelta(hours=6)
    assert retry_delay(10_000) == RETRY_CAP


def test_schedule_retry_counts_attempts(store: StateStore) -> None:
    a = account_id(1)
    first = store.schedule_retry("default", a, "timeout", now=T0)
    assert (first.attempts, first.next_attempt_at, first.last_error) == (
        1,
        T0 + timedelta(minutes=1),
        "timeout",
    )
    second = store.schedule_retry("default", a, "rate limited", now=T0 + timedelta(minutes=1))
    assert (second.attempts, second.next_attempt_at) == (2, T0 + timedelta(minutes=3))
    assert store.all_retries("default") == [second]
    for _ in range(20):
        last = store.schedule_retry("default", a, "down", now=T0)
    assert last.next_attempt_at == T0 + RETRY_CAP
    with store._engine.connect() as conn:
        first_failed = conn.execute(sa.text("SELECT first_failed_at FROM retry_queue")).scalar()
    assert first_failed is not None


def test_due_retries_and_clear(store: StateStore) -> None:
    store.schedule_retry("default", account_id(1), "e", now=T0)
    store.schedule_retry("default", account_id(2), "e", now=T0 + timedelta(minutes=30))
    store.schedule_retry("eu", account_id(3), "e", now=T0)
    due = store.due_retries("default", now=T0 + timedelta(minutes=5))
    assert [r.account_id for r in due] == [account_id(1)]
    assert len(store.due_retries("default", now=T0 + timedelta(hours=1))) == 2
    assert len(store.due_retries("default", now=T0 + timedelta(hours=1), limit=1)) == 1
    many = store.schedule_retries("default", {account_id(n): "e" for n in range(10, 1010)}, now=T0)
    assert len(many) == 1000 and all(r.attempts == 1 for r in many.values())
    store.clear_retries("default", [account_id(1), account_id(2), *many])
    assert store.all_retries("default") == []
    assert len(store.all_retries("eu")) == 1


# --- intents ----------------------------------------------------------------------------------


def _intent(n: int, key: str = "k1") -> Intent:
    return Intent(
        "default", account_id(n), key, "h1", T0, payload={"name": "Acme", "metadata": {"sf": "1"}}
    )


def test_intents_record_get_and_drop(store: StateStore) -> None:
    assert store.record_intent(_intent(1)) == _intent(1)
    # a new intent replaces the old one: what is stored is what is sent next
    assert store.record_intent(_intent(1, key="k2")).idempotency_key == "k2"
    store.record_intent(_intent(1))
    store.record_intent(_intent(2))
    assert store.get_intent("default", account_id(1)) == _intent(1)
    assert [i.account_id for i in store.open_intents("default")] == [account_id(1), account_id(2)]
    store.drop_intent("default", account_id(1))
    assert store.get_intent("default", account_id(1)) is None
    assert store.open_intents("eu") == []


def test_complete_create_saves_link_orders_and_drops_intent(store: StateStore) -> None:
    store.record_intent(_intent(1))
    store.complete_create(make_link(account_id(1)), [make_order("801A", account_id(1))])
    assert store.get_intent("default", account_id(1)) is None
    assert store.get_link("default", account_id(1)) is not None
    assert set(store.get_order_links("default", ["801A"])) == {"801A"}
    with pytest.raises(ValueError, match="not for account"):
        store.complete_create(make_link(account_id(2)), [make_order("801B", account_id(3))])


def test_complete_create_is_all_or_nothing(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.record_intent(_intent(1))

    def fail(*_: object) -> None:
        raise RuntimeError("disk went away")

    monkeypatch.setattr(store, "drop_intent", fail)
    with pytest.raises(RuntimeError):
        store.complete_create(make_link(account_id(1)), [make_order("801A", account_id(1))])
    monkeypatch.undo()
    assert store.get_link("default", account_id(1)) is None
    assert store.get_order_links("default", ["801A"]) == {}
    assert store.get_intent("default", account_id(1)) == _intent(1)

    # a failure inside the database (a NOT NULL violation on the order row) rolls back too
    bad = replace(make_order("801B", account_id(1)), customer_id=None)  # type: ignore[arg-type]
    with pytest.raises(sa.exc.IntegrityError):
        store.complete_create(make_link(account_id(1)), [bad])
    assert store.get_link("default", account_id(1)) is None
    assert store.get_intent("default", account_id(1)) is not None


# --- conflicts --------------------------------------------------------------------------------


def test_open_conflict_is_not_duplicated(store: StateStore) -> None:
    first = store.open_conflict(
        "merge_loser_linked",
        billing_account="default",
        account_id=account_id(1),
        other_account_id=account_id(2),
        customer_id="cus_1",
        details={"merged_into": account_id(2)},
    )
    again = store.open_conflict(
        "merge_loser_linked", billing_account="default", account_id=account_id(1)
    )
    assert again == first
    assert first.status == "open" and first.details == {"merged_into": account_id(2)}
    assert first.created_at.tzinfo is UTC
    other_kind = store.open_conflict(
        "merge_both_linked", billing_account="default", account_id=account_id(1)
    )
    assert other_kind.id != first.id
    assert len(store.list_conflicts()) == 2
    assert store.open_conflict_accounts("default") == {account_id(1)}
    assert store.open_conflict_accounts("eu") == set()


def test_resolve_conflict_records_who_and_when(store: StateStore) -> None:
    c = store.open_conflict(
        "merge_loser_linked", billing_account="default", account_id=account_id(1)
    )
    resolved = store.resolve_conflict(c.id, resolution="kept winner", by="alice@example.com")
    assert (resolved.status, resolved.resolution, resolved.resolved_by) == (
        "resolved",
        "kept winner",
        "alice@example.com",
    )
    assert resolved.resolved_at is not None and resolved.resolved_at.tzinfo is UTC
    assert store.get_conflict(c.id) == resolved
    assert store.list_conflicts() == []
    assert store.list_conflicts("resolved") == [resolved]
    assert store.list_conflicts(None) == [resolved]
    assert store.open_conflict_accounts("default") == set()
    with pytest.raises(ConflictResolutionError, match=r"already resolved by alice@example\.com"):
        store.resolve_conflict(c.id, resolution="again", by="bob")
    with pytest.raises(ConflictResolutionError, match=r"no conflict #999"):
        store.resolve_conflict(999, resolution="x", by="bob")
    assert store.get_conflict(999) is None
    # once resolved, the same kind can be opened again for the account
    reopened = store.open_conflict(
        "merge_loser_linked", billing_account="default", account_id=account_id(1)
    )
    assert reopened.id != c.id and reopened.status == "open"


# --- status -----------------------------------------------------------------------------------


def test_stats(store: StateStore) -> None:
    store.save_links([make_link(account_id(1)), make_link(account_id(2), status="held")])
    store.open_conflict("x", billing_account="default", account_id=account_id(2))
    store.schedule_retry("default", account_id(3), "e", now=T0)
    store.set_cursor("orders:default", "2026-01-01T00:00:00Z")
    run_id = store.start_run("sync", dry_run=False)
    stats = store.stats()
    assert stats["links"] == {"default": {"active": 1, "held": 1}}
    assert stats["open_conflicts"] == 1
    assert stats["retries"] == {"due": 1, "total": 1}
    assert stats["cursors"]["orders:default"]["value"] == "2026-01-01T00:00:00Z"
    assert stats["last_run"]["run_id"] == run_id
    assert stats["database"]["revision"] == StateStore.head_revision()


def test_fingerprints_in_use_lists_what_active_links_were_written_with(store: StateStore) -> None:
    store.save_links([
        make_link(account_id(1), mapping_fingerprint="f1"),
        make_link(account_id(2), mapping_fingerprint="f2"),
        make_link(account_id(3), mapping_fingerprint=None),
        make_link(account_id(4), mapping_fingerprint="f3", status="merged"),
    ])

    assert store.fingerprints_in_use("default") == {"f1", "f2"}
    assert store.fingerprints_in_use("other") == set()
