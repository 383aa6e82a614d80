"""Partitions: the units of work runners share, one per billing account, or one per sharing
group (its accounts sync together: one member writes the group's customer, so splitting the
group could create a second customer for it).

Each partition has its own lock in the state store (a PostgreSQL advisory lock, or an OS file
lock next to the SQLite file). `sync` and `backfill` hold every partition's lock for their run
(with `--account`, only the locks of the partitions holding those accounts); `run` (the daemon)
holds the partitions it was given, so several replicas share the work and a partition whose
holder died is free at once. The held locks are checked before each write
(`check_all`, the engine's `before_write`). What this module must never do: wait for a lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime

from connector.config import Config
from connector.engine import DELETIONS_CURSOR, ORDERS_CURSOR
from connector.log import get_logger
from connector.salesforce import parse_sf_datetime
from connector.state.ports import Cursors, Lock, Locks

log = get_logger(__name__)

PARTITION_PREFIX = "partition-"
MEMBER_PREFIX = "member-"
# The incremental cursors a sync keeps per partition (a backfill's resume points start over).
# Each watched object's own cursor (CHANGES_CURSOR) starts from ORDERS_CURSOR when it has none,
# and ORDERS_CURSOR is the least of them: seeding it is enough never to skip a change.
RUN_CURSORS = (ORDERS_CURSOR, DELETIONS_CURSOR)


@dataclass(frozen=True, slots=True, order=True)
class Partition:
    """One billing account's share of the work, or a sharing group's (`group`: its accounts)."""

    name: str
    group: tuple[str, ...] = ()

    @property
    def accounts(self) -> tuple[str, ...]:
        return self.group or (self.name,)

    @property
    def lock_name(self) -> str:
        return PARTITION_PREFIX + lock_safe(self.name)

    @property
    def cursor_scope(self) -> str:
        """The suffix of this partition's cursors when it runs apart from the others: the
        billing account, or the group's accounts sorted and joined by '+' (what `sync
        --account` of a group member has always used)."""
        return "+".join(sorted(self.accounts))


def partitions_of(config: Config) -> list[Partition]:
    """In the order of billing.accounts: a sharing group where its first member stands."""
    out: list[Partition] = []
    for a in config.billing.accounts:
        group = config.billing.group_of(a.id)
        if group is None:
            out.append(Partition(a.id))
        elif all(p.name != group.label for p in out):
            out.append(Partition(group.label, tuple(group.accounts)))
    return out


def partitions_holding(config: Config, accounts: Iterable[str]) -> list[Partition]:
    """The partitions that hold any of `accounts` (`sync --account` takes only their locks)."""
    wanted = set(accounts)
    return [p for p in partitions_of(config) if wanted & set(p.accounts)]


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


def scoped_cursor(name: str, scope: str | None) -> str:
    """The stored name of cursor `name` for a run with cursors of its own (see Engine.cursor)."""
    return f"{name}@{scope}" if scope else name


def seed_cursors(cursors: Cursors, parts: Sequence[Partition], scope: str | None) -> None:
    """Give a run's cursors a start when they have none yet, from what its partitions applied
    under earlier names: a sharing group that used to run as one partition per member (before
    the group was configured) starts from the least advanced of its members' cursors. Never
    from a later point than any of them: a change one member has not applied is read again
    (and found unchanged by the others), never skipped. With no cursor to go by, nothing is
    written and the run reads from the start, as any new partition does. Call holding `parts`'
    locks."""
    for name in RUN_CURSORS:
        target = scoped_cursor(name, scope)
        if cursors.get(target) is not None:
            continue
        starts = [_progress(cursors, name, p) for p in parts]
        known = [s for s in starts if s is not None]
        if not parts or len(known) != len(starts):
            continue
        value, _ = min(known, key=lambda s: s[1])
        cursors.set(target, value)
        log.info("partition.cursor_seeded", cursor=target, value=value, partitions=len(parts))


def _progress(cursors: Cursors, name: str, part: Partition) -> tuple[str, datetime] | None:
    """How far `part` has applied changes for cursor `name`: its own cursor, or for a group
    that has none yet, the least advanced of its members' (None: unknown)."""
    candidates = [[part.cursor_scope]]
    if len(part.accounts) > 1:
        candidates.append(list(part.accounts))
    for scopes in candidates:
        values = [cursors.get(scoped_cursor(name, s)) for s in scopes]
        stamps = [(v, parse_sf_datetime(v)) for v in values if v]
        parsed = [(v, t) for v, t in stamps if t is not None]
        if len(parsed) == len(scopes):
            return min(parsed, key=lambda s: s[1])
    return None
