"""`store.links`: cross-references and order links, on SQLite and on PostgreSQL."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from state_fixtures import T0, account_id, db_url, make_link, make_order, store

from connector.errors import ConflictError
from connector.state.database import LOOKUP_CHUNK
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


def test_fingerprints_in_use_lists_what_active_links_were_written_with(store: StateStore) -> None:
    store.links.save([
        make_link(account_id(1), mapping_fingerprint="f1"),
        make_link(account_id(2), mapping_fingerprint="f2"),
        make_link(account_id(3), mapping_fingerprint=None),
        make_link(account_id(4), mapping_fingerprint="f3", status="merged"),
    ])

    assert store.links.fingerprints_in_use("default") == {"f1", "f2"}
    assert store.links.fingerprints_in_use("other") == set()


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
