"""One sync pass: read -> plan -> apply -> record, page by page and billing account by billing account.

The engine reads activated orders page by page from a `Source`, fetches in batches the context a
decision needs (`PlanContext`), lets the pure planner decide every record (`planner.plan_record`),
applies each decision with one small function per action through the `BillingTarget` port, and
records a page's outcomes, links, retries and conflicts in one store transaction. A dry run stops
after planning: the plan it prints is what the run does. It never merges, moves or deletes a
billing customer, and never writes to a customer while a conflict about that account is open.
It knows no billing system by name: keys, windows and tags come from `target.rules`.

Guarantees a run keeps, whatever fails:
- the creates of a page are recorded as intents (key and exact payload) before any is sent, and
  the links are saved with the intents dropped in the page's transaction, so a crash in between
  is finished with the same key on the next run instead of creating a second customer;
- an unchanged payload (same hash as last written) costs no billing call at all;
- an incremental cursor (one per watched object) moves only to the end of a time window whose
  changes were all read and whose accounts' orders were all applied, and never past the
  Salesforce server time at which the run's reading began (a resumed backfill: its first
  attempt's), never to the newest row some query happened to return; records that failed go
  to the retry list instead of holding the cursor back for everyone else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import structlog

from connector.background import Background
from connector.billing.base import (
    BillingTarget,
    BillingUnreachable,
    CustomerMissing,
    PartiallyApplied,
    PartiallyRefused,
)
from connector.config import DEFAULT_MAX_IN_FLIGHT
from connector.errors import (
    ConnectorError,
    LockLost,
    RecordError,
    TransientError,
    UnavailableError,
)
from connector.log import REDACTOR
from connector.mapping import CustomerMapping
from connector.mapping.compile import read_source, soql_path
from connector.planner import (
    LINKS,
    Lookup,
    PlanContext,
    PlannedWrite,
    plan_digest,
    plan_record,
    wants_new_customer,
)
from connector.prefetch import prefetched
from connector.routing import RoutingConfig, route
from connector.salesforce import (
    IN_CHUNK,
    ChangePage,
    DeletedAccount,
    OrderPage,
    OrderRow,
    Watched,
    WriteBackResult,
    parse_sf_datetime,
    soql_stamp,
)
from connector.sfid import normalize_sf_id
from connector.state.ports import Store
from connector.state.records import Intent, Link, OrderLink, Outcome
from connector.writers import Stop, WritePool

__all__ = ["ORDERS_CURSOR", "Engine", "PlannedWrite", "RunReport", "Source"]

log = structlog.get_logger("connector.engine")

Mode = Literal["sync", "backfill", "recheck", "retry"]

ORDERS_CURSOR = "salesforce.orders.modstamp"
DELETIONS_CURSOR = "salesforce.accounts.deleted.modstamp"
# One cursor per watched object (`salesforce.changes.Account.modstamp`...): every change of that
# object stamped before it has been read and its accounts' orders applied. ORDERS_CURSOR is
# kept as the least of them (what `status` and the daemon show, and where a cursor of an
# object newly watched starts); a store written by a release with the one OR'd query has only
# ORDERS_CURSOR, and every object's cursor starts from it.
CHANGES_CURSOR = "salesforce.changes.{}.modstamp"
# Custom relationships resolved by describe, remembered between runs (JSON: when, and
# "Parent.Name__r" -> [object, id field]): without it every run of a mapping that reads through
# a custom relationship spends a describe call per object on it. Re-described once a day.
RELATIONSHIPS_CACHE = "salesforce.relationships.{}"
RELATIONSHIPS_TTL = timedelta(days=1)
# A window that still times out at this width is not a question of width: the run fails.
MIN_WINDOW = timedelta(seconds=1)
SF_STAMP = "%Y-%m-%dT%H:%M:%S.000+0000"
# After this many records in a row found no connection to a billing account, the account is
# down, not the records: the run stops (exit 3) instead of failing every record slowly.
UNREACHABLE_STREAK = 3
# How many accounts one dependents query names (SOQL IN lists stay well under the URI limit).
DEPENDENTS_CHUNK = 200


class Source(Protocol):
    """What the engine needs from Salesforce (implemented by `salesforce.SalesforceSource`)."""

    org_id: str

    def activated_orders(
        self,
        fields: Sequence[str],
        *,
        watch: Sequence[str] = ...,
        activated_from: datetime | None = None,
        activated_until: datetime | None = None,
        after_id: str | None = None,
        account_ids: Sequence[str] | None = None,
        referencing: Mapping[str, Sequence[str]] | None = None,
    ) -> Iterator[OrderPage]: ...

    def write_back(
        self, pairs: Sequence[tuple[str, str]], field_name: str | None = None
    ) -> list[WriteBackResult]: ...

    def deleted_accounts(self, *, since: datetime | None) -> Iterator[list[DeletedAccount]]: ...

    def server_time(self) -> datetime: ...

    def watched_objects(self, relationships: Sequence[str]) -> list[Watched]: ...

    def changes(
        self,
        sobject: str,
        *,
        since: datetime,
        until: datetime | None,
        after: tuple[str, str] | None = None,
        fields: Sequence[str] = (),
    ) -> ChangePage: ...

    def change_query(
        self,
        sobject: str,
        *,
        since: datetime,
        until: datetime | None,
        after: tuple[str, str] | None = None,
        fields: Sequence[str] = (),
    ) -> tuple[str, bool, int]: ...

    def deleted_query(self, *, since: datetime | None) -> tuple[str, bool, int]: ...

    def prime(
        self, queries: Sequence[tuple[str, bool, int]], *, describe: Sequence[str] = ()
    ) -> None: ...

    def order_query(
        self,
        fields: Sequence[str],
        *,
        watch: Sequence[str] = ...,
        activated_from: datetime | None = None,
        activated_until: datetime | None = None,
        after_id: str | None = None,
    ) -> tuple[str, bool, int]: ...

    def resolve_relationships(
        self, relationships: Sequence[str], alongside: Sequence[tuple[str, bool, int]] = ()
    ) -> None: ...

    def known_relationships(self) -> dict[str, tuple[str, str]]: ...

    def learn_relationships(self, known: Mapping[str, Sequence[str]]) -> None: ...

    def accounts_referencing(self, path: str, ids: Sequence[str]) -> list[str]: ...


# --- what a run reports ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What the run did with one account: the planned action and the outcome it had."""

    account_id: str
    billing_account: str
    action: str
    outcome: str


class RunSink(Protocol):
    """Where a run hands what it planned and decided, page by page, as it goes.

    The run keeps neither: `sync --dry-run` prints each page's plan before reading the next, and
    the daemon drops them, so memory stays bounded by a page. `KeepAll` keeps both for the
    report (tests, the demo)."""

    def planned(self, plans: Sequence[PlannedWrite]) -> None: ...

    def decided(self, decisions: Sequence[Decision]) -> None: ...


class KeepAll:
    """Keeps every planned write and decision of a run for `RunReport.plan` and `.decisions`:
    the whole run in memory, for small runs only."""

    def __init__(self) -> None:
        self.plan: list[PlannedWrite] = []
        self.decisions: list[Decision] = []

    def planned(self, plans: Sequence[PlannedWrite]) -> None:
        self.plan.extend(plans)

    def decided(self, decisions: Sequence[Decision]) -> None:
        self.decisions.extend(decisions)


class Discard:
    """Keeps nothing: the report has the counts."""

    def planned(self, plans: Sequence[PlannedWrite]) -> None:
        pass

    def decided(self, decisions: Sequence[Decision]) -> None:
        pass


@dataclass
class AccountCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: int = 0
    failed: int = 0
    calls: int = 0

    def add(self, kind: str) -> None:
        key = {
            "create": "created",
            "replay": "created",
            "reconcile": "created",
            "created": "created",
            "update": "updated",
            "adopt": "updated",
            "updated": "updated",
            "adopted": "updated",
        }.get(kind, kind)
        if key in ("created", "updated", "unchanged", "refused", "failed"):
            setattr(self, key, getattr(self, key) + 1)


@dataclass(frozen=True, slots=True)
class RunReport:
    run_id: str
    mode: str
    dry_run: bool
    status: str  # succeeded | partial | failed | interrupted
    orders_read: int
    accounts_seen: int
    created: int
    updated: int
    unchanged: int
    refused: int
    failed: int
    salesforce_calls: int
    billing_calls: int
    writeback_failed: int = 0
    billing_accounts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    plan: tuple[PlannedWrite, ...] = ()
    decisions: tuple[Decision, ...] = ()
    error: str | None = None
    error_exit_code: int | None = None
    # The error's class name, for the daemon's stop-or-back-off decision.
    error_type: str | None = None

    @property
    def stripe_calls(self) -> int:
        """The name `billing_calls` had before the port was neutral; kept for one release."""
        return self.billing_calls

    def as_json(self) -> dict[str, Any]:
        keys = (
            "run_id",
            "mode",
            "orders_read",
            "accounts_seen",
            "created",
            "updated",
            "unchanged",
            "refused",
            "failed",
            "writeback_failed",
            "salesforce_calls",
            "billing_calls",
            "stripe_calls",
        )
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        out["billing_accounts"] = {k: dict(v) for k, v in self.billing_accounts.items()}
        return out

    def summary(self) -> str:
        """One line for people: what happened and what it cost."""
        wb = f", write-back failed {self.writeback_failed}" if self.writeback_failed else ""
        return (
            f"created {self.created}, updated {self.updated}, unchanged {self.unchanged}, "
            f"refused {self.refused}, failed {self.failed}{wb} | orders read {self.orders_read}, "
            f"accounts {self.accounts_seen} | Salesforce calls {self.salesforce_calls}, "
            f"billing calls {self.billing_calls}"
        )

    @property
    def exit_code(self) -> int:
        if self.error_exit_code is not None:
            return self.error_exit_code
        bad = self.failed or self.refused or self.writeback_failed
        return 1 if (bad or self.status != "succeeded") else 0


# --- the small pieces of one run -------------------------------------------------------------


@dataclass
class Tally:
    """Counts of one run, per billing account; each account is counted once per pass.

    Counts only, never ids: a run's memory is bounded by a page, at a million accounts as at a
    thousand. `accounts_seen` counts the distinct accounts of each page read, so an account
    whose orders fall on two pages is counted on each (it is planned on each too)."""

    orders_read: int = 0
    accounts_seen: int = 0
    by_account: dict[str, AccountCounts] = field(default_factory=dict)
    writeback_failed: int = 0
    # Orders no routing rule sends anywhere: refused, but of no billing account.
    unrouted: int = 0

    def of(self, ba: str) -> AccountCounts:
        return self.by_account.setdefault(ba, AccountCounts())

    def total(self, key: str) -> int:
        extra = self.unrouted if key == "refused" else 0
        return extra + sum(int(getattr(c, key)) for c in self.by_account.values())

    def as_counts(self) -> dict[str, int]:
        keys = ("created", "updated", "unchanged", "refused", "failed")
        return {
            "orders_read": self.orders_read,
            "accounts_seen": self.accounts_seen,
            **{k: self.total(k) for k in keys},
        }


@dataclass(frozen=True, slots=True)
class Applied:
    """One applied decision: its outcome for the store, and the link as it is now."""

    planned: PlannedWrite
    outcome: Outcome
    link: Link | None
    save_link: bool = False  # the link changed and must be saved
    created: bool = False  # a new link whose intent is dropped with it
    conflict: tuple[str, str | None, dict[str, Any]] | None = None  # kind, other account, details
    unreachable: BillingUnreachable | None = None
    # Part of the write was applied, the rest refused: retried like a failure, counted refused.
    retry: bool = False


