"""A replica that takes a partition over marks only that partition's abandoned runs as
interrupted: another replica's run of another partition keeps running (migration 0002)."""

from __future__ import annotations

from state_fixtures import store

from connector.state.store import StateStore

__all__ = ["store"]  # fixture, imported for pytest


def test_marking_a_partition_leaves_other_partitions_runs_running(store: StateStore) -> None:
    eu = store.runs.start("sync", dry_run=False, partition="eu")
    us = store.runs.start("sync", dry_run=False, partition="us")
    both = store.runs.start("sync", dry_run=False, partition="eu,us")  # a one-shot sync
    old = store.runs.start("sync", dry_run=False)  # before partitions were recorded
    like = store.runs.start("sync", dry_run=False, partition="eu_x")  # '_' is not a wildcard

    assert store.runs.mark_interrupted("eu") == 3

    status = {r: store.runs.get(r).status for r in (eu, us, both, old, like)}  # type: ignore[union-attr]
    assert status == {
        eu: "interrupted",
        us: "running",
        both: "interrupted",
        old: "interrupted",
        like: "running",
    }
    assert store.runs.get(eu).partition == "eu"  # type: ignore[union-attr]
