"""Partitions: the units of work runners share, one per billing account.

Each partition has its own lock in the state store (a PostgreSQL advisory lock, or an OS file
lock next to the SQLite file). `sync` and `backfill` hold every partition's lock for their run;
`run` (the daemon) holds the partitions it was given, so several replicas share the work and a
partition whose holder died is free at once. The held locks are checked before each write
(`check_all`, the engine's `before_write`). What this module must never do: wait for a lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from connector.config import Config
from connector.state.ports import Lock, Locks

PARTITION_PREFIX = "partition-"
MEMBER_PREFIX = "member-"


@dataclass(frozen=True, slots=True, order=True)
class Partition:
    """One billing account's share of the work."""

    billing_account: str

    @property
    def lock_name(self) -> str:
        return PARTITION_PREFIX + lock_safe(self.billing_account)


def partitions_of(config: Config) -> list[Partition]:
    return [Partition(a.id) for a in config.billing.accounts]


def lock_safe(text: str) -> str:
    """Lock names allow letters, digits, '-' and '_'; billing account ids may also hold '.'."""
    if all(ch.isalnum() or ch in "-_" for ch in text):
        return text
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text) + (
        "-" + hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
    )


def member_lock_name(holder: str) -> str:
    return MEMBER_PREFIX + hashlib.blake2b(holder.encode(), digest_size=8).hexdigest()


class HeldLocks:
    """The partition locks one run holds; `check` is the engine's `before_write` hook."""

    def __init__(self, handles: Sequence[Lock]) -> None:
        self.handles = list(handles)

    def check(self) -> None:
        for h in self.handles:
            h.check()


@contextmanager
def hold_partitions(locks: Locks, parts: Sequence[Partition], holder: str) -> Iterator[HeldLocks]:
    """Hold every partition's lock for the block, or raise `LockHeldError` naming the runner
    that holds the first one that is taken (and hold none)."""
    with ExitStack() as stack:
        handles = [stack.enter_context(locks.hold(p.lock_name, holder=holder)) for p in parts]
        yield HeldLocks(handles)
