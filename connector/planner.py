"""The planner: what one Salesforce account will do to one billing account, decided before any call.

Pure. `plan_record` is a function of the order row, the account's link, the compiled mapping, the
target's rules and a `PlanContext` the engine fetched in batches beforehand (held accounts,
admins' `--new` choices, the customers that write-back fields name and who owns them, open
create intents and what the tag lookup found for the stale ones, the links the `link` transform
reads). It never talks to Salesforce, billing or the store, and the engine applies exactly what
it returns: a dry run is this plan printed, and the run that follows does it record by record.
Nothing here knows a billing system by name; its rules come in as `TargetRules`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from connector.billing.base import (
    RESERVED_TAG_KEYS,
    RemoteCustomer,
    TargetRules,
    idempotency_key,
)
from connector.errors import ConnectorError
from connector.mapping import CustomerMapping, payload_hash
from connector.mapping.updates import changed_paths, diff_for_update
from connector.salesforce import OrderRow
from connector.state.records import Intent, Link

Action = Literal[
    "create", "replay", "reconcile", "adopt", "update", "unchanged", "refused", "failed"
]
# Actions that send a billing write when applied.
WRITES: frozenset[str] = frozenset({"create", "replay", "reconcile", "adopt", "update"})
# Actions after which the account is linked to a customer it was not linked to before.
LINKS: frozenset[str] = frozenset({"create", "replay", "reconcile", "adopt"})


@dataclass(frozen=True, slots=True)
class ConflictToOpen:
    """A conflict the apply step opens (and so holds the account) when it records a refusal."""

    kind: str
    other_account_id: str | None = None


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
    # The key the write carries; for a replay, the key the interrupted create was sent with.
    idempotency_key: str | None = None
    # A replay sends the interrupted create's exact parameters (a changed body under the same
    # key is refused); when the account changed since, `payload` follows as an update.
    create_payload: Mapping[str, Any] | None = None
    followup_key: str | None = None
    # What an update (or a replay's follow-up) sends: only what changed, and tag keys the
    # mapping dropped sent empty, once. `payload` stays the whole payload, stored as written.
    send: Mapping[str, Any] | None = None
    conflict: ConflictToOpen | None = None
    # An admin's explicit link wins over the Account's write-back field: overwrite it.
    overwrite_field: bool = False

    @property
    def writes(self) -> bool:
        return self.action in WRITES

    def detail(self) -> str:
        """What this write changes (or why it is refused), short enough for one line."""
        if self.action in ("refused", "failed"):
            return str(self.reason or self.error_code or "")
        if self.action == "create":
            return f"new customer ({len(self.changed_fields)} fields)"
        if self.action == "replay":
            return "finish an interrupted create with its own key"
        if self.action == "reconcile":
            return f"link {self.customer_id}, found by tag after an interrupted create"
        return ", ".join(self.changed_fields)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the tag lookup found for a create interrupted longer ago than the target keeps keys."""

    customer_ids: tuple[str, ...] = ()
    error: str | None = None  # the lookup could not run: no search, or search failing


@dataclass(frozen=True, slots=True)
class PlanContext:
    """Everything besides the row and its link that a decision may depend on, for one page and
    one billing account. Fetched in batches before planning; never changed by planning."""

    billing_account: str
    org_id: str
    fingerprint: str  # the mapping's: links written under another one are rewritten
    now: datetime
    # The Account field that receives this billing account's customer id (None: no field).
    writeback_field: str | None
    held: frozenset[str] = frozenset()  # accounts an open conflict holds
    fresh: Mapping[str, datetime] = field(default_factory=dict)  # admin chose --new, and when
    customers: Mapping[str, RemoteCustomer | None] = field(default_factory=dict)  # named by fields
    customer_errors: Mapping[str, str] = field(default_factory=dict)  # fetch failed (transient)
    owners: Mapping[str, str] = field(default_factory=dict)  # customer id -> linked account id
    intents: Mapping[str, Intent] = field(default_factory=dict)  # open create intents
    lookups: Mapping[str, Lookup] = field(default_factory=dict)  # for intents past the window
    links: Mapping[str, str] = field(default_factory=dict)  # account -> customer, for `link`


def create_key(billing_account: str, account_id: str, digest: str) -> str:
    return idempotency_key("create", billing_account, account_id, digest)


def update_key(link: Link, digest: str) -> str:
    # The previous hash and the time of the last write make the key unique per transition, so
    # a payload that goes A -> B -> A is written again instead of replayed from a day ago,
    # while a retry of the same transition (after a crash) replays.
    stamp = str(int(link.last_synced_at.timestamp())) if link.last_synced_at else "0"
    return idempotency_key(
        "update", link.billing_account, link.account_id, link.payload_hash or "none", digest, stamp
    )


def reconcile_key(billing_account: str, account_id: str, digest: str) -> str:
    return idempotency_key("reconcile", billing_account, account_id, digest)


