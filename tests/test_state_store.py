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
from connector.state.conflicts import ConflictResolutionError
from connector.state.database import LOOKUP_CHUNK
from connector.state.records import Intent, Outcome
from connector.state.retries import RETRY_BASE, RETRY_CAP, retry_delay
from connector.state.store import StateStore

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
    store.links.save([make_link(account_id(1), first_synced_at=T0, last_synced_at=T0)])
    link = store.links.get("default", account_id(1))
    assert link is not None and link.first_synced_at == T0
    assert link.first_synced_at.tzinfo is UTC
    with pytest.raises(Exception, match="naive datetime"):
        store.links.save([make_link(account_id(2), first_synced_at=datetime(2026, 1, 1))])


def test_transaction_groups_calls_and_rolls_back_together(store: StateStore) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.cursors.set("orders", "a")
        with store.transaction():  # nested: joins
            store.links.save([make_link(account_id(1))])
        raise RuntimeError("boom")
    assert store.cursors.get("orders") is None
    assert store.links.get("default", account_id(1)) is None
    with store.transaction():
        store.cursors.set("orders", "b")
        assert store.cursors.get("orders") == "b"  # reads inside see the transaction's writes
    assert store.cursors.get("orders") == "b"


# --- runs -------------------------------------------------------------------------------------


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


# --- links ------------------------------------------------------------------------------------


def test_save_and_get_links(store: StateStore) -> None:
    link = make_link(account_id(1), writeback_pending=False, status="held")
    store.links.save([link, make_link(account_id(2))])
    got = store.links.get_many("default", [account_id(1), account_id(2), account_id(3)])
    assert set(got) == {account_id(1), account_id(2)}
    one = got[account_id(1)]
    assert replace(one, first_synced_at=None, last_synced_at=None) == link
    assert one.payload == {"name": f"Account {account_id(1)}", "address": {"country": "DE"}}
    assert store.links.get_many("other", [account_id(1)]) == {}
    assert store.links.get("default", account_id(3)) is None
    by_customer = store.links.by_customer("default", f"cus_{account_id(2)}")
    assert by_customer is not None and by_customer.account_id == account_id(2)
    assert store.links.by_customer("default", "cus_none") is None
    assert store.links.get_many("default", []) == {}


def test_upsert_keeps_first_synced_at_and_updates_the_rest(store: StateStore) -> None:
    store.links.save([make_link(account_id(1), first_synced_at=T0, last_synced_at=T0)])
    later = T0 + timedelta(days=3)
    store.links.save(
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
    link = store.links.get("default", account_id(1))
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
    store.links.save([make_link(account_id(1))])
    link = store.links.get("default", account_id(1))
    assert link is not None and link.first_synced_at is not None and link.last_synced_at is not None
    assert before - timedelta(seconds=1) <= link.first_synced_at <= datetime.now(UTC)


def test_a_customer_linked_to_another_account_is_refused_and_nothing_written(
    store: StateStore,
) -> None:
    store.links.save([make_link(account_id(1), customer_id="cus_A")])
    with pytest.raises(ConflictError, match=f"already linked to account {account_id(1)}") as err:
        store.links.save([make_link(account_id(3)), make_link(account_id(2), customer_id="cus_A")])
    assert err.value.code == "customer_already_linked"
    assert store.links.get("default", account_id(3)) is None
    with pytest.raises(ConflictError):
        store.links.save(
            [
                make_link(account_id(4), customer_id="cus_B"),
                make_link(account_id(5), customer_id="cus_B"),
            ]
        )
    # the same customer in another billing account is fine
    store.links.save([make_link(account_id(2), customer_id="cus_A", billing_account="eu")])


def test_a_merged_link_keeps_its_customer_while_the_survivor_takes_it(store: StateStore) -> None:
    loser, winner = account_id(1), account_id(2)
    store.links.save([make_link(loser, customer_id="cus_A")])
    store.links.set_status("default", loser, "merged")
    store.links.save([make_link(winner, customer_id="cus_A")])
    links = store.links.get_many("default", [loser, winner])
    assert (links[loser].status, links[loser].customer_id) == ("merged", "cus_A")
    assert links[winner].customer_id == "cus_A"
    owner = store.links.by_customer("default", "cus_A")
    assert owner is not None and owner.account_id == winner  # the link in use comes first
    # the same, in one batch: the loser is merged away and the survivor takes its customer
    store.links.save([make_link(account_id(3), customer_id="cus_B")])
    store.links.save(
        [
            make_link(account_id(4), customer_id="cus_B"),
            make_link(account_id(3), customer_id="cus_B", status="merged"),
        ]
    )
    assert store.links.by_customer("default", "cus_B").account_id == account_id(4)  # type: ignore[union-attr]
    # but a merged link cannot be brought back into use while another account has its customer
    with pytest.raises(ConflictError, match=f"already linked to account {winner}"):
        store.links.save([make_link(loser, customer_id="cus_A")])


def test_lookup_of_5000_ids_is_chunked(store: StateStore) -> None:
    ids = [account_id(n) for n in range(5000)]
    store.links.save([make_link(a) for a in ids[::2]])
    seen = _count_statements(store, "links")
    got = store.links.get_many("default", ids)
    assert len(got) == 2500
    assert len(seen) == math.ceil(5000 / LOOKUP_CHUNK)
    for _, params in seen:
        assert len(params) <= LOOKUP_CHUNK + 1  # ids + billing account
    assert LOOKUP_CHUNK < 999  # SQLite's historic bound-variable limit


def test_iter_links_pages_and_filters(store: StateStore) -> None:
    ids = [account_id(n) for n in range(25)]
    store.links.save(
        [make_link(a, status="deleted" if n % 5 == 0 else "active") for n, a in enumerate(ids)]
    )
    assert [link.account_id for link in store.links.iter("default", batch=7)] == ids
    deleted = [link.account_id for link in store.links.iter("default", status="deleted", batch=2)]
    assert deleted == ids[::5]
    assert list(store.links.iter("other")) == []
    assert store.links.counts("default") == {"active": 20, "deleted": 5}
    assert store.links.counts("other") == {}


def test_set_link_status(store: StateStore) -> None:
    store.links.save([make_link(account_id(1))])
    assert store.links.set_status("default", account_id(1), "merged")
    assert store.links.get("default", account_id(1)).status == "merged"  # type: ignore[union-attr]
    assert not store.links.set_status("default", account_id(2), "merged")


def test_writebacks_pending_until_marked(store: StateStore) -> None:
    store.links.save(
        [
            make_link(account_id(1)),
            make_link(account_id(2)),
            make_link(account_id(3), writeback_pending=False),
            make_link(account_id(4), status="deleted"),
        ]
    )
    pending = store.links.pending_writebacks("default")
    assert {link.account_id for link in pending} == {account_id(1), account_id(2)}
    assert len(store.links.pending_writebacks("default", limit=1)) == 1
    store.links.mark_written_back("default", [account_id(1)])
    assert [link.account_id for link in store.links.pending_writebacks("default")] == [account_id(2)]
    store.links.mark_written_back("default", [])


# --- orders and cursors -----------------------------------------------------------------------


def test_order_links_upsert(store: StateStore) -> None:
    store.links.save_order_links([make_order("801A", account_id(1)), make_order("801B", account_id(1))])
    store.links.save_order_links([make_order("801A", account_id(2))])  # reparented by a merge
    got = store.links.order_links("default", ["801A", "801B", "801C"])
    assert set(got) == {"801A", "801B"}
    assert got["801A"].account_id == account_id(2)
    assert got["801A"].customer_id == f"cus_{account_id(2)}"
    assert store.links.order_links("other", ["801A"]) == {}
    with store._engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT first_seen_at, last_seen_at FROM order_links WHERE order_id = '801A'")
        ).one()
    assert row[0] <= row[1]