@dataclass
class WriteBacks:
    """Customer ids waiting to be written to the Account's write-back field, sent 200 a call."""

    billing_account: str
    field_name: str
    batch: int
    pending: dict[str, str] = field(default_factory=dict)
    confirmed: list[str] = field(default_factory=list)

    def queue(self, link: Link, field_value: str | None, *, overwrite: bool) -> None:
        if link.billing_account != self.billing_account or link.status != "active":
            return
        if field_value == link.customer_id:
            if link.writeback_pending:
                self.confirmed.append(link.account_id)
            return
        if field_value and not overwrite:
            return  # never overwrite a field that names another customer (a conflict is open)
        self.pending[link.account_id] = link.customer_id

    def take(self, *, final: bool) -> Iterator[list[tuple[str, str]]]:
        while self.pending and (final or len(self.pending) >= self.batch):
            batch = list(self.pending.items())[: self.batch]
            for a, _ in batch:
                del self.pending[a]
            yield batch


@dataclass(frozen=True)
class RunScope:
    """What one run carries from page to page: each piece small and typed."""

    run_id: str
    dry_run: bool
    tally: Tally
    writebacks: dict[str, WriteBacks]  # billing account -> its write-back queue
    fresh: Mapping[str, Mapping[str, datetime]]  # ba -> account -> when an admin chose --new
    held_now: dict[str, set[str]]  # ba -> accounts this run held (a dry run cannot store them)
    streak: dict[str, int]  # ba -> records in a row that found no connection
    sink: RunSink = field(default_factory=KeepAll)
    # ba -> the most write requests it had in flight at once
    peak_in_flight: dict[str, int] = field(default_factory=dict)
    # write-back batches on their way to Salesforce beside the writers
    beside: Background[tuple[WriteBacks, list[tuple[str, str]]]] = field(
        default_factory=lambda: Background("writeback")
    )
    # The current page's plan and decisions, handed to `sink` when the page is done.
    plan: list[PlannedWrite] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    expected_total: list[int | None] = field(default_factory=lambda: [None])
    # Accounts whose orders the incremental pass read after the snapshot: read once a run.
    read: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class SharingGroup:
    """Billing accounts that share customers: one customer per Salesforce account in the group,
    created in one member (the primary, or the account of its first routed order) and used from
    the others by the same id. The member whose link is oldest writes it; the others only link."""

    label: str
    members: tuple[str, ...]
    primary: str | None = None


# The conflict opened when one Salesforce account has different customers in two accounts of a
# sharing group (a group formed after customers existed): neither is written until an admin
# chooses the customer the group uses.
GROUP_CONFLICT = "shared_group_separate_customers"


def watched_relationships(fields: Sequence[str]) -> list[str]:
    """Every relationship a mapping reads through, e.g. Account, Account.Parent, BillToContact."""
    out: dict[str, None] = {"Account": None}
    for f in fields:
        parts = f.split(".")
        for i in range(1, len(parts)):
            out[".".join(parts[:i])] = None
    return list(out)


def link_sources(mapping: CustomerMapping) -> tuple[str, ...]:
    """Source paths whose value the `link` transform turns into a customer id (Account.ParentId)."""
    out: dict[str, None] = {}
    for plan in mapping.fields:
        if any(t.normalised() == "link" for t in plan.transforms):
            out.update(dict.fromkeys(plan.sources))
    return tuple(out)


def account_fields(paths: Iterable[str], writeback_fields: Iterable[str]) -> list[str]:
    """The Account's own fields an order's payload, routing and write-back depend on, named as
    on the Account: `Account.Name` -> Name, `Account.Parent.Name` -> ParentId (which parent is
    read), `Account.Partner__r.Name` -> Partner__c, and every write-back field."""
    out: dict[str, str] = {}
    for path in paths:
        parts = path.split(".")
        if len(parts) < 2 or parts[0].casefold() != "account":
            continue
        if len(parts) == 2:
            name = parts[1]
        else:
            rel = parts[1]
            name = rel[:-3] + "__c" if rel.casefold().endswith("__r") else rel + "Id"
        out.setdefault(name.casefold(), name)
    for f in writeback_fields:
        out.setdefault(f.casefold(), f)
    return sorted(out.values(), key=str.casefold)


def record_digest(
    record: Mapping[str, Any], fields: Sequence[str], overrides: Mapping[str, str] | None = None
) -> str:
    """A digest of `fields` of a record as REST returns it (names case-insensitive); `overrides`
    (folded field name -> value) stand for values the connector is about to write.

    Computed for every record of every page, so it reads each field once (by its own name,
    folding the record's keys only when a name is written in another case) and hashes the
    repr of the values with blake2b: JSON encoding and sha256 cost several times more. Values
    are JSON scalars (or dicts of them, for compound fields), whose repr is stable; the field
    names are fixed per engine, so the values stand in their order without them.
    """
    values: list[Any] = []
    folded: dict[str, Any] | None = None
    for f in fields:
        if overrides and (key := f.casefold()) in overrides:
            values.append(overrides[key])
        elif f in record:
            values.append(record[f])
        else:
            if folded is None:
                folded = {k.casefold(): v for k, v in record.items() if k != "attributes"}
            values.append(folded.get(f.casefold()))
    return hashlib.blake2b(repr(values).encode(), digest_size=32).hexdigest()


def plan_digest_scope(billing_account: str) -> str:
    """Where a billing account's plan digests are kept among the source digests (`sobject`)."""
    scope = f"plan:{billing_account}"
    if len(scope) <= 64:  # the column's width
        return scope
    return "plan:" + hashlib.blake2b(billing_account.encode(), digest_size=16).hexdigest()


