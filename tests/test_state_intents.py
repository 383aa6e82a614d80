"""`store.intents`: create intents, on SQLite and on PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

import pytest
import sqlalchemy as sa
from state_fixtures import T0, account_id, db_url, make_link, make_order, store

from connector.state.records import Intent
from connector.state.store import StateStore

__all__ = ["db_url", "store"]  # fixtures, imported for pytest


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