def test_cursors(store: StateStore) -> None:
    assert store.cursors.get("orders:default") is None
    store.cursors.set("orders:default", "2026-01-01T00:00:00Z")
    store.cursors.set("orders:default", "2026-01-02T00:00:00Z")
    assert store.cursors.get("orders:default") == "2026-01-02T00:00:00Z"


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
    assert [(at, run, o.account_id) for at, run, o in failures] == [
        (T0 + timedelta(hours=1), new_run, account_id(2)),
        (T0, old_run, account_id(3)),
        (T0, old_run, account_id(2)),
    ]
    assert len(store.runs.recent_failures(limit=1)) == 1

    everything = list(store.runs.iter_outcomes())
    assert len(everything) == 5 and everything[0][1] == old_run and everything[0][0].tzinfo is UTC
    assert len(list(store.runs.iter_outcomes(failed_only=True))) == 3
    assert [o.account_id for _, _, o in store.runs.iter_outcomes(since=T0 + timedelta(minutes=1))] == [
        account_id(2)
    ]
    assert len(list(store.runs.iter_outcomes(batch=2))) == 5


# --- retry list -------------------------------------------------------------------------------


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


# --- intents ----------------------------------------------------------------------------------


def _intent(n: int, key: str = "k1") -> Intent:
    return Intent(
        "default", account_id(n), key, "h1", T0, payload={"name": "Acme", "metadata": {"sf": "1"}}
    )


def test_intents_record_get_and_drop(store: StateStore) -> None:
    assert store.intents.record(_intent(1)) == _intent(1)
    # a new intent replaces the old one: what is stored is what is sent next
    assert store.intents.record(_intent(1, key="k2")).idempotency_key == "k2"
    store.intents.record(_intent(1))
    store.intents.record(_intent(2))
    assert store.intents.get("default", account_id(1)) == _intent(1)
    assert [i.account_id for i in store.intents.open("default")] == [account_id(1), account_id(2)]
    store.intents.drop("default", account_id(1))
    assert store.intents.get("default", account_id(1)) is None
    assert store.intents.open("eu") == []