class Engine:
    """Runs sync passes. One engine per process; runs are serialised by the store lock."""

    def __init__(
        self,
        *,
        source: Source,
        targets: Sequence[BillingTarget],
        store: Store,
        mapping: CustomerMapping,
        overlap_seconds: int = 300,
        writeback_fields: Mapping[str, str] | None = None,
        writeback_batch: int = 200,
        salesforce_calls: Callable[[], int] = lambda: 0,
        on_progress: Callable[[int, int | None], None] | None = None,
        stop: threading.Event | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        before_write: Callable[[], None] | None = None,
        cursor_scope: str | None = None,
        routing: RoutingConfig | None = None,
        sharing_groups: Sequence[SharingGroup] = (),
        mappings: Mapping[str, CustomerMapping] | None = None,
        max_in_flight: Mapping[str, int] | None = None,
    ) -> None:
        self.source = source
        # Billing account -> most write requests in flight at once (1: one at a time).
        self.max_in_flight = dict(max_in_flight or {})
        self.targets = list(targets)
        # Which billing account each order goes to (None: every order to every account).
        self.routing = routing
        self.groups = [g for g in sharing_groups if len(g.members) > 1]
        self.store = store
        self.mapping = mapping
        # A billing account with a mapping folder of its own (mappings/<name>/) uses it.
        self.mappings = dict(mappings or {})
        self.overlap = timedelta(seconds=overlap_seconds)
        # Billing account -> the Account field that receives its customer id (some have none).
        self.writeback_fields = dict(writeback_fields or {})
        self.writeback_batch = writeback_batch
        self._sf_calls = salesforce_calls
        self.on_progress = on_progress
        self.stop = stop or threading.Event()
        self.now = now
        # The runner lock's check: raises LockLost before a write when the lock is gone.
        self.before_write = before_write or (lambda: None)
        # A daemon partition (one billing account of several), or `sync --account`, keeps
        # cursors of its own: one partition's progress says nothing about what another has
        # applied, so the shared cursors never move past changes the others have not.
        self.cursor_scope = cursor_scope
        every = [mapping, *self.mappings.values()]
        unique: dict[str, str] = {}
        for m in every:
            for f in m.soql_fields():
                unique.setdefault(f.casefold(), f)
        # Which Account fields a change must touch to matter (see _skip_unchanged_accounts);
        # the order query reads them all, so a row's Account carries what the digest covers.
        self.account_fields = account_fields(
            [*unique.values(), *getattr(source, "extra_fields", ())],
            self.writeback_fields.values(),
        )
        for f in self.account_fields:
            unique.setdefault(f"account.{f.casefold()}", f"Account.{f}")
        self.fields = sorted(unique.values())
        self.watch = watched_relationships(self.fields)
        self.link_sources = tuple(dict.fromkeys(s for m in every for s in link_sources(m)))
        self._watched: list[Watched] | None = None
        self._persist_relationships = True

    # --- the run --------------------------------------------------------------------------

    def run(
        self,
        mode: Mode = "sync",
        *,
        dry_run: bool = False,
        since: datetime | None = None,
        until: datetime | None = None,
        retry_all: bool = False,
        sink: RunSink | None = None,
    ) -> RunReport:
        """One pass. `sink` receives the plan and decisions page by page; without one they are
        kept whole for the report (`KeepAll`), which only small runs can afford."""
        run_id = (
            self.store.runs.start(
                mode, dry_run=dry_run, partition=",".join(t.name for t in self.targets)
            )
            if not dry_run
            else _dry_run_id()
        )
        structlog.contextvars.bind_contextvars(run_id=run_id)
        scope = self._scope(run_id, dry_run, sink if sink is not None else KeepAll())
        # What describe resolved is remembered by runs that write; a dry run writes nothing.
        self._persist_relationships = not dry_run
        sf_start = self._sf_calls()
        calls_start = {t.name: _pacing_counters(t) for t in self.targets}
        status, error, error_exit = "succeeded", None, None
        # The error's class (AuthenticationError, ConfigError, LockLost...): the daemon stops on
        # what will not pass by itself and backs off on the rest.
        error_type: str | None = None
        log.info("run.started", mode=mode, dry_run=dry_run, since=_iso(since), until=_iso(until))
        try:
            effective = mode
            if mode == "sync" and self._mapping_changed():
                # A changed mapping can change every payload: re-evaluate every linked account.
                log.info("run.mapping_changed", fingerprint=self.mapping.fingerprint)
                effective = "recheck"
            # An incremental sync fetches the deletions' first page and every watched
            # object's first change page in one Composite call (Salesforce counts it as
            # one); its answer's Date, less the time the call took, is the snapshot.
            snapshot = self._prime_sync_reads() if effective == "sync" else None
            if mode == "backfill":
                self._prime_backfill_reads(since, until)
            if mode in ("sync", "backfill"):
                # Merges and deletes first, so the accounts they concern are held before any
                # of their orders is planned.
                self._process_deletions(scope)
            if snapshot is None and mode != "retry":
                snapshot = self.source.server_time()
            completed, snapshot = self._read_and_apply(
                scope, effective, since=since, until=until, snapshot=snapshot
            )
            if completed and mode in ("sync", "retry"):
                completed = self._process_retries(scope, retry_all=retry_all or mode == "retry")
            if completed and mode == "backfill" and not dry_run:
                # The syncs after a backfill read the change queries of every watched object:
                # resolving them here (a describe per custom relationship, remembered in the
                # store) spares the first sync those calls, when the backfill's own
                # write-backs already fill its Account window.
                with contextlib.suppress(UnavailableError, TransientError):
                    self.watched()
            self._flush_writebacks(scope, final=True)
            if completed and not dry_run and snapshot is not None:
                self._advance_cursor(
                    mode, snapshot, backfill_window=since is None and until is None
                )
            if not completed:
                status = "interrupted"
            elif (
                scope.tally.total("failed")
                or scope.tally.total("refused")
                or scope.tally.writeback_failed
            ):
                status = "partial"
        except LockLost as exc:
            # Another runner may hold the lock now: stop before the next write. What was
            # applied is recorded; the cursor did not move.
            status, error, error_exit = "interrupted", REDACTOR.scrub(str(exc)), exc.exit_code
            error_type = type(exc).__name__
            log.error("run.lock_lost", error=error)
        except (UnavailableError, TransientError) as exc:
            # The run could not go on (login, limits, a billing account down, a query that
            # kept failing): exit 3. What was applied is recorded; the cursor did not move.
            status, error, error_exit = (
                "failed",
                REDACTOR.scrub(str(exc)),
                UnavailableError.exit_code,
            )
            error_type = type(exc).__name__
            log.error("run.failed", error=error)
        except ConnectorError as exc:
            status, error, error_exit = "failed", REDACTOR.scrub(str(exc)), exc.exit_code
            error_type = type(exc).__name__
            log.error("run.failed", error=error)
        except (SystemExit, KeyboardInterrupt) as exc:
            # Stopped at once (a second SIGTERM raises SystemExit(130), Ctrl-C without the CLI's
            # handlers): an interrupted run, not a failed one. If the store cannot record it now,
            # the next run marks it interrupted when it takes the lock.
            counts = scope.tally.as_counts()
            if not dry_run:
                with contextlib.suppress(Exception):
                    self.store.runs.finish(run_id, status="interrupted", counts=counts, error=None)
            log.warning("run.interrupted", exit=getattr(exc, "code", None), **counts)
            raise
        except BaseException as exc:
            # A bug: the run is recorded as failed before it propagates, so `status` never
            # shows it running forever.
            if not dry_run:
                self.store.runs.finish(
                    run_id,
                    status="failed",
                    counts={},
                    error=REDACTOR.scrub(f"internal error: {type(exc).__name__}: {exc}"),
                )
            log.exception("run.crashed")
            raise
        finally:
            # Batches still on their way (the run stopped early) finish unrecorded: their
            # links stay pending and the next run writes them back.
            scope.beside.close()
            structlog.contextvars.unbind_contextvars("run_id")
            self._flush_sink(scope)
        report = self._report(
            scope, mode, status, error, error_exit, sf_start=sf_start, calls_start=calls_start
        )
        if error_type is not None:
            report = replace(report, error_type=error_type)
        if not dry_run:
            try:
                self.store.runs.finish(run_id, status=status, counts=_counts(report), error=error)
            except UnavailableError as exc:
                # The store failed under the run (read-only, full, gone) and refuses the run's
                # own row too: say so rather than lose the report; the next run that takes the
                # lock marks this one interrupted.
                unrecorded = (
                    f"the run could not be recorded as {status} in the state store either "
                    "(it still refuses writes); the next run marks it interrupted"
                )
                report = replace(
                    report,
                    status="failed",
                    error=f"{error}; {unrecorded}" if error else f"{exc}; {unrecorded}",
                    error_exit_code=UnavailableError.exit_code,
                )
                log.error("run.unrecorded", error=report.error)
        log.info(
            "run.finished",
            run_id=run_id,
            status=report.status,
            peak_in_flight=dict(scope.peak_in_flight),
            **_counts(report),
        )
        return report

    def _scope(self, run_id: str, dry_run: bool, sink: RunSink) -> RunScope:
        names = [t.name for t in self.targets]
        # Accounts an admin resolved with `conflicts resolve --new`: they get a new customer
        # whatever their write-back field says, once.
        fresh: dict[str, dict[str, datetime]] = {n: {} for n in names}
        for c in self.store.conflicts.list("resolved"):
            if c.resolution == "new" and c.billing_account in fresh and c.resolved_at is not None:
                fresh[c.billing_account][c.account_id] = c.resolved_at
        writebacks = {
            ba: WriteBacks(ba, name, self.writeback_batch)
            for ba, name in self.writeback_fields.items()
            if ba in names
        }
        if not dry_run:
            # Write-backs that failed in earlier runs are retried first.
            for ba, queue in writebacks.items():
                for ln in self.store.links.pending_writebacks(ba, limit=10_000):
                    queue.pending[ln.account_id] = ln.customer_id
        return RunScope(
            run_id=run_id,
            dry_run=dry_run,
            tally=Tally(),
            writebacks=writebacks,
            fresh=fresh,
            held_now={n: set() for n in names},
            streak={n: 0 for n in names},
            sink=sink,
        )

    def _report(
        self,
        scope: RunScope,
        mode: str,
        status: str,
        error: str | None,
        error_exit: int | None,
        *,
        sf_start: int,
        calls_start: Mapping[str, Mapping[str, int]],
    ) -> RunReport:
        tally = scope.tally
        per: dict[str, dict[str, int]] = {}
        for t in self.targets:
            counts = tally.of(t.name)
            before = calls_start.get(t.name, {})
            spent = {k: v - before.get(k, 0) for k, v in _pacing_counters(t).items()}
            counts.calls = spent["calls"]
            per[t.name] = {
                "created": counts.created,
                "updated": counts.updated,
                "unchanged": counts.unchanged,
                "refused": counts.refused,
                "failed": counts.failed,
                "calls": counts.calls,
                "peak_in_flight": scope.peak_in_flight.get(t.name, 0),
                "rate_limited": spent["rate_limited"],
                "slowdowns": spent["slowdowns"],
            }
        return RunReport(
            run_id=scope.run_id,
            mode=mode,
            dry_run=scope.dry_run,
            status=status,
            orders_read=tally.orders_read,
            accounts_seen=tally.accounts_seen,
            created=tally.total("created"),
            updated=tally.total("updated"),
            unchanged=tally.total("unchanged"),
            refused=tally.total("refused"),
            failed=tally.total("failed"),
            writeback_failed=tally.writeback_failed,
            salesforce_calls=self._sf_calls() - sf_start,
            billing_calls=sum(c["calls"] for c in per.values()),
            billing_accounts=per,
            plan=tuple(scope.sink.plan) if isinstance(scope.sink, KeepAll) else (),
            decisions=tuple(scope.sink.decisions) if isinstance(scope.sink, KeepAll) else (),
            error=error,
            error_exit_code=error_exit,
        )

    def cursor(self, name: str) -> str:
        """The stored name of a cursor: per partition when the engine runs one of several."""
        return f"{name}@{self.cursor_scope}" if self.cursor_scope else name

    def _mapping_changed(self) -> bool:
        # Links an admin set by hand carry no fingerprint until their first sync.
        return any(
            self.store.links.fingerprints_in_use(t.name) - {self.mapping_of(t.name).fingerprint}
            for t in self.targets
        )

    def mapping_of(self, billing_account: str) -> CustomerMapping:
        return self.mappings.get(billing_account, self.mapping)

    # --- reading ------------------------------------------------------------------------------

    def _read_and_apply(
        self,
        scope: RunScope,
        mode: str,
        *,
        since: datetime | None,
        until: datetime | None,
        snapshot: datetime | None,
    ) -> tuple[bool, datetime | None]:
        """Read every page and apply it. Returns (completed, the time the cursor may move to)."""
        backfill_cursor = None
        after_id = None
        if mode == "backfill":
            backfill_cursor = self.cursor(f"backfill:{_iso(since) or '-'}:{_iso(until) or '-'}")
            resume = _BackfillPoint.parse(self.store.cursors.get(backfill_cursor))
            if resume is not None:
                after_id = resume.after_id
                # Changes made while the first attempt ran, to records it had already done,
                # are read by the syncs after this backfill only if the cursor starts there.
                snapshot = resume.snapshot or snapshot
                log.info("backfill.resuming", after_id=after_id, snapshot=_iso(snapshot))
        elif mode == "sync":
            starts = self._change_starts()
            if starts is not None and snapshot is not None:
                return self._read_changes(scope, starts, snapshot), snapshot
            # No cursor yet: this first sync reads every activated order, as a backfill would.
        pages = prefetched(
            self.source.activated_orders(
                self.fields,
                watch=self.watch,
                activated_from=since if mode == "backfill" else None,
                activated_until=until if mode == "backfill" else None,
                after_id=after_id,
            )
        )
        for page in pages:
            scope.expected_total[0] = page.total
            if not self._process_rows(scope, page.rows, self.targets):
                return False, snapshot
            if backfill_cursor and not scope.dry_run and page.rows and page.ordered:
                # Resume point: every record of this page, and every lower Id, has its outcome
                # recorded. Unordered (Bulk API) pages leave it where the last ordered page
                # put it: a resumed backfill reads them again, and what they applied is
                # unchanged the second time (no write).
                point = _BackfillPoint(max(r.order_id for r in page.rows), snapshot)
                self._set_cursor(backfill_cursor, point.dump())
        if backfill_cursor and not scope.dry_run:
            self._set_cursor(backfill_cursor, "")
        return True, snapshot

    # --- incremental reads: one selective query per watched object -----------------------------

    def watched(self) -> list[Watched]:
        """Order and every object the mappings read through, with the id paths to each."""
        if self._watched is None:
            name = RELATIONSHIPS_CACHE.format(self.source.org_id)
            cached = self._learn_cached_relationships()
            self._watched = self.source.watched_objects(self.watch)
            known = self.source.known_relationships()
            if known and {k: list(v) for k, v in known.items()} != cached:
                value = json.dumps({"at": _iso(self.now()), "relationships": known})
                if self._persist_relationships:
                    with contextlib.suppress(UnavailableError):  # read-only store: describe again
                        self._store_write(lambda: self.store.cursors.set(name, value))
        return self._watched

    def _learn_cached_relationships(self) -> dict[str, list[str]]:
        cached = self._cached_relationships(RELATIONSHIPS_CACHE.format(self.source.org_id))
        if cached:
            self.source.learn_relationships(cached)
        return cached

    def _prime_backfill_reads(self, since: datetime | None, until: datetime | None) -> None:
        """Resolve the custom relationships the syncs after this backfill watch, carried by
        the backfill's own first calls (its deletions query, its first order page) in
        Composite requests, so neither this run nor the next sync spends a call on them."""
        self._learn_cached_relationships()
        point = _BackfillPoint.parse(
            self.store.cursors.get(
                self.cursor(f"backfill:{_iso(since) or '-'}:{_iso(until) or '-'}")
            )
        )
        cursor = parse_sf_datetime(self.store.cursors.get(self.cursor(DELETIONS_CURSOR)))
        alongside = [
            self.source.deleted_query(since=cursor - self.overlap if cursor else None),
            self.source.order_query(
                self.fields,
                watch=self.watch,
                activated_from=since,
                activated_until=until,
                after_id=point.after_id if point else None,
            ),
        ]
        self.source.resolve_relationships(self.watch, alongside)

    def _cached_relationships(self, name: str) -> dict[str, list[str]]:
        """What an earlier run learned by describe, unless it is older than a day."""
        try:
            data = json.loads(self.store.cursors.get(name) or "{}")
            at = parse_sf_datetime(data.get("at")) if isinstance(data, dict) else None
            refs = data.get("relationships") if isinstance(data, dict) else None
        except (ValueError, TypeError):
            return {}
        if at is None or not isinstance(refs, dict) or self.now() - at > RELATIONSHIPS_TTL:
            return {}
        return {str(k): list(v) for k, v in refs.items() if isinstance(v, list)}

    def _first_query(self, w: Watched, start: datetime) -> dict[str, Any]:
        """The arguments of `w`'s first change query in a run: open-ended, since it is sent
        before the run's snapshot is known (see `_prime_sync_reads`)."""
        return {
            "since": start - self.overlap,
            "until": None,
            "after": None,
            "fields": self.account_fields if w.sobject == "Account" else (),
        }

    def _prime_sync_reads(self) -> datetime | None:
        """Fetch the deletions' first page and every watched object's first change page in as
        few Composite calls as Salesforce takes (5 queries each) instead of one call each, and
        return the run's snapshot; None when there is no cursor yet (a full read).

        Each query is still its own, on its own object, and is read as if sent alone. The
        first change pages have no upper bound: the snapshot is Salesforce's Date of the
        answer less the time the call took (the Date is whole seconds, rounded down), so it is
        no later than the moment the queries began, as a snapshot taken before them would be.
        A first page that holds changes after the snapshot applies them early; the cursor
        moves to the snapshot only, so the next run reads them again.
        """
        starts = self._change_starts()
        if starts is None:
            return None
        cursor = parse_sf_datetime(self.store.cursors.get(self.cursor(DELETIONS_CURSOR)))
        queries = [self.source.deleted_query(since=cursor - self.overlap if cursor else None)]
        for w in self.watched():
            queries.append(
                self.source.change_query(w.sobject, **self._first_query(w, starts[w.sobject]))
            )
        began = time.monotonic()
        self.source.prime(queries)
        took = time.monotonic() - began
        return self.source.server_time() - timedelta(seconds=took)

    def _changes_cursor(self, sobject: str) -> str:
        return self.cursor(CHANGES_CURSOR.format(sobject))

    def _change_starts(self) -> dict[str, datetime] | None:
        """Each watched object's cursor; None when there is none yet (nothing was ever read)."""
        legacy = parse_sf_datetime(self.store.cursors.get(self.cursor(ORDERS_CURSOR)))
        starts: dict[str, datetime] = {}
        for w in self.watched():
            own = parse_sf_datetime(self.store.cursors.get(self._changes_cursor(w.sobject)))
            start = own or legacy
            if start is None:
                return None
            starts[w.sobject] = start
        return starts

    def _read_changes(
        self, scope: RunScope, starts: Mapping[str, datetime], snapshot: datetime
    ) -> bool:
        """Every change of every watched object since its cursor, up to the run's snapshot.

        No query ORs fields of different objects: Salesforce uses an index for an OR only when
        every branch filters the object queried, so the one query that ORed the SystemModstamps
        of Order, Account, Contact and Quote scanned every Order of the org on every run.
        """
        for w in self.watched():
            if not self._read_object_changes(scope, w, starts[w.sobject], snapshot):
                return False
        return True

    def _read_object_changes(
        self, scope: RunScope, w: Watched, start: datetime, until: datetime
    ) -> bool:
        """Read `w`'s changes in [start - overlap, until) and apply the orders they affect.

        The window is read in keyset pages on (SystemModstamp, Id). On QUERY_TIMEOUT it is
        halved from where it stopped and reading goes on; the object's cursor moves to the end
        of each slice once every order that slice affected is applied (failures are on the
        retry list), so a run stopped in between starts again at the last finished slice.
        """
        cursor = start
        # The Date header is whole seconds: Salesforce's clock was somewhere in [until,
        # until + 1s), and a change stamped in that second may already be visible. Read it
        # now, but move the cursor no further than `until`: the next run reads it again.
        windows: list[tuple[datetime, datetime, tuple[str, str] | None]] = [
            (start - self.overlap, until + timedelta(seconds=1), None)
        ]
        # The run's first query of this object is the one `_prime_sync_reads` fetched.
        open_first = True
        while windows:
            since, end, after = windows.pop(0)
            if since >= end:
                continue
            try:
                while True:
                    # A halved window is bounded even when its first query was open.
                    bound, open_first = None if open_first else end, False
                    page = self.source.changes(
                        w.sobject,
                        since=since,
                        until=bound,
                        after=after,
                        fields=self.account_fields if w.sobject == "Account" else (),
                    )
                    records = page.records
                    if records:
                        if not self._apply_changes(scope, w, records):
                            return False
                        last = records[-1]
                        after = (str(last["SystemModstamp"]), str(last["Id"]))
                    if not page.more:
                        break
                    last_stamp = parse_sf_datetime(after[0]) if after else None
                    if last_stamp is not None and last_stamp >= end:
                        break  # an open first page already went past the window
            except TransientError as exc:
                if exc.code != "QUERY_TIMEOUT":
                    raise
                low = parse_sf_datetime(after[0]) if after else since
                assert low is not None
                if end - low <= MIN_WINDOW:
                    raise
                middle = low + (end - low) / 2
                log.warning(
                    "changes.window_halved",
                    object=w.sobject,
                    since=_iso(low),
                    until=_iso(end),
                    now_until=_iso(middle),
                )
                windows[0:0] = [(since, middle, after), (middle, end, None)]
                continue
            done_until = min(end, until)
            if not scope.dry_run and done_until > cursor:
                self._move_change_cursor(w.sobject, done_until)
                cursor = done_until
        return True

    def _apply_changes(
        self, scope: RunScope, w: Watched, records: Sequence[Mapping[str, Any]]
    ) -> bool:
        """Read and apply the orders of every account one page of changed records affects."""
        affected: dict[str, None] = {}
        if w.sobject == "Order":
            same = self._orders_as_applied(records)
            affected.update(
                dict.fromkeys(
                    normalize_sf_id(str(r["AccountId"]), what="Order.AccountId")
                    for r in records
                    if str(r["Id"]) not in same
                )
            )
        else:
            ids = [normalize_sf_id(str(r["Id"]), what=f"{w.sobject}.Id") for r in records]
            same = self._unchanged_accounts(records) if w.sobject == "Account" else set()
            for path in w.paths:
                # A change that left every field the orders read from the account as applied
                # does not make that account's orders worth reading; the other paths (a parent
                # whose children read it) still read, since they may read other fields.
                todo = [i for i in ids if i not in same] if path.casefold() == "accountid" else ids
                for start in range(0, len(todo), IN_CHUNK):
                    chunk = todo[start : start + IN_CHUNK]
                    affected.update(dict.fromkeys(self.source.accounts_referencing(path, chunk)))
        # An account already read in this run was read after the snapshot: every change
        # stamped before it, which is all a window holds, is in what was applied.
        todo = [a for a in affected if a not in scope.read]
        return self._process_accounts(scope, todo, self.targets)

    def _orders_as_applied(self, records: Sequence[Mapping[str, Any]]) -> set[str]:
        """Changed orders whose SystemModstamp is the one their last apply read: nothing of
        the order changed since (the overlap window re-reads what the previous run applied,
        for commit lag). Every save moves SystemModstamp, so an order saved again after it
        was read shows another stamp and is read; a change of its account or contact is that
        object's change, read from that object's own query."""
        ids = [str(r["Id"]) for r in records]
        stored = self.store.digests.get_many(self._digest_key("Order"), ids)
        same = {
            i
            for i, r in zip(ids, records, strict=True)
            if i in stored
            and r.get("SystemModstamp")
            and stored[i] == soql_stamp(str(r["SystemModstamp"]))
        }
        if same:
            log.info("changes.orders_unchanged", skipped=len(same), changed=len(ids) - len(same))
        return same

    def _digest_key(self, sobject: str) -> str:
        """Digests are per partition, as cursors are: what one partition applied says nothing
        of what another one has (the column holds 64 characters; a long group is hashed)."""
        if not self.cursor_scope:
            return sobject
        key = f"{sobject}@{self.cursor_scope}"
        if len(key) > 64:
            key = f"{sobject}@" + hashlib.sha256(self.cursor_scope.encode()).hexdigest()[:32]
        return key

    def _unchanged_accounts(self, records: Sequence[Mapping[str, Any]]) -> set[str]:
        """Changed accounts whose fields the orders read are as the connector last applied them.

        This is how the connector's own write-backs are recognised: the digest remembered when
        an account's orders were applied covers the write-back field with the customer id
        about to be written, so the change the write-back makes leaves the digest equal.
        Comparing the fields is the robust way. LastModifiedById names only the latest
        editor: an admin's edit made between the connector's read and its write-back would be
        skipped with it, and the integration user is often shared with other automation (a
        flow that the write-back triggers runs as that user). Recording the SystemModstamp
        a write-back produced needs a read after every write-back (Salesforce's collection
        answer carries no stamp), and that stamp also hides any edit saved between the read
        and the write. A field comparison never skips a change to a field that is read,
        whoever made it, and also skips edits to fields nothing reads.
        """
        ids = [normalize_sf_id(str(r["Id"]), what="Account.Id") for r in records]
        stored = self.store.digests.get_many(self._digest_key("Account"), ids)
        same = {
            i
            for i, r in zip(ids, records, strict=True)
            if i in stored and stored[i] == record_digest(r, self.account_fields)
        }
        if same:
            log.info("changes.accounts_unchanged", skipped=len(same), changed=len(ids) - len(same))
        return same

    def _remember_digests(self, scope: RunScope, rows: Sequence[OrderRow]) -> None:
        """What this page applied of each account, with the customer ids about to be written
        back in place of the write-back fields' current values."""
        if scope.dry_run or not rows:
            return
        overrides: dict[str, dict[str, str]] = {}
        for wb in scope.writebacks.values():
            for acc, customer in wb.pending.items():
                overrides.setdefault(acc, {})[wb.field_name.casefold()] = customer
        digests = {
            row.account_id: record_digest(
                row.record["Account"], self.account_fields, overrides.get(row.account_id)
            )
            for row in rows
            if isinstance(row.record.get("Account"), dict)
        }
        # Each order's SystemModstamp as read: the overlap of the next run skips it unchanged.
        stamps = {
            row.order_id: soql_stamp(str(row.record["SystemModstamp"]))
            for row in rows
            if row.record.get("SystemModstamp")
        }
        # Most records of a page were applied as they were last time (a re-check, a sync of
        # orders whose accounts did not change): reading the stored digests costs far less
        # than rewriting them all, so only the ones that differ are written.
        account_key, order_key = self._digest_key("Account"), self._digest_key("Order")
        stored = self.store.digests.get_many(account_key, list(digests))
        changed = {a: d for a, d in digests.items() if stored.get(a) != d}
        stored_stamps = self.store.digests.get_many(order_key, list(stamps))
        moved = {o: st for o, st in stamps.items() if stored_stamps.get(o) != st}
        if not changed and not moved:
            return

        def write() -> None:
            if changed:
                self.store.digests.set_many(account_key, changed)
            if moved:
                self.store.digests.set_many(order_key, moved)

        self._store_write(write)

    def _process_accounts(
        self, scope: RunScope, account_ids: Sequence[str], targets: Sequence[BillingTarget]
    ) -> bool:
        for start in range(0, len(account_ids), IN_CHUNK):
            chunk = list(account_ids[start : start + IN_CHUNK])
            for page in prefetched(
                self.source.activated_orders(self.fields, watch=self.watch, account_ids=chunk)
            ):
                if not self._process_rows(scope, page.rows, targets):
                    return False
            scope.read.update(chunk)
        return True

    def _move_change_cursor(self, sobject: str, to: datetime) -> None:
        """Move one object's cursor, then the summary (the least of them) if it moved."""
        self._set_cursor(self._changes_cursor(sobject), to.strftime(SF_STAMP))
        stamps = [
            parse_sf_datetime(self.store.cursors.get(self._changes_cursor(w.sobject)))
            for w in self.watched()
        ]
        if any(s is None for s in stamps):
            return
        least = min(s for s in stamps if s is not None)
        current = parse_sf_datetime(self.store.cursors.get(self.cursor(ORDERS_CURSOR)))
        if current is None or least > current:
            self._set_cursor(self.cursor(ORDERS_CURSOR), least.strftime(SF_STAMP))

    def _process_retries(self, scope: RunScope, *, retry_all: bool) -> bool:
        # Rows read here never move the cursor: the cursor is the run's snapshot time.
        for target in self.targets:
            items = (
                self.store.retries.all(target.name)
                if retry_all
                else self.store.retries.due(target.name, now=self.now())
            )
            # An account this run applied was cleared from the list (written or unchanged) or
            # has an outcome of this run (failed again, refused): asked of the store, so no set
            # of the run's accounts is kept in memory. A dry run records none and skips none.
            ids = [i.account_id for i in items]
            applied = (
                set()
                if scope.dry_run
                else self.store.runs.accounts_with_outcomes(scope.run_id, target.name, ids)
            )
            todo = [a for a in ids if a not in applied]
            for start in range(0, len(todo), 200):
                chunk = todo[start : start + 200]
                for page in self.source.activated_orders(
                    self.fields, watch=self.watch, account_ids=chunk
                ):
                    if not self._process_rows(scope, page.rows, [target]):
                        return False
        return True

    def _process_dependents(
        self,
        scope: RunScope,
        linked: set[str],
        targets: Sequence[BillingTarget],
        depth: int = 0,
        *,
        skip: AbstractSet[str] = frozenset(),
    ) -> bool:
        """Accounts whose mapping reads a link that was just created or moved (`link`
        transform): read their orders and plan them again, wherever they fell in the page
        order, in this run or an earlier one."""
        if not self.link_sources or not linked or depth > 8:
            return True
        paths = [soql_path(s) for s in self.link_sources]
        ids = sorted(linked)
        for start in range(0, len(ids), DEPENDENTS_CHUNK):
            chunk = ids[start : start + DEPENDENTS_CHUNK]
            # One query per path: ORing paths through different objects would scan every Order.
            for path in paths:
                for page in self.source.activated_orders(
                    self.fields, watch=self.watch, referencing={path: chunk}
                ):
                    rows = [r for r in page.rows if r.account_id not in skip]
                    if rows and not self._process_rows(scope, rows, targets, depth=depth + 1):
                        return False
        return True

    # --- one page ----------------------------------------------------------------------------

    def _process_rows(
        self,
        scope: RunScope,
        rows: Sequence[OrderRow],
        targets: Sequence[BillingTarget],
        *,
        depth: int = 0,
    ) -> bool:
        """Plan and apply one page for each billing account. False when interrupted. What the
        page planned and decided goes to the run's sink before the next page is read."""
        try:
            return self._process_page(scope, rows, targets, depth=depth)
        finally:
            self._flush_sink(scope)

    @staticmethod
    def _flush_sink(scope: RunScope) -> None:
        if scope.plan:
            plans, scope.plan[:] = list(scope.plan), []
            scope.sink.planned(plans)
        if scope.decisions:
            decisions, scope.decisions[:] = list(scope.decisions), []
            scope.sink.decided(decisions)

    def _process_page(
        self,
        scope: RunScope,
        rows: Sequence[OrderRow],
        targets: Sequence[BillingTarget],
        *,
        depth: int,
    ) -> bool:
        orders_before = scope.tally.orders_read
        wanted = {t.name for t in targets}
        routed: dict[str, list[OrderRow]] = {t.name: [] for t in self.targets}
        scope.tally.accounts_seen += len({r.account_id for r in rows})
        for row in rows:
            scope.tally.orders_read += 1
            for ba in self._route(scope, row):
                if ba in wanted:
                    routed[ba].append(row)
        users: dict[str, dict[str, tuple[set[str], OrderRow]]] = {}
        if self.groups:
            routed, users = self._through_groups(scope, routed)
        newly_linked: set[str] = set()
        seen: set[str] = set()
        for target in self.targets:
            mine = routed.get(target.name) or []
            if not mine:
                continue
            best: dict[str, OrderRow] = {}
            for row in mine:
                cur = best.get(row.account_id)
                if cur is None or row.basis_key > cur.basis_key:
                    best[row.account_id] = row
            seen |= set(best)
            links = self.store.links.get_many(target.name, list(best))
            ctx = self._context(scope, target, list(best.values()), links)
            completed, linked = self._plan_and_apply(
                scope, target, list(best.values()), mine, links, ctx, orders_before
            )
            newly_linked |= linked
            if not completed:
                return False
            if target.name in users:
                self._link_users(scope, target.name, users[target.name])
        self._remember_digests(scope, rows)
        self._flush_writebacks(scope, final=False)
        if scope.dry_run:
            return True
        # This page's own readers of those links were planned again within the page.
        return self._process_dependents(scope, newly_linked, targets, depth, skip=seen)

    # --- routing and sharing groups ------------------------------------------------------------

    def _route(self, scope: RunScope, row: OrderRow) -> list[str]:
        """The billing accounts `row` is written to; none (recorded as refused) when unroutable."""
        if self.routing is None:
            return [t.name for t in self.targets]
        decision = route(row.record, self.routing)
        if decision.account is not None:
            return [decision.account]
        scope.tally.unrouted += 1
        scope.decisions.append(Decision(row.account_id, "", "refused", "refused"))
        log.warning(
            "order.unroutable",
            order_id=row.order_id,
            account_id=row.account_id,
            reason=decision.reason,
        )
        if not scope.dry_run:
            outcome = Outcome(
                row.account_id,
                "",
                "refused",
                order_id=row.order_id,
                error_code="unroutable",
                error_message=decision.reason,
            )
            self._store_write(lambda: self.store.runs.record_outcomes(scope.run_id, [outcome]))
        return []

    def _through_groups(
        self, scope: RunScope, routed: dict[str, list[OrderRow]]
    ) -> tuple[dict[str, list[OrderRow]], dict[str, dict[str, tuple[set[str], OrderRow]]]]:
        """Rows routed to a member of a sharing group are planned under the one member that
        writes the account's customer; the members that only use it are returned as
        writer -> account -> (using members, latest row) and linked after the writer."""
        out = {ba: list(rs) for ba, rs in routed.items()}
        users: dict[str, dict[str, tuple[set[str], OrderRow]]] = {}
        for group in self.groups:
            rows_of: dict[str, list[tuple[str, OrderRow]]] = {}
            for member in group.members:
                for row in out.get(member, []):
                    rows_of.setdefault(row.account_id, []).append((member, row))
            if not rows_of:
                continue
            accounts = list(rows_of)
            links = {m: self.store.links.get_many(m, accounts) for m in group.members}
            held = set().union(
                *(
                    self.store.conflicts.held_accounts(m) | scope.held_now.get(m, set())
                    for m in group.members
                )
            )
            for acc, pairs in rows_of.items():
                active = {
                    m: ln
                    for m in group.members
                    if (ln := links[m].get(acc)) is not None and ln.status == "active"
                }
                refuse = acc in held
                if len({ln.customer_id for ln in active.values()}) > 1:
                    refuse = True
                    self._open_group_conflict(scope, group, acc, active)
                for member, row in pairs:
                    out[member].remove(row)
                if refuse:
                    for member in dict.fromkeys(m for m, _ in pairs):
                        scope.tally.of(member).add("refused")
                        scope.decisions.append(Decision(acc, member, "refused", "refused"))
                    continue
                if active:
                    # The member whose link is oldest created the customer; it writes it.
                    writer = min(
                        active.values(),
                        key=lambda ln: ln.first_synced_at or datetime.max.replace(tzinfo=UTC),
                    ).billing_account
                elif group.primary is not None:
                    writer = group.primary
                else:
                    writer = min(pairs, key=lambda p: p[1].basis_key)[0]
                if writer not in out:
                    out[writer] = []
                out[writer].extend(row for _, row in pairs)
                using = {m for m, _ in pairs} | set(active)
                using.discard(writer)
                if using:
                    latest = max((r for _, r in pairs), key=lambda r: r.basis_key)
                    users.setdefault(writer, {})[acc] = (using, latest)
        return out, users

    def _open_group_conflict(
        self, scope: RunScope, group: SharingGroup, account_id: str, active: Mapping[str, Link]
    ) -> None:
        oldest = min(
            active.values(),
            key=lambda ln: ln.first_synced_at or datetime.max.replace(tzinfo=UTC),
        )
        customers = {m: ln.customer_id for m, ln in active.items()}
        for member in active:
            scope.held_now.setdefault(member, set()).add(account_id)
        if scope.dry_run:
            return
        # One conflict, under the member whose customer differs from the oldest link's.
        other = next(m for m, ln in active.items() if ln.customer_id != oldest.customer_id)
        details = {
            "sharing_group": group.label,
            "customers": customers,
            "message": (
                f"sharing group {group.label} shares customers, but this account has a "
                f"customer in each of {', '.join(sorted(customers))} "
                f"({', '.join(f'{m}: {c}' for m, c in sorted(customers.items()))}); the group "
                "was formed after they were created. Neither is written until you choose the "
                "one the group uses; the other stays in billing, untouched"
            ),
        }

        def write() -> None:
            self.store.conflicts.open(
                GROUP_CONFLICT,
                billing_account=other,
                account_id=account_id,
                customer_id=active[other].customer_id,
                details=details,
            )

        self._store_write(write)
        log.warning(
            "group.separate_customers",
            account_id=account_id,
            group=group.label,
            customers=customers,
        )

    def _link_users(
        self, scope: RunScope, writer: str, users: Mapping[str, tuple[set[str], OrderRow]]
    ) -> None:
        """Members of a group that use the customer the writer holds: the same id, linked
        without a call to billing (never created twice), and written back to their field."""
        if scope.dry_run:
            for acc, (using, _) in users.items():
                for member in sorted(using):
                    scope.decisions.append(Decision(acc, member, "adopt", "adopted"))
            return
        written = self.store.links.get_many(writer, list(users))
        saves: list[Link] = []
        outcomes: list[Outcome] = []
        queued: list[tuple[str, Link, OrderRow]] = []
        now = self.now()
        for acc, (using, row) in users.items():
            source = written.get(acc)
            if source is None or source.status != "active":
                continue  # the writer refused or failed: nothing to share yet
            for member in sorted(using):
                current = self.store.links.get(member, acc)
                if current is not None and current.customer_id == source.customer_id:
                    scope.tally.of(member).add("unchanged")
                    queued.append((member, current, row))
                    continue
                if current is not None:
                    continue  # a different customer: the next pass opens the group conflict
                link = Link(
                    billing_account=member,
                    account_id=acc,
                    customer_id=source.customer_id,
                    status="active",
                    payload_hash=source.payload_hash,
                    payload=source.payload,
                    mapping_fingerprint=source.mapping_fingerprint,
                    basis_order_id=source.basis_order_id,
                    basis_order_activated_at=source.basis_order_activated_at,
                    writeback_pending=True,
                    first_synced_at=now,
                    last_synced_at=now,
                    shared_from=writer,
                )
                saves.append(link)
                queued.append((member, link, row))
                outcomes.append(
                    Outcome(
                        acc,
                        member,
                        "adopted",
                        customer_id=source.customer_id,
                        order_id=row.order_id,
                        error_message=f"shared customer created in billing account {writer}",
                    )
                )
                # no billing write: counted as unchanged, so run counts stay counts of writes
                scope.tally.of(member).add("unchanged")
                scope.decisions.append(Decision(acc, member, "adopt", "adopted"))

        def write() -> None:
            with self.store.transaction():
                if saves:
                    self.store.links.save(saves)
                if outcomes:
                    self.store.runs.record_outcomes(scope.run_id, outcomes)

        if saves or outcomes:
            self._store_write(write)
        for member, link, row in queued:
            queue = scope.writebacks.get(member)
            if queue is not None:
                queue.queue(link, row.writeback_value(queue.field_name), overwrite=False)

    def _plan_and_apply(
        self,
        scope: RunScope,
        target: BillingTarget,
        rows: list[OrderRow],
        all_rows: Sequence[OrderRow],
        links: dict[str, Link],
        ctx: PlanContext,
        orders_before: int,
    ) -> tuple[bool, set[str]]:
        ba = target.name
        page_size = len(all_rows)
        links_before = dict(links)
        plans = [
            plan_record(r, links.get(r.account_id), ctx, self.mapping_of(ba), target.rules)
            for r in rows
        ]
        if scope.dry_run:
            for p in plans:
                scope.plan.append(p)
                scope.tally.of(ba).add(p.action)
                scope.decisions.append(Decision(p.account_id, ba, p.action, p.action))
                if p.conflict is not None:
                    scope.held_now[ba].add(p.account_id)
            return True, set()
        # Records whose `link` source names an account this page is about to link wait for
        # it, then are planned again with its customer: the child-before-parent case.
        linking = {p.account_id for p in plans if p.action in LINKS}
        by_account = {r.account_id: r for r in rows}
        waiting = {
            p.account_id
            for p in plans
            if linking and self._reads_link_of(by_account[p.account_id], linking - {p.account_id})
        }
        first = [p for p in plans if p.account_id not in waiting]
        applied: list[Applied] = []
        attempted: set[str] = set()  # accounts whose write was sent (or being sent)
        try:
            completed = self._apply_waiting_last(
                scope,
                target,
                ctx,
                first,
                waiting,
                links,
                by_account,
                attempted,
                applied,
                orders_before,
                page_size,
            )
        except BaseException:
            # Whatever stops the batch (a lost lock, a billing account down, a signal), what
            # billing already holds is recorded, so no cross-reference is lost.
            with contextlib.suppress(LockLost):
                self._record(scope, ba, applied, all_rows, self._unsent(plans, attempted))
            raise
        self._record(
            scope,
            ba,
            applied,
            all_rows,
            self._unsent(plans, attempted),
            # Records planned again with the links this batch made are digested next time.
            digests=self._plan_digests(ba, applied, by_account, ctx, skip=waiting),
        )
        queue = scope.writebacks.get(ba)
        for a in applied:
            if a.link is not None and queue is not None:
                queue.queue(
                    a.link,
                    by_account[a.planned.account_id].writeback_value(queue.field_name),
                    overwrite=a.planned.overwrite_field or a.planned.account_id in scope.fresh[ba],
                )
        linked = {
            a.planned.account_id
            for a in applied
            if a.link is not None
            and a.save_link
            and (
                a.created
                or a.planned.action in LINKS
                or _was_admin_link(links_before.get(a.planned.account_id))
            )
        }
        return completed, linked

    def _apply_waiting_last(
        self,
        scope: RunScope,
        target: BillingTarget,
        ctx: PlanContext,
        first: list[PlannedWrite],
        waiting: set[str],
        links: dict[str, Link],
        by_account: Mapping[str, OrderRow],
        attempted: set[str],
        applied: list[Applied],
        orders_before: int,
        page_size: int,
    ) -> bool:
        completed = self._apply_all(
            scope, target, first, links, attempted, applied, orders_before, page_size
        )
        if completed and waiting:
            live = dict(ctx.links)
            live.update(
                {
                    a.link.account_id: a.link.customer_id
                    for a in applied
                    if a.link and a.link.status == "active"
                }
            )
            again = replace(ctx, links=live)
            second = [
                plan_record(
                    by_account[a], links.get(a), again, self.mapping_of(target.name), target.rules
                )
                for a in by_account
                if a in waiting
            ]
            completed = self._apply_all(
                scope, target, second, links, attempted, applied, orders_before, page_size
            )
        return completed

    def _plan_digests(
        self,
        ba: str,
        applied: Sequence[Applied],
        by_account: Mapping[str, OrderRow],
        ctx: PlanContext,
        *,
        skip: AbstractSet[str] = frozenset(),
    ) -> dict[str, str]:
        """The plan digests to store with this batch: for each account whose link now holds the
        payload its row was evaluated to (written, or unchanged), when it differs from the one
        stored. Failed, refused and partial applies store none (see `plan_digest`)."""
        mapping = self.mapping_of(ba)
        out: dict[str, str] = {}
        for a in applied:
            p, link = a.planned, a.link
            if (
                a.outcome.outcome not in ("created", "updated", "adopted", "unchanged")
                or a.retry
                or link is None
                or link.status != "active"
                or not p.payload_hash
                or link.payload_hash != p.payload_hash
                or link.mapping_fingerprint != ctx.fingerprint
                or p.account_id not in by_account
                or p.account_id in skip
            ):
                continue
            if p.digest is not None and not a.save_link:
                continue  # decided by the stored digest, on the link it describes
            digest = plan_digest(by_account[p.account_id], link, ctx, mapping)
            if digest is not None and ctx.digests.get(p.account_id) != digest:
                out[p.account_id] = digest
        return out

    @staticmethod
    def _unsent(plans: Sequence[PlannedWrite], attempted: set[str]) -> list[str]:
        """Creates whose intent was written ahead but which were never sent (the run stopped
        first): their intents are dropped with the batch. A create that was being sent when the
        run stopped keeps its intent: the billing system may have made the customer."""
        return [
            p.account_id for p in plans if p.action == "create" and p.account_id not in attempted
        ]

    def _reads_link_of(self, row: OrderRow, accounts: set[str]) -> bool:
        return any(read_source(row.record, s) in accounts for s in self.link_sources)

    def _apply_all(
        self,
        scope: RunScope,
        target: BillingTarget,
        plans: list[PlannedWrite],
        links: dict[str, Link],
        attempted: set[str],
        applied: list[Applied],
        orders_before: int,
        page_size: int,
    ) -> bool:
        ba = target.name
        creates = [p for p in plans if p.action == "create"]
        if creates:
            # Write-ahead: every create of the batch is recorded with its key and exact payload
            # before any is sent, so a crash in between is finished with the same key.
            self._store_write(lambda: self._record_intents(creates))
        most = self.max_in_flight.get(ba, DEFAULT_MAX_IN_FLIGHT)
        limiter = getattr(target, "limiter", None)  # targets pace through a shared limiter
        pool: WritePool[PlannedWrite, Applied] = WritePool(
            lambda p: self._apply(target, p, links.get(p.account_id)),
            key=lambda p: p.account_id,
            writes=lambda p: p.writes,
            window=(lambda: limiter.in_flight(most)) if limiter is not None else (lambda: most),
            most=most,
        )
        sent = 0

        def before_send(p: PlannedWrite) -> bool:
            nonlocal sent
            sent += 1
            if self.on_progress:
                self.on_progress(
                    orders_before + page_size * sent // max(1, len(plans)),
                    scope.expected_total[0],
                )
            if self.stop.is_set():
                return False  # finish cleanly: what was applied is recorded, the rest read again
            if p.writes:
                self.before_write()
            attempted.add(p.account_id)
            return True

        unreachable: list[BillingUnreachable] = []

        def on_result(p: PlannedWrite, result: Applied) -> None:
            # In plan order, on this thread: outcomes read as in a serial run.
            applied.append(result)
            if result.link is not None:
                links[p.account_id] = result.link
            scope.decisions.append(Decision(p.account_id, ba, p.action, result.outcome.outcome))
            if result.unreachable is not None:
                scope.streak[ba] += 1
                if scope.streak[ba] >= UNREACHABLE_STREAK and not unreachable:
                    unreachable.append(result.unreachable)
                    raise Stop  # send no more; what is in flight is still handed back
            elif p.writes:
                scope.streak[ba] = 0

        completed = pool.run(plans, before_send=before_send, on_result=on_result)
        scope.peak_in_flight[ba] = max(scope.peak_in_flight.get(ba, 0), pool.peak)
        if unreachable:
            self._stop_unreachable(scope, ba, applied, unreachable[0])
        return completed

    def _stop_unreachable(
        self, scope: RunScope, ba: str, applied: list[Applied], exc: BillingUnreachable
    ) -> None:
        # The records that found no connection are not failed: they are read again next run.
        dropped = {a.planned.account_id for a in applied if a.unreachable is not None}
        applied[:] = [a for a in applied if a.unreachable is None]
        scope.decisions[:] = [
            d
            for d in scope.decisions
            if not (d.billing_account == ba and d.account_id in dropped and d.outcome == "failed")
        ]
        raise UnavailableError(
            f"billing account '{exc.billing_account}' at {exc.url} is unreachable: "
            f"{UNREACHABLE_STREAK} records in a row found no connection ({exc.message}). "
            "The run stopped; those records were not marked failed and the cursor did not move"
        )

    def _record_intents(self, creates: Iterable[PlannedWrite]) -> None:
        now = self.now()
        intents = []
        for p in creates:
            assert p.idempotency_key is not None
            intents.append(
                Intent(
                    billing_account=p.billing_account,
                    account_id=p.account_id,
                    idempotency_key=p.idempotency_key,
                    payload_hash=p.payload_hash,
                    created_at=now,
                    payload=dict(p.payload),
                )
            )
        # One statement with a parameter set per create, in its own transaction.
        self.store.intents.record_many(intents)

    # --- context, fetched in batches before planning ---------------------------------------

    def _context(
        self,
        scope: RunScope,
        target: BillingTarget,
        rows: list[OrderRow],
        links: Mapping[str, Link],
    ) -> PlanContext:
        ba = target.name
        rules = target.rules
        writeback_field = self.writeback_fields.get(ba)
        fresh = scope.fresh.get(ba, {})
        held = frozenset(self.store.conflicts.held_accounts(ba) | scope.held_now[ba])
        # Customers named by write-back fields that differ from the link: adopt or conflict.
        named: dict[str, str] = {}
        if writeback_field:
            for r in rows:
                link = links.get(r.account_id)
                value = r.writeback_value(writeback_field)
                if value and (link is None or value != link.customer_id):
                    named[r.account_id] = value
        owners: dict[str, str] = {}
        for cid in dict.fromkeys(named.values()):
            owner = self.store.links.by_customer(ba, cid)
            if owner is not None:
                owners[cid] = owner.account_id
        to_fetch = [
            cid
            for acc, cid in named.items()
            if links.get(acc) is None
            and cid not in owners
            and acc not in held
            and not wants_new_customer(fresh.get(acc), None)
        ]
        customers: dict[str, Any] = {}
        errors: dict[str, str] = {}
        if to_fetch:
            try:
                customers = dict(target.fetch_customers(list(dict.fromkeys(to_fetch))))
            except (TransientError, RecordError) as exc:
                errors = {cid: REDACTOR.scrub(str(exc)) for cid in to_fetch}
        page_accounts = {r.account_id for r in rows}
        intents = {
            i.account_id: i for i in self.store.intents.open(ba) if i.account_id in page_accounts
        }
        now = self.now()
        lookups: dict[str, Lookup] = {}
        for acc, intent in intents.items():
            if intent.payload is not None and now - intent.created_at < rules.idempotency_window:
                continue
            if acc in held or rules.client_chosen_ids:
                continue  # held; or the target's create finds its own id again (no search)
            lookups[acc] = self._lookup(target, acc)
        for lk in lookups.values():
            for cid in lk.customer_ids:
                owner = self.store.links.by_customer(ba, cid)
                if owner is not None and owner.status != "merged":
                    owners[cid] = owner.account_id
        return PlanContext(
            billing_account=ba,
            org_id=self.source.org_id,
            fingerprint=self.mapping_of(ba).fingerprint,
            now=now,
            writeback_field=writeback_field,
            held=held,
            fresh=fresh,
            customers=customers,
            customer_errors=errors,
            owners=owners,
            intents=intents,
            lookups=lookups,
            links=self._link_snapshot(ba, rows),
            digests=self.store.digests.get_many(
                plan_digest_scope(ba), [r.account_id for r in rows if r.account_id in links]
            ),
        )

    def _lookup(self, target: BillingTarget, account_id: str) -> Lookup:
        """Find the customer an interrupted create past the key window may have made."""
        if not target.rules.search:
            return Lookup(error=f"billing account '{target.name}' cannot search customers by tag")
        try:
            found = target.find_by_salesforce_account(account_id)
        except (TransientError, RecordError) as exc:
            return Lookup(error=f"the search failed: {REDACTOR.scrub(str(exc))}")
        return Lookup(tuple(c.id for c in found if not c.deleted))

    def _link_snapshot(self, ba: str, rows: Sequence[OrderRow]) -> dict[str, str]:
        """The links the `link` transform reads for this page, in one store query."""
        if not self.link_sources:
            return {}
        ids = {v for r in rows for s in self.link_sources if (v := read_source(r.record, s))}
        if not ids:
            return {}
        return {
            a: ln.customer_id
            for a, ln in self.store.links.get_many(ba, sorted(ids)).items()
            if ln.status == "active"
        }

    # --- applying: one small function per action ---------------------------------------------

    def _apply(self, target: BillingTarget, p: PlannedWrite, link: Link | None) -> Applied:
        try:
            if p.action == "refused":
                return self._apply_refused(p, link)
            if p.action == "failed":
                log.warning("sync.record.failed", account_id=p.account_id, error=p.reason)
                return Applied(p, _outcome(p, "failed", p.error_code, p.reason), link)
            if p.action == "unchanged":
                return self._apply_unchanged(p, link)
            if p.action == "create":
                assert p.idempotency_key is not None
                cid = target.create_customer(p.payload, idempotency_key=p.idempotency_key)
                return self._linked(p, cid, p.payload_hash, p.payload, created=True)
            if p.action == "replay":
                return self._apply_replay(target, p)
            if p.action == "reconcile":
                assert p.customer_id is not None and p.idempotency_key is not None
                target.update_customer(p.customer_id, p.payload, idempotency_key=p.idempotency_key)
                log.info(
                    "sync.intent.reconciled", account_id=p.account_id, customer_id=p.customer_id
                )
                return self._linked(p, p.customer_id, p.payload_hash, p.payload, created=True)
            if p.action == "adopt":
                assert p.customer_id is not None and p.idempotency_key is not None
                target.update_customer(p.customer_id, p.payload, idempotency_key=p.idempotency_key)
                log.info("sync.record.adopted", account_id=p.account_id, customer_id=p.customer_id)
                return self._linked(p, p.customer_id, p.payload_hash, p.payload, kind="adopted")
            return self._apply_update(target, p, link)
        except BillingUnreachable as exc:
            log.warning("sync.record.unreachable", account_id=p.account_id, error=str(exc))
            return Applied(
                p, _outcome(p, "failed", "billing_unreachable", str(exc)), link, unreachable=exc
            )
        except CustomerMissing as exc:
            conflict = None
            if p.action == "update" and p.customer_id:
                # Deleted in billing: never re-created on our own (it may have been
                # deliberate); the account is held and the admin chooses --new or --link.
                conflict = (
                    "customer_deleted_in_billing",
                    None,
                    {"order_id": p.order_id, "message": str(exc)},
                )
            log.warning(
                "sync.record.failed", account_id=p.account_id, code=exc.code, error=str(exc)
            )
            return Applied(p, _outcome(p, "failed", exc.code, str(exc)), link, conflict=conflict)
        except (PartiallyApplied, PartiallyRefused) as exc:
            before: Mapping[str, Any] | None = None
            if p.action == "update" and link is not None:
                before = link.payload
            return self._apply_partial(p, link, exc, p.payload, before)
        except (RecordError, TransientError) as exc:
            code = exc.code or type(exc).__name__
            log.warning("sync.record.failed", account_id=p.account_id, code=code, error=str(exc))
            return Applied(p, _outcome(p, "failed", code, str(exc)), link)

    def _apply_partial(
        self,
        p: PlannedWrite,
        link: Link | None,
        exc: PartiallyApplied | PartiallyRefused,
        planned: Mapping[str, Any],
        before: Mapping[str, Any] | None,
    ) -> Applied:
        """A write of several calls stopped half way: link what billing holds now, no more.

        The link's payload is what was applied: `planned` with the keys still pending put back
        to what the customer held `before` (the link's payload for an update, the interrupted
        create's for a replay's follow-up; for a customer whose earlier state is not known, a
        create that adopted one or an adopt, the pending keys are left out). Its hash differs
        from the planned payload's, so the next run plans an update that sends exactly the
        pending keys. A create that got as far as a customer links its id, so no later run
        creates a second one.
        """
        written = _without_pending(planned, frozenset(exc.pending), before)
        from connector.mapping import payload_hash

        digest = payload_hash(written)
        cid = exc.customer_id or p.customer_id or ""
        pending = sorted(exc.pending)
        if p.action == "update" and link is not None:
            done = Applied(
                p,
                _outcome(p, "updated"),
                replace(
                    link,
                    payload_hash=digest,
                    payload=dict(written),
                    mapping_fingerprint=self.mapping_of(p.billing_account).fingerprint,
                    basis_order_id=p.order_id,
                    basis_order_activated_at=p.basis_activated_at,
                    last_synced_at=self.now(),
                    status="active",
                ),
                save_link=True,
            )
        else:
            done = self._linked(
                p,
                cid,
                digest,
                written,
                created=p.action in LINKS,
                kind="adopted" if p.action == "adopt" else "created",
            )
        refused = isinstance(exc, PartiallyRefused)
        kind = "refused" if refused else "failed"
        message = f"{exc} (still to send: {', '.join(pending)}; the rest is in billing)"
        code = getattr(exc.cause, "code", None) or exc.code or type(exc).__name__
        log.warning(
            "sync.record.partial",
            account_id=p.account_id,
            customer_id=cid,
            outcome=kind,
            code=code,
            pending=pending,
            error=str(exc),
        )
        return replace(
            done, outcome=_outcome(p, kind, code, message, customer_id=cid), retry=refused
        )

    def _apply_refused(self, p: PlannedWrite, link: Link | None) -> Applied:
        log.warning("sync.record.refused", account_id=p.account_id, reason=p.reason)
        conflict = None
        if p.conflict is not None:
            conflict = (
                p.conflict.kind,
                p.conflict.other_account_id,
                {"reason": p.reason, "order_id": p.order_id},
            )
        return Applied(p, _outcome(p, "refused", p.error_code, p.reason), link, conflict=conflict)

    def _apply_unchanged(self, p: PlannedWrite, link: Link | None) -> Applied:
        fp = self.mapping_of(p.billing_account).fingerprint
        out = _outcome(p, "unchanged")
        if (
            link is not None
            and p.payload_hash
            and (
                link.mapping_fingerprint != fp
                or link.status == "deleted"
                or link.payload_hash != p.payload_hash
            )
        ):
            if link.status == "deleted":
                # Restored from the recycle bin: syncing resumes on the same customer.
                log.info(
                    "sync.account.restored", account_id=p.account_id, customer_id=link.customer_id
                )
            fresh = replace(
                link,
                mapping_fingerprint=fp,
                status="active",
                payload_hash=p.payload_hash,
                payload=dict(p.payload),
            )
            return Applied(p, out, fresh, save_link=True)
        return Applied(p, out, link)

    def _apply_replay(self, target: BillingTarget, p: PlannedWrite) -> Applied:
        assert p.idempotency_key is not None and p.create_payload is not None
        log.info("sync.intent.replayed", account_id=p.account_id, key=p.idempotency_key)
        try:
            cid = target.create_customer(p.create_payload, idempotency_key=p.idempotency_key)
        except (PartiallyApplied, PartiallyRefused) as exc:
            return self._apply_partial(p, None, exc, p.create_payload, None)
        if p.followup_key is None:
            return self._linked(p, cid, p.payload_hash, p.payload, created=True)
        # The account changed since the lost create: bring the customer up to date now. Saved
        # as written by the create first, so a failed update is retried as an update.
        try:
            target.update_customer(cid, p.send or p.payload, idempotency_key=p.followup_key)
        except (PartiallyApplied, PartiallyRefused) as exc:
            exc.customer_id = cid
            return self._apply_partial(p, None, exc, p.payload, p.create_payload)
        except (RecordError, TransientError) as exc:
            from connector.mapping import payload_hash

            done = self._linked(
                p, cid, payload_hash(p.create_payload), p.create_payload, created=True
            )
            out = _outcome(p, "failed", exc.code or type(exc).__name__, str(exc), customer_id=cid)
            return replace(done, outcome=out)
        return self._linked(p, cid, p.payload_hash, p.payload, created=True)

    def _apply_update(self, target: BillingTarget, p: PlannedWrite, link: Link | None) -> Applied:
        assert link is not None and p.customer_id is not None and p.idempotency_key is not None
        target.update_customer(
            p.customer_id, p.send or p.payload, idempotency_key=p.idempotency_key
        )
        updated = replace(
            link,
            payload_hash=p.payload_hash,
            payload=dict(p.payload),
            mapping_fingerprint=self.mapping_of(p.billing_account).fingerprint,
            basis_order_id=p.order_id,
            basis_order_activated_at=p.basis_activated_at,
            last_synced_at=self.now(),
            status="active",
        )
        log.info(
            "sync.record.updated",
            account_id=p.account_id,
            customer_id=p.customer_id,
            fields=list(p.changed_fields),
        )
        return Applied(p, _outcome(p, "updated"), updated, save_link=True)

    def _linked(
        self,
        p: PlannedWrite,
        customer_id: str,
        digest: str,
        written: Mapping[str, Any],
        *,
        created: bool = False,
        kind: Literal["created", "adopted"] = "created",
    ) -> Applied:
        now = self.now()
        link = Link(
            billing_account=p.billing_account,
            account_id=p.account_id,
            customer_id=customer_id,
            status="active",
            payload_hash=digest,
            payload=dict(written),
            mapping_fingerprint=self.mapping_of(p.billing_account).fingerprint,
            basis_order_id=p.order_id,
            basis_order_activated_at=p.basis_activated_at,
            writeback_pending=True,
            first_synced_at=now,
            last_synced_at=now,
        )
        if kind == "created":
            log.info("sync.record.created", account_id=p.account_id, customer_id=customer_id)
        out = _outcome(p, kind, customer_id=customer_id)
        return Applied(p, out, link, save_link=True, created=created)

    # --- recording: one transaction per batch ------------------------------------------------

    def _record(
        self,
        scope: RunScope,
        ba: str,
        applied: Sequence[Applied],
        rows: Sequence[OrderRow],
        unsent: Sequence[str] = (),
        *,
        digests: Mapping[str, str] | None = None,
    ) -> None:
        """Links, intents dropped, orders, outcomes, conflicts, retries and plan digests of one
        batch, in one transaction (a digest is never stored without the link it describes);
        then the counts, so an account is counted once."""
        if not applied and not unsent:
            return
        for a in applied:
            scope.tally.of(ba).add(a.outcome.outcome)
            if a.conflict is not None:
                scope.held_now[ba].add(a.planned.account_id)
        failed = [a.outcome for a in applied if a.outcome.outcome == "failed" or a.retry]
        ok = [
            a.planned.account_id
            for a in applied
            if a.outcome.outcome in ("created", "updated", "adopted", "unchanged")
        ]
        # Every order of the batch whose account is linked now names its customer.
        active = {
            a.planned.account_id: a.link.customer_id
            for a in applied
            if a.link is not None and a.link.status == "active"
        }
        order_links = [
            OrderLink(ba, r.order_id, r.account_id, active[r.account_id])
            for r in rows
            if r.account_id in active
        ]
        # Orders of accounts whose link did not change are written only if new or moved: a
        # re-check of unchanged accounts rewrites nothing (one read per page instead of an
        # upsert per order). `last_seen_at` is thus when the row last changed.
        saved = {a.planned.account_id for a in applied if a.save_link}
        settled = [o.order_id for o in order_links if o.account_id not in saved]
        if settled:
            known = self.store.links.order_links(ba, settled)
            order_links = [o for o in order_links if known.get(o.order_id) != o]

        def write() -> None:
            with self.store.transaction():
                saves = [a.link for a in applied if a.save_link and a.link is not None]
                if saves:
                    self.store.links.save(saves)
                created = [a.planned.account_id for a in applied if a.created]
                self.store.intents.drop_many(ba, [*created, *unsent])
                if order_links:
                    self.store.links.save_order_links(order_links)
                for a in applied:
                    if a.conflict is not None:
                        kind, other, details = a.conflict
                        self.store.conflicts.open(
                            kind,
                            billing_account=ba,
                            account_id=a.planned.account_id,
                            other_account_id=other,
                            customer_id=a.planned.customer_id,
                            details=details,
                        )
                # Unchanged records are counted in the run, not stored one by one.
                stored = [a.outcome for a in applied if a.outcome.outcome != "unchanged"]
                if stored:
                    self.store.runs.record_outcomes(scope.run_id, stored)
                if failed:
                    self.store.retries.schedule(
                        ba,
                        {o.account_id: f"{o.error_code}: {o.error_message}" for o in failed},
                        now=self.now(),
                    )
                if ok:
                    self.store.retries.clear(ba, ok)
                if digests:
                    self.store.digests.set_many(plan_digest_scope(ba), digests)

        # A runner that lost its lock writes nothing more, not even these links: another runner
        # may hold the partition now. Nothing is lost: every create made here has the intent
        # written before it was sent, which the next runner replays with the same key.
        self.before_write()
        write()

    def _set_cursor(self, name: str, value: str) -> None:
        self.before_write()
        self.store.cursors.set(name, value)

    def _store_write(self, fn: Callable[[], None]) -> None:
        self.before_write()
        fn()

    # --- deletions and merges ----------------------------------------------------------------

    def _process_deletions(self, scope: RunScope) -> None:
        """Deleted and merged accounts: links are marked, conflicts opened, billing untouched."""
        cursor = parse_sf_datetime(self.store.cursors.get(self.cursor(DELETIONS_CURSOR)))
        since = cursor - self.overlap if cursor else None
        newest: datetime | None = None
        for page in self.source.deleted_accounts(since=since):
            for d in page:
                stamp = parse_sf_datetime(d.modstamp)
                if stamp and (newest is None or stamp > newest):
                    newest = stamp
            for target in self.targets:
                self._apply_deletions(scope, target.name, page)
        if newest and not scope.dry_run and (cursor is None or newest > cursor):
            self._store_write(
                lambda: self.store.cursors.set(
                    self.cursor(DELETIONS_CURSOR), newest.strftime(SF_STAMP)
                )
            )

    def _apply_deletions(self, scope: RunScope, ba: str, page: Sequence[DeletedAccount]) -> None:
        store = self.store
        ids = [d.account_id for d in page] + [d.master_id for d in page if d.master_id]
        links = store.links.get_many(ba, ids)
        outcomes: list[Outcome] = []
        statuses: list[tuple[str, str]] = []
        conflicts: list[tuple[str, str, str, str | None, dict[str, Any]]] = []
        for d in page:
            loser = links.get(d.account_id)
            if (
                loser is None
                or loser.status == "merged"
                or (loser.status == "deleted" and not d.master_id)
            ):
                continue  # never synced (merging before sync is the documented way), or done
            if d.master_id is None:
                statuses.append((d.account_id, "deleted"))
                log.info(
                    "sync.account.deleted", account_id=d.account_id, customer_id=loser.customer_id
                )
                outcomes.append(
                    Outcome(
                        account_id=d.account_id,
                        billing_account=ba,
                        outcome="skipped",
                        customer_id=loser.customer_id,
                        error_code="account_deleted",
                        error_message="the account was deleted in Salesforce; its customer is left as it is",
                    )
                )
                continue
            winner = links.get(d.master_id)
            if winner is not None and winner.status != "merged":
                kind, held, other = "merge_both_linked", d.account_id, d.master_id
                message = (
                    f"account {d.account_id} (customer {loser.customer_id}) was merged into {d.master_id}, "
                    f"which has its own customer {winner.customer_id}; both are kept, "
                    f"{loser.customer_id} is no longer written"
                )
            else:
                kind, held, other = "merge_loser_linked", d.master_id, d.account_id
                message = (
                    f"account {d.account_id} (customer {loser.customer_id}) was merged into {d.master_id}, "
                    f"which has no customer; {d.master_id} is held until an admin decides"
                )
            log.warning(
                "sync.merge.refused",
                kind=kind,
                loser=d.account_id,
                winner=d.master_id,
                customer_id=loser.customer_id,
            )
            scope.tally.of(ba).refused += 1
            scope.held_now[ba].add(held)
            planned = PlannedWrite(
                account_id=held,
                billing_account=ba,
                action="refused",
                order_id="",
                customer_id=loser.customer_id,
                reason=message,
                error_code=kind,
            )
            scope.decisions.append(Decision(held, ba, "refused", "refused"))
            if scope.dry_run:
                scope.plan.append(planned)
                continue
            statuses.append((d.account_id, "merged"))
            details = {
                "loser": d.account_id,
                "winner": d.master_id,
                "loser_customer": loser.customer_id,
                "winner_customer": winner.customer_id if winner else None,
                "message": message,
            }
            conflicts.append((kind, held, other, loser.customer_id, details))
            outcomes.append(
                Outcome(
                    account_id=held,
                    billing_account=ba,
                    outcome="refused",
                    customer_id=loser.customer_id,
                    error_code=kind,
                    error_message=message,
                )
            )
        if scope.dry_run or not (outcomes or statuses):
            return
        self.before_write()
        with store.transaction():
            for account_id, status in statuses:
                store.links.set_status(ba, account_id, status)
            for kind, held, other, customer_id, details in conflicts:
                store.conflicts.open(
                    kind,
                    billing_account=ba,
                    account_id=held,
                    other_account_id=other,
                    customer_id=customer_id,
                    details=details,
                )
            if outcomes:
                store.runs.record_outcomes(scope.run_id, outcomes)

    # --- write-back --------------------------------------------------------------------------

    def _flush_writebacks(self, scope: RunScope, *, final: bool) -> None:
        if scope.dry_run:
            return
        for wb in scope.writebacks.values():
            self._flush_queue(scope, wb, final=final)

    def _flush_queue(self, scope: RunScope, wb: WriteBacks, *, final: bool) -> None:
        ba = wb.billing_account
        if wb.confirmed:
            confirmed, wb.confirmed = wb.confirmed, []
            self._store_write(lambda: self.store.links.mark_written_back(ba, confirmed))
        # Full batches go to Salesforce beside the writers; the answers are recorded here, at
        # the next page boundary, and all of them before the run ends.
        for batch in wb.take(final=final):
            scope.beside.submit((wb, batch), self.source.write_back, batch, wb.field_name)
        for (done_wb, done_batch), future in scope.beside.collect(wait=final):
            self._record_writeback(scope, done_wb, done_batch, future)

    def _record_writeback(
        self,
        scope: RunScope,
        wb: WriteBacks,
        batch: list[tuple[str, str]],
        future: Future[list[WriteBackResult]],
    ) -> None:
        ba = wb.billing_account
        try:
            results = future.result()
        except TransientError as exc:
            # The links stay pending and the next run writes them back; the records are
            # reported now, so nobody believes the ids reached Salesforce.
            log.warning("writeback.deferred", accounts=len(batch), error=str(exc))
            results = [
                WriteBackResult(
                    a,
                    False,
                    exc.code or "TRANSIENT",
                    f"{exc} (pending, retried next run)",
                    transient=True,
                )
                for a, _ in batch
            ]
        ok = [r.account_id for r in results if r.ok]
        failures = [r for r in results if not r.ok]
        customers = dict(batch)
        outcomes = [
            Outcome(
                account_id=r.account_id,
                billing_account=ba,
                outcome="failed",
                customer_id=customers.get(r.account_id),
                error_code=f"writeback_{r.code}",
                error_message=REDACTOR.scrub(
                    f"writing the customer id to Account.{wb.field_name} failed: {r.message}"
                ),
            )
            for r in failures
        ]
        for r in failures:
            log.warning("writeback.failed", account_id=r.account_id, code=r.code, error=r.message)
        # A write-back failure is its own count: the account's sync outcome stays counted
        # once, as created or updated.
        scope.tally.writeback_failed += len(outcomes)

        def write() -> None:
            with self.store.transaction():
                if ok:
                    self.store.links.mark_written_back(ba, ok)
                if outcomes:
                    self.store.runs.record_outcomes(scope.run_id, outcomes)

        self._store_write(write)

    # --- the cursor ---------------------------------------------------------------------------

    def _advance_cursor(self, mode: str, snapshot: datetime, *, backfill_window: bool) -> None:
        if mode not in ("sync", "recheck", "backfill"):
            return  # a retry pass reads a few records only: it never moves the cursor
        current = parse_sf_datetime(self.store.cursors.get(self.cursor(ORDERS_CURSOR)))
        if mode == "backfill" and current is not None:
            return  # a backfill never moves the incremental cursor backwards or forwards past a sync
        if mode == "backfill" and not backfill_window:
            return  # a windowed backfill did not read everything
        # The run read every change stamped before the snapshot, of every watched object.
        # A backfill or recheck does not resolve the watched objects (that may take describe
        # calls): it moves the summary, where an object without a cursor of its own starts.
        for w in self._watched or ():
            name = self._changes_cursor(w.sobject)
            own = parse_sf_datetime(self.store.cursors.get(name))
            if own is None or snapshot > own:
                self._set_cursor(name, snapshot.strftime(SF_STAMP))
        if current is None or snapshot > current:
            self._set_cursor(self.cursor(ORDERS_CURSOR), snapshot.strftime(SF_STAMP))


