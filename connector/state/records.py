"""Typed, frozen rows passed between the store and the engine.

The store returns and accepts these; it never hands out ORM objects or sessions. Times are
timezone-aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

LinkStatus = Literal["active", "deleted", "held", "merged"]
OutcomeKind = Literal["created", "updated", "unchanged", "adopted", "refused", "failed", "skipped"]
ConflictStatus = Literal["open", "resolved"]


@dataclass(frozen=True, slots=True)
class Link:
    """Salesforce account <-> billing customer, for one billing account."""

    billing_account: str
    account_id: str  # 18-character Salesforce Account Id
    customer_id: str
    status: LinkStatus = "active"
    payload_hash: str | None = None  # hash of the last payload written (or adopted)
    payload: dict[str, Any] | None = None  # the last payload written, for diffs and dry runs
    mapping_fingerprint: str | None = None
    basis_order_id: str | None = None  # the order the payload was evaluated from
    basis_order_activated_at: str | None = None
    writeback_pending: bool = True  # customer id not yet confirmed on the Account
    first_synced_at: datetime | None = None
    last_synced_at: datetime | None = None
    # The sharing-group member whose customer this link uses (it created it and writes it);
    # None: this billing account's own customer.
    shared_from: str | None = None


@dataclass(frozen=True, slots=True)
class OrderLink:
    billing_account: str
    order_id: str
    account_id: str
    customer_id: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one account in one run; what `history` and `status` show an admin."""

    account_id: str
    billing_account: str
    outcome: OutcomeKind
    customer_id: str | None = None
    order_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    changed_fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    mode: str  # sync | backfill | recheck | retry
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None
    status: str  # running | succeeded | partial | failed | interrupted
    counts: dict[str, int]
    error: str | None = None
    partition: str | None = None  # billing accounts the run covered, comma-separated


@dataclass(frozen=True, slots=True)
class Intent:
    """A create about to be sent: recorded first so a crash cannot cause a second customer."""

    billing_account: str
    account_id: str
    idempotency_key: str
    payload_hash: str
    created_at: datetime
    # The exact parameters sent with the key: a retry must send the same ones, or the billing system
    # answers idempotency_error instead of replaying the first answer.
    payload: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RetryItem:
    billing_account: str
    account_id: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Conflict:
    id: int
    kind: str  # merge_loser_linked | merge_both_linked | winner_field_names_other_customer | ...
    billing_account: str
    account_id: str  # the account the connector holds back
    other_account_id: str | None
    customer_id: str | None
    details: dict[str, Any]
    status: ConflictStatus
    created_at: datetime
    resolution: str | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
