"""One sync pass: read -> map -> plan -> apply -> record.

The engine reads activated orders page by page from a `Source`, evaluates the customer mapping
for the account of each order, decides per account and billing account what to do (a
`PlannedWrite`), applies the plan through a `BillingTarget`, and records every link, outcome and
cursor in the state store. It never merges, moves or deletes a billing customer, and it never
writes to a customer while a conflict about that account is open.

Guarantees a run keeps, whatever fails:
- a create is preceded by a recorded intent holding its idempotency key and exact payload, and
  the link is saved with the intent cleared in one transaction, so a crash between the two is
  completed with the same key on the next run instead of creating a second customer;
- an unchanged payload (same hash as last written) costs no billing call at all;
- the incremental cursor moves only at the end of a run that read every page, and only to the
  newest SystemModstamp read; records that failed go to the retry list instead of holding the
  cursor back for everyone else.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal, Protocol

import structlog

from connector.billing.base import RESERVED_METADATA_KEYS, BillingTarget
from connector.errors import (
    ConnectorError,
    LockLost,
    RecordError,
    TransientError,
    UnavailableError,
)
from connector.log import REDACTOR
from connector.mapping import CustomerMapping, diff_payloads, payload_hash
from connector.salesforce import (
    DeletedAccount,
    OrderPage,
    OrderRow,
    WriteBackResult,
    parse_sf_datetime,
)
from connector.state.ports import Store
from connector.state.records import Intent, Link, OrderLink, Outcome

log = structlog.get_logger("connector.engine")

Mode = Literal["sync", "backfill", "recheck", "retry"]
Action = Literal["create", "update", "adopt", "unchanged", "refused", "failed"]

ORDERS_CURSOR = "salesforce.orders.modstamp"
DELETIONS_CURSOR = "salesforce.accounts.deleted.modstamp"
# Stripe keeps idempotency keys for at least 24 hours; an older intent cannot be replayed.
IDEMPOTENCY_WINDOW = timedelta(hours=24)
KEY_PREFIX = "bc1"


class Source(Protocol):
    """What the engine needs from Salesforce (implemented by `salesforce.SalesforceSource`)."""

    org_id: str

    def activated_orders(
        self,
        fields: Sequence[str],
        *,
        watch: Sequence[str] = ...,
        changed_since: datetime | None = None,
        activated_from: datetime | None = None,
        activated_until: datetime | None = None,
        after_id: str | None = None,
        account_ids: Sequence[str] | None = None,
    ) -> Iterator[OrderPage]: ...

    def write_back(self, pairs: Sequence[tuple[str, str]]) -> list[WriteBackResult]: ...

    def deleted_accounts(self, *, since: datetime | None) -> Iterator[list[DeletedAccount]]: ...


@dataclass(frozen=True, slots=True)
class PlannedWrite:
    """What one Salesforce account will do to one billing account, decided before any call."""

    account_id: str
    billing_account: str
    action: Action
    order_id: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    payload_hash: str = ""
    customer_id: str | None = None
    changed_fields: tuple[str, ...] = ()
    reason: str | None = None
    error_code: str | None = None
    basis_activated_at: str | None = None

    def detail(self) -> str:
        """What this write changes (or why it is refused), short enough for one line."""
        if self.action in ("refused", "failed"):
            return str(self.reason or self.error_code or "")
        if self.action == "create":
            return f"new customer ({len(self.changed_fields)} fields)"
        return ", ".join(self.changed_fields)


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
    stripe_calls: int  # deprecated: the same as billing_calls, kept for one release
    plan: tuple[PlannedWrite, ...] = ()
    error: str | None = None
    error_exit_code: int | None = None
    billing_calls: int = 0
    # billing account name -> {created, updated, unchanged, refused, failed, calls}
    billing_accounts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # The error's class (AuthenticationError, ConfigError, LockLost...): the daemon stops on
    # what will not pass by itself and backs off on the rest.
    error_type: str | None = None

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
            "salesforce_calls",
            "billing_calls",
            "stripe_calls",
        )
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        out["billing_accounts"] = {k: dict(v) for k, v in self.billing_accounts.items()}
        return out

    def summary(self) -> str:
        """One line for people: what happened and what it cost."""
        return (
            f"created {self.created}, updated {self.updated}, unchanged {self.unchanged}, "
            f"refused {self.refused}, failed {self.failed} | orders read {self.orders_read}, "
            f"accounts {self.accounts_seen} | Salesforce calls {self.salesforce_calls}, "
            f"billing calls {self.billing_calls}"
        )

    @property
    def exit_code(self) -> int:
        if self.error_exit_code is not None:
            return self.error_exit_code
        return 1 if (self.failed or self.refused or self.status != "succeeded") else 0


@dataclass
class _Tally:
    orders_read: int = 0
    accounts: set[str] = field(default_factory=set)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: int = 0
    failed: int = 0
    watermark: datetime | None = None
    # billing account -> outcome -> count, for the per-account report
    by_account: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, action: str, billing_account: str) -> None:
        outcome = {"create": "created", "update": "updated", "adopt": "updated"}.get(
            action, action
        )
        if outcome not in ("created", "updated", "unchanged", "refused", "failed"):
            return
        setattr(self, outcome, getattr(self, outcome) + 1)
        per = self.by_account.setdefault(billing_account, {})
        per[outcome] = per.get(outcome, 0) + 1

    def as_counts(self) -> dict[str, int]:
        return {
            "orders_read": self.orders_read,
            "accounts_seen": len(self.accounts),
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "refused": self.refused,
            "failed": self.failed,
        }

    def see(self, row: OrderRow) -> None:
        self.orders_read += 1
        self.accounts.add(row.account_id)
        stamp = parse_sf_datetime(row.watermark)
        if stamp and (self.watermark is None or stamp > self.watermark):
            self.watermark = stamp


def watched_relationships(fields: Sequence[str]) -> list[str]:
    """Every relationship a mapping reads through, e.g. Account, Account.Parent, BillToContact."""
    out: dict[str, None] = {"Account": None}
    for f in fields:
        parts = f.split(".")
        for i in range(1, len(parts)):
            out[".".join(parts[:i])] = None
    return list(out)


def create_key(billing_account: str, account_id: str, digest: str) -> str:
    return f"{KEY_PREFIX}-{billing_account}-{account_id}-create-{digest[:32]}"


def update_key(link: Link, digest: str) -> str:
    # The previous hash and the time of the last write make the key unique per transition,
    # so a payload that goes A -> B -> A is written again instead of replayed from 24 h ago,
    # while a retry of the same transition (after a crash) replays.
    stamp = int(link.last_synced_at.timestamp()) if link.last_synced_at else 0
    prev = (link.payload_hash or "none")[:16]
    return (
        f"{KEY_PREFIX}-{link.billing_account}-{link.account_id}-update-{prev}-{digest[:32]}-{stamp}"
    )


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
        writeback_billing_account: str | None = None,
        writeback_batch: int = 200,
        salesforce_calls: Callable[[], int] = lambda: 0,
        on_progress: Callable[[int, int | None], None] | None = None,
        stop: threading.Event | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        before_write: Callable[[], None] | None = None,
        cursor_scope: str | None = None,
    ) -> None:
        self.source = source
        self.targets = list(targets)
        self.store = store
        self.mapping = mapping
        self.overlap = timedelta(seconds=overlap_seconds)
        # Only one billing account's customer id fits the Account's Stripe Id field.
        self.writeback_account = writeback_billing_account or (
            self.targets[0].name if self.targets else None
        )
        self.writeback_batch = writeback_batch
        self._sf_calls = salesforce_calls
        self.on_progress = on_progress
        self.stop = stop or threading.Event()
        self.now = now
        # The runner-lock check: called before each billing write and each store write batch;
        # raises LockLost when another runner may have taken over, so this one stops writing.
        self.before_write = before_write or (lambda: None)
        # A daemon partition (one billing account of several) keeps cursors of its own: one
        # partition's progress says nothing about what another has applied.
        self.cursor_scope = cursor_scope
        self.fields = list(mapping.soql_fields())
        self.watch = watched_relationships(self.fields)

    # --- the run --------------------------------------------------------------------------

    def run(
        self,
        mode: Mode = "sync",
        *,
        dry_run: bool = False,
        since: datetime | None = None,
        until: datetime | None = None,
        retry_all: bool = False,
    ) -> RunReport:
        run_id = (
            self.store.runs.start(
                mode, dry_run=dry_run, partition=",".join(t.name for t in self.targets)
            )
            if not dry_run
            else _dry_run_id()
        )
        structlog.contextvars.bind_contextvars(run_id=run_id)
        tally = _Tally()
        plan: list[PlannedWrite] = []
        sf_start = self._sf_calls()
        calls_start = {t.name: t.calls for t in self.targets}
        status, error, error_exit = "succeeded", None, None
        error_type: str | None = None
        run = _Run(self, run_id=run_id, dry_run=dry_run, tally=tally, plan=plan)
        log.info("run.started", mode=mode, dry_run=dry_run, since=_iso(since), until=_iso(until))
        try:
            effective = mode
            if mode == "sync" and self._mapping_changed():
                # A changed mapping can change every payload: re-evaluate every linked account.
                log.info("run.mapping_changed", fingerprint=self.mapping.fingerprint)
                effective = "recheck"
            if mode in ("sync", "backfill"):
                # Merges and deletes first, so the accounts they concern are held before any
                # of their orders is planned.
                self._process_deletions(run)
            completed = self._read_and_apply(run, effective, since=since, until=until)
            if completed and mode in ("sync", "retry"):
                completed = self._process_retries(run, retry_all=retry_all or mode == "retry")
            run.flush_writebacks(final=True)
            if (
                completed
                and not dry_run
                and mode in ("sync", "recheck", "backfill")
                and tally.watermark
            ):
                self._advance_cursor(
                    mode, tally.watermark, backfill_window=since is None and until is None
                )
            if not completed:
                status = "interrupted"
            elif tally.failed or tally.refused:
                status = "partial"
        except LockLost as exc:
            # Another runner may hold the partition now: stop writing at once. What was applied
            # is recorded or replayable (intents, idempotency keys); the cursor did not move.
            status, error, error_exit = "interrupted", REDACTOR.scrub(str(exc)), exc.exit_code
            error_type = type(exc).__name__
            log.error("run.lock_lost", error=error)
        except (UnavailableError, TransientError) as exc:
            # The run could not go on (login, limits, a query that kept failing): exit 3. What
            # was applied is recorded; the cursor did not move, so nothing is skipped.
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
            if not dry_run:
                with suppress(Exception):
                    self.store.runs.finish(
                        run_id, status="interrupted", counts=tally.as_counts(), error=None
                    )
            log.warning("run.interrupted", exit=getattr(exc, "code", None), **tally.as_counts())
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
            structlog.contextvars.unbind_contextvars("run_id")
        report = RunReport(
            run_id=run_id,
            mode=mode,
            dry_run=dry_run,
            status=status,
            orders_read=tally.orders_read,
            accounts_seen=len(tally.accounts),
            created=tally.created,
            updated=tally.updated,
            unchanged=tally.unchanged,
            refused=tally.refused,
            failed=tally.failed,
            salesforce_calls=self._sf_calls() - sf_start,
            stripe_calls=sum(t.calls - calls_start[t.name] for t in self.targets),
            plan=tuple(plan),
            error=error,
            error_exit_code=error_exit,
            error_type=error_type,
            billing_calls=sum(t.calls - calls_start[t.name] for t in self.targets),
            billing_accounts={
                t.name: {
                    **dict.fromkeys(("created", "updated", "unchanged", "refused", "failed"), 0),
                    **tally.by_account.get(t.name, {}),
                    "calls": t.calls - calls_start[t.name],
                }
                for t in self.targets
            },
        )
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
        log.info("run.finished", run_id=run_id, status=report.status, **_counts(report))
        return report

    def cursor(self, name: str) -> str:
        return f"{name}@{self.cursor_scope}" if self.cursor_scope else name

    def _mapping_changed(self) -> bool:
        # Links an admin set by hand carry no fingerprint until their first sync.
        fp = self.mapping.fingerprint
        return any(self.store.links.fingerprints_in_use(t.name) - {fp} for t in self.targets)

    def _read_and_apply(
        self, run: _Run, mode: str, *, since: datetime | None, until: datetime | None
    ) -> bool:
        """Read every page and apply it. False when interrupted."""
        backfill_cursor = None
        after_id = None
        changed_since = None
        if mode == "backfill":
            backfill_cursor = self.cursor(f"backfill:{_iso(since) or '-'}:{_iso(until) or '-'}")
            after_id = self.store.cursors.get(backfill_cursor) or None
            if after_id:
                log.info("backfill.resuming", after_id=after_id)
        elif mode == "sync":
            cursor = parse_sf_datetime(self.store.cursors.get(self.cursor(ORDERS_CURSOR)))
            changed_since = cursor - self.overlap if cursor else None
        pages = self.source.activated_orders(
            self.fields,
            watch=self.watch,
            changed_since=changed_since,
            activated_from=since if mode == "backfill" else None,
            activated_until=until if mode == "backfill" else None,
            after_id=after_id,
        )
        for page in pages:
            run.expected_total = page.total
            if not run.apply_page(page.rows):
                return False
            if backfill_cursor and not run.dry_run and page.rows:
                # Resume point: every record of this page has its outcome recorded.
                self.before_write()
                self.store.cursors.set(backfill_cursor, max(r.order_id for r in page.rows))
        if backfill_cursor and not run.dry_run:
            self.store.cursors.set(backfill_cursor, "")
        return True

    def _process_deletions(self, run: _Run) -> None:
        """Deleted and merged accounts: links are marked, conflicts opened, billing untouched."""
        cursor = parse_sf_datetime(self.store.cursors.get(self.cursor(DELETIONS_CURSOR)))
        since = cursor - self.overlap if cursor else None
        newest: datetime | None = None
        for page in self.source.deleted_accounts(since=since):
            for d in page:
                stamp = parse_sf_datetime(d.modstamp)
                if stamp and (newest is None or stamp > newest):
                    newest = stamp
            run.apply_deletions(page)
        if newest and not run.dry_run and (cursor is None or newest > cursor):
            self.before_write()
            self.store.cursors.set(
                self.cursor(DELETIONS_CURSOR), newest.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
            )

    def _process_retries(self, run: _Run, *, retry_all: bool) -> bool:
        for target in self.targets:
            items = (
                self.store.retries.all(target.name)
                if retry_all
                else self.store.retries.due(target.name, now=self.now())
            )
            todo = [
                i.account_id for i in items if i.account_id not in run.done.get(target.name, set())
            ]
            for start in range(0, len(todo), 200):
                chunk = todo[start : start + 200]
                for page in self.source.activated_orders(
                    self.fields, watch=self.watch, account_ids=chunk
                ):
                    if not run.apply_page(page.rows, only=[target]):
                        return False
        return True

    def _advance_cursor(self, mode: str, watermark: datetime, *, backfill_window: bool) -> None:
        current = parse_sf_datetime(self.store.cursors.get(self.cursor(ORDERS_CURSOR)))
        if mode == "backfill" and current is not None:
            return  # a backfill never moves the incremental cursor backwards or forwards past a sync
        if mode == "backfill" and not backfill_window:
            return  # a windowed backfill did not read everything
        if current is None or watermark > current:
            self.before_write()
            self.store.cursors.set(
                self.cursor(ORDERS_CURSOR), watermark.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
            )


class _Run:
    """The mutable working state of one run; plans and applies page by page."""

    def __init__(
        self, engine: Engine, *, run_id: str, dry_run: bool, tally: _Tally, plan: list[PlannedWrite]
    ) -> None:
        self.e = engine
        self.run_id = run_id
        self.dry_run = dry_run
        self.tally = tally
        self.plan = plan
        self.done: dict[str, set[str]] = {}
        self.expected_total: int | None = None
        self.writebacks: list[tuple[str, str]] = []
        self.held: dict[str, set[str]] = {
            t.name: engine.store.conflicts.held_accounts(t.name) for t in engine.targets
        }
        # Accounts an admin resolved with `conflicts resolve --new`: they get a new customer
        # whatever their Stripe Id field says, once.
        self.fresh: dict[str, dict[str, datetime]] = {t.name: {} for t in engine.targets}
        for c in engine.store.conflicts.list("resolved"):
            if (
                c.resolution == "new"
                and c.billing_account in self.fresh
                and c.resolved_at is not None
            ):
                self.fresh[c.billing_account][c.account_id] = c.resolved_at
        # Accounts whose Stripe Id field an admin's explicit link overrides in this run.
        self.overwrite_field: dict[str, set[str]] = {t.name: set() for t in engine.targets}
        self.intents: dict[str, dict[str, Intent]] = {
            t.name: {i.account_id: i for i in engine.store.intents.open(t.name)}
            for t in engine.targets
        }
        wb = engine.writeback_account
        if wb and not dry_run:
            # Write-backs that failed in earlier runs are retried first.
            self.writebacks = [
                (ln.account_id, ln.customer_id)
                for ln in engine.store.links.pending_writebacks(wb, limit=10_000)
            ]
            self._pending = {a for a, _ in self.writebacks}
        else:
            self._pending = set()

    # --- one page ---------------------------------------------------------------------------

    def apply_page(
        self, rows: Sequence[OrderRow], only: Sequence[BillingTarget] | None = None
    ) -> bool:
        orders_before = self.tally.orders_read
        best: dict[str, OrderRow] = {}
        for row in rows:
            self.tally.see(row)
            cur = best.get(row.account_id)
            if cur is None or row.basis_key > cur.basis_key:
                best[row.account_id] = row
        for target in only or self.e.targets:
            links = self.e.store.links.get_many(target.name, list(best))
            resolver = _LinkResolver(self.e.store, target.name)
            outcomes: list[Outcome] = []
            saves: list[Link] = []
            for done, (account_id, row) in enumerate(best.items(), start=1):
                if self.e.on_progress:
                    self.e.on_progress(
                        orders_before + len(rows) * done // len(best), self.expected_total
                    )
                if self.e.stop.is_set():
                    # Finish cleanly: what was applied is recorded, the rest is read again.
                    self._record(target.name, outcomes, saves, rows, links)
                    return False
                planned = self._plan(target.name, row, links.get(account_id), resolver)
                if self.dry_run:
                    self.plan.append(planned)
                    self.tally.count(planned.action, target.name)
                    continue
                prev = links.get(account_id)
                self.e.before_write()
                outcome, link = self._apply(target, planned, prev, row)
                self.tally.count(_action_of(outcome), target.name)
                outcomes.append(outcome)
                if link is not None and link is not prev:
                    links[account_id] = link
                    if outcome.outcome != "created":  # creates are saved at once, with their intent
                        saves.append(link)
                if link is not None:
                    self._queue_writeback(target.name, link, row)
                self.done.setdefault(target.name, set()).add(account_id)
            if not self.dry_run:
                self._record(target.name, outcomes, saves, rows, links)
        self.flush_writebacks(final=False)
        return True

    def apply_deletions(self, page: Sequence[DeletedAccount]) -> None:
        store = self.e.store
        ids = [d.account_id for d in page] + [d.master_id for d in page if d.master_id]
        for target in self.e.targets:
            ba = target.name
            links = store.links.get_many(ba, ids)
            outcomes: list[Outcome] = []
            for d in page:
                loser = links.get(d.account_id)
                if (
                    loser is None
                    or loser.status == "merged"
                    or (loser.status == "deleted" and not d.master_id)
                ):
                    continue  # never synced (merging before sync is the documented way), or already handled
                if d.master_id is None:
                    if not self.dry_run:
                        self.e.before_write()
                        store.links.set_status(ba, d.account_id, "deleted")
                    log.info(
                        "sync.account.deleted",
                        account_id=d.account_id,
                        customer_id=loser.customer_id,
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
                self.tally.count("refused", ba)
                if self.dry_run:
                    self.plan.append(
                        PlannedWrite(
                            account_id=held,
                            billing_account=ba,
                            action="refused",
                            order_id="",
                            customer_id=loser.customer_id,
                            reason=message,
                            error_code=kind,
                        )
                    )
                    continue
                self.e.before_write()
                with store.transaction():
                    store.links.set_status(ba, d.account_id, "merged")
                    store.conflicts.open(
                        kind,
                        billing_account=ba,
                        account_id=held,
                        other_account_id=other,
                        customer_id=loser.customer_id,
                        details={
                            "loser": d.account_id,
                            "winner": d.master_id,
                            "loser_customer": loser.customer_id,
                            "winner_customer": winner.customer_id if winner else None,
                            "message": message,
                        },
                    )
                self.held[ba].add(held)
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
            if outcomes and not self.dry_run:
                self.e.before_write()
                store.runs.record_outcomes(self.run_id, outcomes)

    def _record(
        self,
        ba: str,
        outcomes: list[Outcome],
        saves: list[Link],
        rows: Sequence[OrderRow],
        links: Mapping[str, Link] | None = None,
    ) -> None:
        if self.dry_run:
            return
        order_links = [
            OrderLink(ba, r.order_id, r.account_id, links[r.account_id].customer_id)
            for r in rows
            if links and r.account_id in links and links[r.account_id].status == "active"
        ]
        failed = [o for o in outcomes if o.outcome == "failed"]
        ok = [
            o.account_id
            for o in outcomes
            if o.outcome in ("created", "updated", "adopted", "unchanged")
        ]
        self.e.before_write()
        with self.e.store.transaction():
            if saves:
                self.e.store.links.save(saves)
            if order_links:
                self.e.store.links.save_order_links(order_links)
            # Unchanged records are counted in the run, not stored one by one.
            self.e.store.runs.record_outcomes(
                self.run_id, [o for o in outcomes if o.outcome != "unchanged"]
            )
            if failed:
                self.e.store.retries.schedule(
                    ba,
                    {o.account_id: f"{o.error_code}: {o.error_message}" for o in failed},
                    now=self.e.now(),
                )
            if ok:
                self.e.store.retries.clear(ba, ok)

    # --- deciding -----------------------------------------------------------------------------

    def _plan(
        self, ba: str, row: OrderRow, link: Link | None, resolver: _LinkResolver
    ) -> PlannedWrite:
        acc = row.account_id
        # The Account has one Stripe Id field, and it speaks for the write-back billing account
        # only: other billing accounts neither adopt from it nor compare their links with it.
        field_value = row.stripe_id_value if ba == self.e.writeback_account else None
        make = partial(
            PlannedWrite,
            account_id=acc,
            billing_account=ba,
            order_id=row.order_id,
            basis_activated_at=row.activated_at,
        )
        fresh = self._wants_new_customer(ba, acc, link)
        if acc in self.held[ba] or (
            link is not None and link.status in ("held", "merged") and not fresh
        ):
            return make(
                action="refused",
                customer_id=link.customer_id if link else None,
                reason="an open conflict holds this account; see `billing-connector conflicts list`",
                error_code="conflict_open",
            )
        if (
            link is not None
            and link.basis_order_id
            and link.basis_order_id != row.order_id
            and row.basis_key < (link.basis_order_activated_at or "", link.basis_order_id)
            and link.mapping_fingerprint == self.e.mapping.fingerprint
        ):
            # Only the account's latest activated order decides its customer; an older order
            # that changed (or whose contact changed) does not.
            return make(action="unchanged", customer_id=link.customer_id, reason="older order")
        try:
            payload = dict(self.e.mapping.evaluate(row.record, link=resolver))
        except ConnectorError as exc:
            return make(action="failed", reason=str(exc), error_code="mapping_error")
        meta = {
            k: v
            for k, v in dict(payload.get("metadata") or {}).items()
            if k not in RESERVED_METADATA_KEYS
        }
        meta.update(salesforce_account_id=acc, salesforce_org_id=self.e.source.org_id)
        payload["metadata"] = meta
        digest = payload_hash(payload)
        if fresh:
            # The admin chose a new customer for this account (`conflicts resolve --new`).
            return make(
                action="create",
                payload=payload,
                payload_hash=digest,
                changed_fields=tuple(_flat_keys(payload)),
                reason="new customer chosen by an admin",
            )
        if link is None:
            if field_value:
                owner = self.e.store.links.by_customer(ba, field_value)
                if owner is not None and owner.account_id != acc:
                    return make(
                        action="refused",
                        payload=payload,
                        payload_hash=digest,
                        customer_id=field_value,
                        error_code="customer_linked_elsewhere",
                        reason=f"the Account's Stripe Id field names {field_value}, "
                        f"which is linked to account {owner.account_id}",
                    )
                return make(
                    action="adopt",
                    payload=payload,
                    payload_hash=digest,
                    customer_id=field_value,
                    changed_fields=tuple(_flat_keys(payload)),
                    reason="Stripe Id field already set: adopt that customer",
                )
            return make(
                action="create",
                payload=payload,
                payload_hash=digest,
                changed_fields=tuple(_flat_keys(payload)),
            )
        admin_linked = link.payload_hash is None and link.mapping_fingerprint is None
        if field_value and field_value != link.customer_id and admin_linked:
            # An admin linked this account by hand (`xref link`, `conflicts resolve --link`):
            # that decision wins over the field, which is overwritten with the linked id.
            self.overwrite_field[ba].add(acc)
        elif field_value and field_value != link.customer_id:
            owner = self.e.store.links.by_customer(ba, field_value)
            kind = (
                "winner_field_names_other_customer"
                if owner is not None
                else "stripe_id_field_mismatch"
            )
            return make(
                action="refused",
                payload=payload,
                payload_hash=digest,
                customer_id=link.customer_id,
                error_code=kind,
                reason=f"the Account's Stripe Id field names {field_value} but the account "
                f"is linked to {link.customer_id}",
            )
        if digest == link.payload_hash:
            return make(
                action="unchanged",
                payload=payload,
                payload_hash=digest,
                customer_id=link.customer_id,
            )
        return make(
            action="update",
            payload=payload,
            payload_hash=digest,
            customer_id=link.customer_id,
            changed_fields=tuple(diff_payloads(link.payload, payload)),
        )

    def _wants_new_customer(self, ba: str, account_id: str, link: Link | None) -> bool:
        """True until the new customer an admin asked for (`--new`) has been created."""
        resolved_at = self.fresh[ba].get(account_id)
        if resolved_at is None:
            return False
        return link is None or link.last_synced_at is None or link.last_synced_at < resolved_at

    # --- applying ----------------------------------------------------------------------------

    def _apply(
        self, target: BillingTarget, p: PlannedWrite, link: Link | None, row: OrderRow
    ) -> tuple[Outcome, Link | None]:
        ba = target.name
        store = self.e.store
        now = self.e.now()
        try:
            if p.action == "refused":
                if p.error_code in (
                    "stripe_id_field_mismatch",
                    "customer_linked_elsewhere",
                    "winner_field_names_other_customer",
                ):
                    store.conflicts.open(
                        p.error_code,
                        billing_account=ba,
                        account_id=p.account_id,
                        customer_id=p.customer_id,
                        details={"reason": p.reason, "order_id": p.order_id},
                    )
                    self.held[ba].add(p.account_id)
                log.warning("sync.record.refused", account_id=p.account_id, reason=p.reason)
                return self._outcome(p, "refused", error_code=p.error_code, message=p.reason), link
            if p.action == "failed":
                log.warning("sync.record.failed", account_id=p.account_id, error=p.reason)
                return self._outcome(p, "failed", error_code=p.error_code, message=p.reason), link
            if p.action == "unchanged":
                fp = self.e.mapping.fingerprint
                if (
                    link is not None
                    and p.payload_hash
                    and (link.mapping_fingerprint != fp or link.status == "deleted")
                ):
                    if link.status == "deleted":
                        # Restored from the recycle bin: syncing resumes on the same customer.
                        log.info(
                            "sync.account.restored",
                            account_id=p.account_id,
                            customer_id=link.customer_id,
                        )
                    link = _replace(link, mapping_fingerprint=fp, status="active")
                return self._outcome(p, "unchanged"), link
            if p.action == "create":
                customer_id, written = self._create(target, p, now)
                # `written` is what the customer holds now: a replayed intent may carry an older
                # payload, and then the next run sees the difference and updates it.
                new = Link(
                    billing_account=ba,
                    account_id=p.account_id,
                    customer_id=customer_id,
                    status="active",
                    payload_hash=payload_hash(written),
                    payload=dict(written),
                    mapping_fingerprint=self.e.mapping.fingerprint,
                    basis_order_id=p.order_id,
                    basis_order_activated_at=p.basis_activated_at,
                    writeback_pending=True,
                    first_synced_at=now,
                    last_synced_at=now,
                )
                # The create may have taken long; if the lock went meanwhile, the open intent
                # lets whoever holds it now replay this create and link the same customer.
                self.e.before_write()
                store.intents.complete_create(
                    new, [OrderLink(ba, p.order_id, p.account_id, customer_id)]
                )
                self.intents[ba].pop(p.account_id, None)
                log.info("sync.record.created", account_id=p.account_id, customer_id=customer_id)
                if new.payload_hash != p.payload_hash:
                    # The account changed since the lost create: bring the customer up to date now.
                    target.update_customer(
                        customer_id, p.payload, idempotency_key=update_key(new, p.payload_hash)
                    )
                    new = _replace(
                        new,
                        payload_hash=p.payload_hash,
                        payload=dict(p.payload),
                        last_synced_at=self.e.now(),
                    )
                    store.links.save([new])
                return self._outcome(p, "created", customer_id=customer_id), new
            if p.action == "adopt":
                assert p.customer_id is not None
                remote = target.fetch_customer(p.customer_id)
                if remote is None or remote.deleted:
                    raise RecordError(
                        f"the Account's Stripe Id field names {p.customer_id}, which "
                        f"{'was deleted' if remote else 'does not exist'} in billing account '{ba}'; "
                        "correct or clear the field (a cleared field makes the connector create a new customer)",
                        code="adopt_customer_missing",
                    )
                owner = remote.metadata.get("salesforce_account_id")
                if owner and owner != p.account_id:
                    store.conflicts.open(
                        "customer_belongs_to_other_account",
                        billing_account=ba,
                        account_id=p.account_id,
                        other_account_id=owner,
                        customer_id=p.customer_id,
                        details={"order_id": p.order_id},
                    )
                    self.held[ba].add(p.account_id)
                    return self._outcome(
                        p,
                        "refused",
                        error_code="customer_belongs_to_other_account",
                        message=f"{p.customer_id} is marked as the customer of account {owner}",
                    ), link
                adopted = Link(
                    billing_account=ba,
                    account_id=p.account_id,
                    customer_id=p.customer_id,
                    status="active",
                    payload_hash=None,
                    payload=None,
                    mapping_fingerprint=self.e.mapping.fingerprint,
                    basis_order_id=p.order_id,
                    basis_order_activated_at=p.basis_activated_at,
                    writeback_pending=False,
                    first_synced_at=now,
                    last_synced_at=None,
                )
                store.links.save([adopted])  # linked first, so a failed update still keeps the link
                target.update_customer(
                    p.customer_id, p.payload, idempotency_key=update_key(adopted, p.payload_hash)
                )
                done = _replace(
                    adopted,
                    payload_hash=p.payload_hash,
                    payload=dict(p.payload),
                    last_synced_at=now,
                )
                log.info("sync.record.adopted", account_id=p.account_id, customer_id=p.customer_id)
                return self._outcome(p, "adopted", customer_id=p.customer_id), done
            # update
            assert link is not None and p.customer_id is not None
            target.update_customer(
                p.customer_id, p.payload, idempotency_key=update_key(link, p.payload_hash)
            )
            updated = _replace(
                link,
                payload_hash=p.payload_hash,
                payload=dict(p.payload),
                mapping_fingerprint=self.e.mapping.fingerprint,
                basis_order_id=p.order_id,
                basis_order_activated_at=p.basis_activated_at,
                last_synced_at=now,
                status="active",
            )
            log.info(
                "sync.record.updated",
                account_id=p.account_id,
                customer_id=p.customer_id,
                fields=list(p.changed_fields),
            )
            return self._outcome(p, "updated", customer_id=p.customer_id), updated
        except (RecordError, TransientError) as exc:
            code = getattr(exc, "code", None) or type(exc).__name__
            if code == "customer_missing" and p.action == "update" and p.customer_id:
                # Deleted in Stripe: never re-created on our own (it may have been deliberate);
                # the account is held and the admin chooses --new or --link.
                store.conflicts.open(
                    "customer_deleted_in_billing",
                    billing_account=ba,
                    account_id=p.account_id,
                    customer_id=p.customer_id,
                    details={"order_id": p.order_id, "message": str(exc)},
                )
                self.held[ba].add(p.account_id)
            log.warning("sync.record.failed", account_id=p.account_id, code=code, error=str(exc))
            return self._outcome(p, "failed", error_code=code, message=str(exc)), link

    def _create(
        self, target: BillingTarget, p: PlannedWrite, now: datetime
    ) -> tuple[str, Mapping[str, Any]]:
        """Create the customer, or finish a create a crash interrupted. Returns the id and the
        payload the customer was written with."""
        ba = target.name
        intent = self.intents[ba].get(p.account_id)
        if intent is not None:
            if now - intent.created_at < IDEMPOTENCY_WINDOW and intent.payload is not None:
                # A create was sent and its answer lost: replay it exactly; Stripe answers with
                # the customer it made (or makes it now).
                log.info(
                    "sync.intent.replayed", account_id=p.account_id, key=intent.idempotency_key
                )
                return target.create_customer(
                    intent.payload, idempotency_key=intent.idempotency_key
                ), intent.payload
            # Older than Stripe keeps keys: look the customer up by the metadata every customer
            # carries before making a new one (search lags by about a minute, not by a day).
            found = [c for c in target.find_by_salesforce_account(p.account_id) if not c.deleted]
            if len(found) > 1:
                raise RecordError(
                    f"{len(found)} customers already carry salesforce_account_id={p.account_id}; "
                    "link the right one with `billing-connector xref link`",
                    code="duplicate_customers",
                )
            if found:
                log.info("sync.intent.reconciled", account_id=p.account_id, customer_id=found[0].id)
                target.update_customer(
                    found[0].id,
                    p.payload,
                    idempotency_key=f"{KEY_PREFIX}-{ba}-{p.account_id}-reconcile-{p.payload_hash[:32]}",
                )
                return found[0].id, p.payload
        key = create_key(ba, p.account_id, p.payload_hash)
        self.e.store.intents.record(
            Intent(
                billing_account=ba,
                account_id=p.account_id,
                idempotency_key=key,
                payload_hash=p.payload_hash,
                created_at=now,
                payload=dict(p.payload),
            )
        )
        return target.create_customer(p.payload, idempotency_key=key), p.payload

    def _outcome(
        self,
        p: PlannedWrite,
        kind: str,
        *,
        customer_id: str | None = None,
        error_code: str | None = None,
        message: str | None = None,
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

    # --- write-back --------------------------------------------------------------------------

    def _queue_writeback(self, ba: str, link: Link, row: OrderRow) -> None:
        if ba != self.e.writeback_account or link.status != "active":
            return
        if row.stripe_id_value == link.customer_id:
            if link.writeback_pending:
                self.e.store.links.mark_written_back(ba, [link.account_id])
            return
        decided = link.account_id in self.fresh[ba] or link.account_id in self.overwrite_field[ba]
        if row.stripe_id_value and row.stripe_id_value != link.customer_id and not decided:
            return  # never overwrite a field that names another customer (a conflict is open)
        if link.account_id not in self._pending:
            self._pending.add(link.account_id)
            self.writebacks.append((link.account_id, link.customer_id))

    def flush_writebacks(self, *, final: bool) -> None:
        ba = self.e.writeback_account
        if self.dry_run or ba is None:
            return
        while self.writebacks and (final or len(self.writebacks) >= self.e.writeback_batch):
            batch = self.writebacks[: self.e.writeback_batch]
            self.writebacks = self.writebacks[self.e.writeback_batch :]
            self.e.before_write()
            try:
                results = self.e.source.write_back(batch)
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
            if ok:
                self.e.store.links.mark_written_back(ba, ok)
            failures = [r for r in results if not r.ok]
            outcomes = [
                Outcome(
                    account_id=r.account_id,
                    billing_account=ba,
                    outcome="failed",
                    customer_id=dict(batch).get(r.account_id),
                    error_code=f"writeback_{r.code}",
                    error_message=REDACTOR.scrub(
                        f"writing the customer id to Account.{self._field()} failed: {r.message}"
                    ),
                )
                for r in failures
            ]
            for r in failures:
                log.warning(
                    "writeback.failed", account_id=r.account_id, code=r.code, error=r.message
                )
            if outcomes:
                for _ in outcomes:
                    self.tally.count("failed", ba)
                self.e.store.runs.record_outcomes(self.run_id, outcomes)
            for a, _ in batch:
                self._pending.discard(a)

    def _field(self) -> str:
        legacy = getattr(self.e.source, "legacy_writeback_field", None)
        return str((legacy() if legacy else None) or "(write-back field)")


class _LinkResolver:
    """The `link` transform: a Salesforce account id -> its customer id, cached per page."""

    def __init__(self, store: Store, billing_account: str) -> None:
        self.store = store
        self.ba = billing_account
        self.cache: dict[str, str | None] = {}

    def __call__(self, account_id: str) -> str | None:
        if account_id not in self.cache:
            link = self.store.links.get(self.ba, account_id)
            self.cache[account_id] = link.customer_id if link and link.status == "active" else None
        return self.cache[account_id]


def _replace(link: Link, **changes: Any) -> Link:
    from dataclasses import replace

    return replace(link, **changes)


def _action_of(outcome: Outcome) -> str:
    return {"created": "create", "updated": "update", "adopted": "adopt"}.get(
        outcome.outcome, outcome.outcome
    )


def _flat_keys(payload: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k, v in payload.items():
        if isinstance(v, Mapping):
            out += _flat_keys(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


def _counts(r: RunReport) -> dict[str, int]:
    return {k: v for k, v in r.as_json().items() if isinstance(v, int)}


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if dt else None


def _dry_run_id() -> str:
    import uuid

    return "dry-" + uuid.uuid4().hex[:12]