@dataclass(frozen=True, slots=True)
class _BackfillPoint:
    """Where a backfill resumes, and the server time at which its first attempt began."""

    after_id: str
    snapshot: datetime | None

    def dump(self) -> str:
        return json.dumps({"after_id": self.after_id, "snapshot": _iso(self.snapshot)})

    @staticmethod
    def parse(value: str | None) -> _BackfillPoint | None:
        if not value:
            return None
        if not value.startswith("{"):
            return _BackfillPoint(value, None)  # written before the snapshot was kept
        data = json.loads(value)
        return _BackfillPoint(str(data["after_id"]), parse_sf_datetime(data.get("snapshot")))


def _without_pending(
    payload: Mapping[str, Any], pending: AbstractSet[str], before: Mapping[str, Any] | None
) -> dict[str, Any]:
    """`payload` with its `pending` top-level keys as they were in `before` (left out when
    `before` had none or is unknown): what billing holds after the other keys were applied."""
    out = {k: v for k, v in payload.items() if k not in pending}
    for key in pending:
        if before is not None and key in before:
            out[key] = before[key]
    return out


def _was_admin_link(link: Link | None) -> bool:
    return link is not None and link.payload_hash is None and link.mapping_fingerprint is None


def _outcome(
    p: PlannedWrite,
    kind: str,
    error_code: str | None = None,
    message: str | None = None,
    *,
    customer_id: str | None = None,
) -> Outcome:
    # Error texts are kept and shown by `status`: a service may echo a key or token in them.
    return Outcome(
        account_id=p.account_id,
        billing_account=p.billing_account,
        outcome=kind,  # type: ignore[arg-type]
        customer_id=customer_id or p.customer_id,
        order_id=p.order_id,
        error_code=error_code,
        error_message=REDACTOR.scrub(message) if message else None,
        changed_fields=p.changed_fields if kind != "unchanged" else (),
    )


def _pacing_counters(target: BillingTarget) -> dict[str, int]:
    """A target's running totals a run report shows the run's share of: requests sent, 429s
    met, and the slow-downs of the limiter it paces through. That limiter belongs to the
    credential, so accounts sharing a key each report the key's slow-downs."""
    limiter = getattr(target, "limiter", None)  # test doubles may pace through none
    return {
        "calls": target.calls,
        "rate_limited": int(getattr(target, "rate_limited", 0)),
        "slowdowns": int(getattr(limiter, "slowdowns", 0)),
    }


def _counts(r: RunReport) -> dict[str, int]:
    return {k: v for k, v in r.as_json().items() if isinstance(v, int)}


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if dt else None


def _dry_run_id() -> str:
    return "dry-" + uuid.uuid4().hex[:12]