def test_complete_create_saves_link_orders_and_drops_intent(store: StateStore) -> None:
    store.intents.record(_intent(1))
    store.intents.complete_create(make_link(account_id(1)), [make_order("801A", account_id(1))])
    assert store.intents.get("default", account_id(1)) is None
    assert store.links.get("default", account_id(1)) is not None
    assert set(store.links.order_links("default", ["801A"])) == {"801A"}
    with pytest.raises(ValueError, match="not for account"):
        store.intents.complete_create(make_link(account_id(2)), [make_order("801B", account_id(3))])


def test_complete_create_is_all_or_nothing(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.intents.record(_intent(1))

    def fail(*_: object) -> None:
        raise RuntimeError("disk went away")

    monkeypatch.setattr(store.intents, "drop", fail)
    with pytest.raises(RuntimeError):
        store.intents.complete_create(make_link(account_id(1)), [make_order("801A", account_id(1))])
    monkeypatch.undo()
    assert store.links.get("default", account_id(1)) is None
    assert store.links.order_links("default", ["801A"]) == {}
    assert store.intents.get("default", account_id(1)) == _intent(1)

    # a failure inside the database (a NOT NULL violation on the order row) rolls back too
    bad = replace(make_order("801B", account_id(1)), customer_id=None)  # type: ignore[arg-type]
    with pytest.raises(sa.exc.IntegrityError):
        store.intents.complete_create(make_link(account_id(1)), [bad])
    assert store.links.get("default", account_id(1)) is None
    assert store.intents.get("default", account_id(1)) is not None


# --- conflicts --------------------------------------------------------------------------------


def test_open_conflict_is_not_duplicated(store: StateStore) -> None:
    first = store.conflicts.open(
        "merge_loser_linked",
        billing_account="default",
        account_id=account_id(1),
        other_account_id=account_id(2),
        customer_id="cus_1",
        details={"merged_into": account_id(2)},
    )
    again = store.conflicts.open(
        "merge_loser_linked", billing_account="default", account_id=account_id(1)
    )
    assert again == first
    assert first.status == "open" and first.details == {"merged_into": account_id(2)}
    assert first.created_at.tzinfo is UTC
    other_kind = store.conflicts.open(
        "merge_both_linked", billing_account="default", account_id=account_id(1)
    )
    assert other_kind.id != first.id
    assert len(store.conflicts.list()) == 2
    assert store.conflicts.held_accounts("default") == {account_id(1)}
    assert store.conflicts.held_accounts("eu") == set()


def test_resolve_conflict_records_who_and_when(store: StateStore) -> None:
    c = store.conflicts.open(
        "merge_loser_linked", billing_account="default", account_id=account_id(1)
    )
    resolved = store.conflicts.resolve(c.id, resolution="kept winner", by="alice@example.com")
    assert (resolved.status, resolved.resolution, resolved.resolved_by) == (
        "resolved",
        "kept winner",
        "alice@example.com",
    )
    assert resolved.resolved_at is not None and resolved.resolved_at.tzinfo is UTC
    assert store.conflicts.get(c.id) == resolved
    assert store.conflicts.list() == []
    assert store.conflicts.list("resolved") == [resolved]
    assert store.conflicts.list(None) == [resolved]
    assert store.conflicts.held_accounts("default") == set()
    with pytest.raises(ConflictResolutionError, match=r"already resolved by alice@example\.com"):
        store.conflicts.resolve(c.id, resolution="again", by="bob")
    with pytest.raises(ConflictResolutionError, match=r"no conflict #999"):
        store.conflicts.resolve(999, resolution="x", by="bob")
    assert store.conflicts.get(999) is None
    # once resolved, the same kind can be opened again for the account
    reopened = store.conflicts.open(
        "merge_loser_linked", billing_account="default", account_id=account_id(1)
    )
    assert reopened.id != c.id and reopened.status == "open"


# --- status -----------------------------------------------------------------------------------


def test_stats(store: StateStore) -> None:
    store.links.save([make_link(account_id(1)), make_link(account_id(2), status="held")])
    store.conflicts.open("x", billing_account="default", account_id=account_id(2))
    store.retries.schedule("default", {account_id(3): "e"}, now=T0)
    store.cursors.set("orders:default", "2026-01-01T00:00:00Z")
    run_id = store.runs.start("sync", dry_run=False)
    stats = store.stats()
    assert stats["links"] == {"default": {"active": 1, "held": 1}}
    assert stats["open_conflicts"] == 1
    assert stats["retries"] == {"due": 1, "total": 1}
    assert stats["cursors"]["orders:default"]["value"] == "2026-01-01T00:00:00Z"
    assert stats["last_run"]["run_id"] == run_id
    assert stats["database"]["revision"] == StateStore.head_revision()


def test_fingerprints_in_use_lists_what_active_links_were_written_with(store: StateStore) -> None:
    store.links.save([
        make_link(account_id(1), mapping_fingerprint="f1"),
        make_link(account_id(2), mapping_fingerprint="f2"),
        make_link(account_id(3), mapping_fingerprint=None),
        make_link(account_id(4), mapping_fingerprint="f3", status="merged"),
    ])

    assert store.links.fingerprints_in_use("default") == {"f1", "f2"}
    assert store.links.fingerprints_in_use("other") == set()
