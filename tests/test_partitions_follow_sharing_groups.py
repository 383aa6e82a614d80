"""Daemon partitions follow sharing groups: one partition per group (its accounts run together
under one lock and one cursor scope), one per account outside a group; a group's partition whose
cursors are new starts from the least advanced of its members' old cursors, never skipping a
change. On SQLite and PostgreSQL stores."""

from __future__ import annotations

import pytest
from state_fixtures import db_url, store

from connector.config import Config
from connector.engine import DELETIONS_CURSOR, ORDERS_CURSOR
from connector.partitions import Partition, partitions_holding, partitions_of, seed_cursors
from connector.state.store import StateStore

__all__ = ["db_url", "store"]  # fixtures, imported for pytest

GROUP = Partition("eu+uk", ("eu", "uk"))
EARLY, LATE = "2026-03-01T10:00:00.000+0000", "2026-03-02T09:00:00.000+0000"


def config(groups: list[object]) -> Config:
    return Config.model_validate(
        {
            "salesforce": {"auth": "access_token", "instance_url": "http://127.0.0.1:9"},
            "billing": {
                "accounts": [
                    {"name": n, "api_key_env": "STRIPE_API_KEY", "writeback_field": f"F_{n}__c"}
                    for n in ("us", "eu", "apac", "uk")
                ],
                "sharing_groups": groups,
            }
        }
    )


def test_a_sharing_group_is_one_partition_where_its_first_member_stands() -> None:
    parts = partitions_of(config([["eu", "uk"]]))
    assert parts == [Partition("us"), GROUP, Partition("apac")]
    assert [p.accounts for p in parts] == [("us",), ("eu", "uk"), ("apac",)]
    assert GROUP.cursor_scope == "eu+uk" and Partition("us").cursor_scope == "us"
    named = partitions_of(config([{"name": "europe", "accounts": ["uk", "eu"]}]))
    assert named[1] == Partition("europe", ("uk", "eu"))
    assert named[1].lock_name == "partition-europe" and named[1].cursor_scope == "eu+uk"
    assert partitions_holding(config([["eu", "uk"]]), ["uk"]) == [GROUP]
    assert partitions_holding(config([["eu", "uk"]]), ["us", "apac"]) == [Partition("us"), Partition("apac")]


def test_a_group_named_like_a_billing_account_is_refused() -> None:
    with pytest.raises(ValueError, match="sharing group name 'us'"):
        config([{"name": "us", "accounts": ["eu", "uk"]}])


def test_a_new_group_partition_starts_at_its_least_advanced_member(store: StateStore) -> None:
    store.cursors.set(f"{ORDERS_CURSOR}@eu", LATE)
    store.cursors.set(f"{ORDERS_CURSOR}@uk", EARLY)
    store.cursors.set(f"{DELETIONS_CURSOR}@eu", EARLY)
    store.cursors.set(f"{DELETIONS_CURSOR}@uk", LATE)

    seed_cursors(store.cursors, [GROUP], GROUP.cursor_scope)

    assert store.cursors.get(f"{ORDERS_CURSOR}@eu+uk") == EARLY
    assert store.cursors.get(f"{DELETIONS_CURSOR}@eu+uk") == EARLY
    # Once the group has cursors of its own, they are its progress: never moved again.
    store.cursors.set(f"{ORDERS_CURSOR}@eu+uk", "2026-03-05T00:00:00.000+0000")
    store.cursors.set(f"{ORDERS_CURSOR}@uk", "2026-03-09T00:00:00.000+0000")
    seed_cursors(store.cursors, [GROUP], GROUP.cursor_scope)
    assert store.cursors.get(f"{ORDERS_CURSOR}@eu+uk") == "2026-03-05T00:00:00.000+0000"


def test_a_member_that_never_ran_alone_leaves_the_group_reading_from_the_start(store: StateStore) -> None:
    store.cursors.set(f"{ORDERS_CURSOR}@eu", LATE)

    seed_cursors(store.cursors, [GROUP], GROUP.cursor_scope)

    assert store.cursors.get(f"{ORDERS_CURSOR}@eu+uk") is None


def test_the_only_partition_seeds_the_shared_cursors_from_its_members(store: StateStore) -> None:
    # The group is all there is: the daemon uses the cursors `sync` uses.
    store.cursors.set(f"{ORDERS_CURSOR}@eu", LATE)
    store.cursors.set(f"{ORDERS_CURSOR}@uk", EARLY)

    seed_cursors(store.cursors, [GROUP], None)

    assert store.cursors.get(ORDERS_CURSOR) == EARLY