def wants_new_customer(resolved_at: datetime | None, link: Link | None) -> bool:
    """True until the new customer an admin asked for (`--new`) has been created."""
    if resolved_at is None:
        return False
    return link is None or link.last_synced_at is None or link.last_synced_at < resolved_at


def tagged_payload(
    mapped: Mapping[str, Any], account_id: str, org_id: str, rules: TargetRules
) -> dict[str, Any]:
    """The mapped payload with the connector's own tags, which mappings cannot set."""
    payload = dict(mapped)
    tags = {
        k: v
        for k, v in dict(payload.get(rules.tag_field) or {}).items()
        if k not in RESERVED_TAG_KEYS
    }
    tags.update(salesforce_account_id=account_id, salesforce_org_id=org_id)
    payload[rules.tag_field] = tags
    return payload


def flat_keys(payload: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k, v in payload.items():
        if isinstance(v, Mapping):
            out += flat_keys(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


def plan_record(
    row: OrderRow,
    link: Link | None,
    ctx: PlanContext,
    mapping: CustomerMapping,
    rules: TargetRules,
) -> PlannedWrite:
    """Decide what the account of `row` does to the billing account of `ctx`."""
    acc, ba = row.account_id, ctx.billing_account
    base = _Base(row, ba)
    # A write-back field speaks for its own billing account only: the others neither adopt
    # from it nor compare their links with it.
    field_value = row.writeback_value(ctx.writeback_field) if ctx.writeback_field else None
    fresh = wants_new_customer(ctx.fresh.get(acc), link)
    if acc in ctx.held or (link is not None and link.status in ("held", "merged") and not fresh):
        return base.make(
            "refused",
            customer_id=link.customer_id if link else None,
            reason="an open conflict holds this account; see `billing-connector conflicts list`",
            error_code="conflict_open",
        )
    if (
        link is not None
        and link.basis_order_id
        and link.basis_order_id != row.order_id
        and row.basis_key < (link.basis_order_activated_at or "", link.basis_order_id)
        and link.mapping_fingerprint == ctx.fingerprint
    ):
        # Only the account's latest activated order decides its customer; an older order that
        # changed (or whose contact changed) does not.
        return base.make("unchanged", customer_id=link.customer_id, reason="older order")
    try:
        mapped = mapping.evaluate(row.record, link=ctx.links.get)
    except ConnectorError as exc:
        return base.make("failed", reason=str(exc), error_code="mapping_error")
    payload = tagged_payload(mapped, acc, ctx.org_id, rules)
    digest = payload_hash(payload)
    if fresh:
        return _create(base, ctx, rules, payload, digest, reason="new customer chosen by an admin")
    if link is None:
        if field_value:
            return _adopt(base, ctx, payload, digest, field_value)
        return _create(base, ctx, rules, payload, digest)
    overwrite = False
    if field_value and field_value != link.customer_id:
        if link.payload_hash is None and link.mapping_fingerprint is None:
            # An admin linked this account by hand (`xref link`, `conflicts resolve --link`):
            # that decision wins over the field, which is overwritten with the linked id.
            overwrite = True
        else:
            owner = ctx.owners.get(field_value)
            kind = (
                "winner_field_names_other_customer"
                if owner is not None and owner != acc
                else "writeback_field_mismatch"
            )
            return base.make(
                "refused",
                payload=payload,
                payload_hash=digest,
                customer_id=link.customer_id,
                error_code=kind,
                conflict=ConflictToOpen(kind),
                reason=f"the Account's write-back field names {field_value} but the account "
                f"is linked to {link.customer_id}",
            )
    send = None if digest == link.payload_hash else diff_for_update(link.payload, payload, rules)
    if send is None:
        # Nothing to send (a removed field the update would leave alone counts as nothing):
        # the link takes the new hash, the customer is not written.
        return base.make(
            "unchanged",
            payload=payload,
            payload_hash=digest,
            customer_id=link.customer_id,
            overwrite_field=overwrite,
        )
    return base.make(
        "update",
        payload=payload,
        payload_hash=digest,
        customer_id=link.customer_id,
        changed_fields=tuple(changed_paths(link.payload, send)),
        idempotency_key=update_key(link, digest),
        overwrite_field=overwrite,
        send=send,
    )


@dataclass(frozen=True, slots=True)
class _Base:
    row: OrderRow
    billing_account: str

    def make(self, action: Action, **kw: Any) -> PlannedWrite:
        return PlannedWrite(
            account_id=self.row.account_id,
            billing_account=self.billing_account,
            action=action,
            order_id=self.row.order_id,
            basis_activated_at=self.row.activated_at,
            **kw,
        )


def _create(
    base: _Base,
    ctx: PlanContext,
    rules: TargetRules,
    payload: dict[str, Any],
    digest: str,
    *,
    reason: str | None = None,
) -> PlannedWrite:
    acc, ba = base.row.account_id, base.billing_account
    every = tuple(flat_keys(payload))
    intent = ctx.intents.get(acc)
    if intent is not None:
        age = ctx.now - intent.created_at
        if age < rules.idempotency_window and intent.payload is not None:
            # A create was sent and its answer lost: replay it exactly; the billing system
            # answers with the customer it made (or makes it now).
            send = diff_for_update(intent.payload, payload, rules)
            return base.make(
                "replay",
                payload=payload,
                payload_hash=digest,
                changed_fields=every,
                idempotency_key=intent.idempotency_key,
                create_payload=intent.payload,
                followup_key=None
                if send is None or intent.payload_hash == digest
                else idempotency_key("update", ba, acc, intent.payload_hash, digest, "replay"),
                send=send,
                reason="finish a create a crash interrupted, with its own key",
            )
        # Older than the target keeps keys: find the customer by the tags every customer
        # carries before making a new one (search lags by about a minute, not by a day).
        # A target whose ids the connector chooses needs no search: a create under a new key
        # asks for the same id, and the target adopts the customer the lost create made.
        lookup = ctx.lookups.get(acc) or Lookup(error="no lookup was made")
        if rules.client_chosen_ids:
            lookup = Lookup()
        if lookup.error is not None:
            return base.make(
                "failed",
                payload=payload,
                payload_hash=digest,
                error_code="reconcile_lookup_unavailable",
                reason=f"a create for this account was interrupted {_age(age)} ago, longer than "
                f"billing account '{ba}' keeps idempotency keys; the lookup by tag that would "
                f"find the customer it may have made could not run ({lookup.error}). Nothing "
                "was created; the record is retried, or link the customer with "
                "`billing-connector xref link`",
            )
        if len(lookup.customer_ids) > 1:
            return base.make(
                "failed",
                payload=payload,
                payload_hash=digest,
                error_code="duplicate_customers",
                reason=f"{len(lookup.customer_ids)} customers already carry "
                f"salesforce_account_id={acc} ({', '.join(lookup.customer_ids)}); link the "
                "right one with `billing-connector xref link`",
            )
        if lookup.customer_ids:
            return base.make(
                "reconcile",
                payload=payload,
                payload_hash=digest,
                customer_id=lookup.customer_ids[0],
                changed_fields=every,
                idempotency_key=reconcile_key(ba, acc, digest),
                reason="an interrupted create had made this customer",
            )
    return base.make(
        "create",
        payload=payload,
        payload_hash=digest,
        changed_fields=every,
        idempotency_key=create_key(ba, acc, digest),
        reason=reason,
    )


def _adopt(
    base: _Base, ctx: PlanContext, payload: dict[str, Any], digest: str, customer_id: str
) -> PlannedWrite:
    acc, ba = base.row.account_id, base.billing_account
    owner = ctx.owners.get(customer_id)
    if owner is not None and owner != acc:
        return base.make(
            "refused",
            payload=payload,
            payload_hash=digest,
            customer_id=customer_id,
            error_code="customer_linked_elsewhere",
            conflict=ConflictToOpen("customer_linked_elsewhere", other_account_id=owner),
            reason=f"the Account's write-back field names {customer_id}, "
            f"which is linked to account {owner}",
        )
    if customer_id in ctx.customer_errors:
        return base.make(
            "failed",
            payload=payload,
            payload_hash=digest,
            customer_id=customer_id,
            error_code="adopt_lookup_failed",
            reason=f"could not read customer {customer_id} named by the Account's write-back "
            f"field: {ctx.customer_errors[customer_id]} (retried next run)",
        )
    remote = ctx.customers.get(customer_id)
    if remote is None or remote.deleted:
        return base.make(
            "failed",
            payload=payload,
            payload_hash=digest,
            customer_id=customer_id,
            error_code="adopt_customer_missing",
            reason=f"the Account's write-back field names {customer_id}, which "
            f"{'was deleted' if remote else 'does not exist'} in billing account '{ba}'; "
            "correct or clear the field (a cleared field makes the connector create a new "
            "customer)",
        )
    tag_owner = remote.tags.get("salesforce_account_id")
    if tag_owner and tag_owner != acc:
        return base.make(
            "refused",
            payload=payload,
            payload_hash=digest,
            customer_id=customer_id,
            error_code="customer_belongs_to_other_account",
            conflict=ConflictToOpen(
                "customer_belongs_to_other_account", other_account_id=tag_owner
            ),
            reason=f"{customer_id} is marked as the customer of account {tag_owner}",
        )
    return base.make(
        "adopt",
        payload=payload,
        payload_hash=digest,
        customer_id=customer_id,
        changed_fields=tuple(flat_keys(payload)),
        idempotency_key=idempotency_key("update", ba, acc, "none", digest, "0"),
        reason="write-back field already set: adopt that customer",
    )


def _age(delta: Any) -> str:
    hours = int(delta.total_seconds() // 3600)
    return f"{hours // 24} d {hours % 24} h" if hours >= 24 else f"{hours} h"
