"""What an admin decides by hand: link an account to an existing customer, resolve a conflict.

Each decision is checked against billing and the store before anything changes, and recorded
as a run of its own, so `status` and the outcome history show who did what and when. Nothing
here ever merges, moves or deletes a billing customer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from connector.billing.base import BillingTarget
from connector.errors import ConfigError
from connector.sfid import ACCOUNT_PREFIX, SalesforceIdError, normalize_sf_id
from connector.state.ports import Store
from connector.state.records import Link, Outcome

log = structlog.get_logger("connector.admin")

CONFLICT_CHOICES: dict[str, tuple[str, ...]] = {
    "merge_loser_linked": (
        "--link <loser's customer>: bill the surviving account on the loser's customer",
        "--new: create a new customer for the surviving account",
        "--ignore: release the surviving account; normal rules apply on the next run",
    ),
    "merge_both_linked": (
        "--ignore: acknowledge; both customers stay, the loser's is never written again",
    ),
    "winner_field_names_other_customer": (
        "--link <customer in the field>: move this account's link to that customer",
        "--ignore: keep the current link (correct the write-back field in Salesforce first, or it is raised again)",
    ),
    "writeback_field_mismatch": (
        "--link <customer in the field>: move this account's link to that customer",
        "--ignore: keep the current link (correct the write-back field in Salesforce first, or it is raised again)",
    ),
    # The name this conflict had before the port was neutral: conflicts stored then still resolve.
    "stripe_id_field_mismatch": (
        "--link <customer in the field>: move this account's link to that customer",
        "--ignore: keep the current link (correct the write-back field in Salesforce first, or it is raised again)",
    ),
    "customer_linked_elsewhere": (
        "--new: create a new customer for this account (its write-back field is overwritten)",
        "--link CUSTOMER: link another existing customer",
        "--ignore: close (correct the write-back field in Salesforce first, or it is raised again)",
    ),
    "customer_belongs_to_other_account": (
        "--new: create a new customer for this account",
        "--link CUSTOMER: link an existing customer anyway",
        "--ignore: close (correct the write-back field first, or it is raised again)",
    ),
    "shared_group_separate_customers": (
        "--link <one of its customers>: every account of the sharing group uses that customer "
        "for this Salesforce account; the other stays in billing, untouched and never written again",
    ),
    "customer_deleted_in_billing": (
        "--new: create a new customer for this account",
        "--link CUSTOMER: link another existing customer",
    ),
}


# Longer than any billing system's ids (Stripe's are about 20 characters, Chargebee's at most
# 50); a value this long is a pasted paragraph, not an id.
MAX_CUSTOMER_ID_LENGTH = 255


def check_customer_id(value: str | None, *, argument: str) -> str:
    """A billing customer id an admin typed, refused before anything is read or written.

    Target-neutral: each billing system has its own id shapes, so this only refuses what no
    system uses: empty (an unset shell variable), whitespace, control characters, or a value
    too long to be an id. The billing account then says whether the customer exists.
    """
    if value is None or value == "":
        raise ConfigError(
            "needs a customer id, and the value is empty (an unset shell variable?); nothing was changed",
            key=argument,
        )
    shown = value if len(value) <= 40 else value[:40] + "..."
    if len(value) > MAX_CUSTOMER_ID_LENGTH:
        raise ConfigError(
            f"{shown!r} is not a customer id: longer than {MAX_CUSTOMER_ID_LENGTH} characters; "
            "nothing was changed",
            key=argument,
        )
    if any(c.isspace() for c in value) or not value.isprintable():
        raise ConfigError(
            f"{shown!r} is not a customer id: it contains spaces or control characters; "
            "nothing was changed",
            key=argument,
        )
    return value


# Conflict numbers are the store's 64-bit keys; a larger number cannot name one, and passing it
# on would make the database driver fail instead of telling the admin.
MAX_CONFLICT_ID = 2**63 - 1


def check_conflict_id(value: int, *, argument: str = "CONFLICT_ID") -> int:
    if not 1 <= value <= MAX_CONFLICT_ID:
        raise ConfigError(
            f"{value} is not a conflict number (see `billing-connector conflicts list`); "
            "nothing was changed",
            key=argument,
        )
    return value


def check_account_id(value: str | None, *, argument: str) -> str:
    """An Account id an admin typed, in the 18-character form the store and Salesforce use.

    The 15-character form from a Salesforce URL is the same account: without this, a link
    keyed by it would slip past the "already linked" guard and the next sync would write the
    other customer's id into the Account.
    """
    try:
        return normalize_sf_id(value or "", prefix=ACCOUNT_PREFIX, what="account id")
    except SalesforceIdError as exc:
        raise ConfigError(f"{exc}; nothing was changed", key=argument) from None


def link_account(
    store: Store,
    target: BillingTarget,
    account_id: str,
    customer_id: str,
    *,
    by: str,
    force: bool = False,
    note: str = "xref link",
) -> Link:
    """Link an account to an existing customer by an admin's decision; recorded as a run."""
    account_id = check_account_id(account_id, argument="ACCOUNT")
    customer_id = check_customer_id(customer_id, argument="CUSTOMER")
    remote = target.fetch_customer(customer_id)
    if remote is None or remote.deleted:
        raise ConfigError(
            f"customer {customer_id} {'was deleted' if remote else 'does not exist'} in billing account "
            f"'{target.name}'; nothing was changed"
        )
    owner = store.links.by_customer(target.name, customer_id)
    if owner is not None and owner.account_id != account_id and owner.status != "merged":
        raise ConfigError(
            f"customer {customer_id} is linked to account {owner.account_id}; nothing was changed"
        )
    current = store.links.get(target.name, account_id)
    if (
        current is not None
        and current.customer_id != customer_id
        and current.status == "active"
        and not force
    ):
        raise ConfigError(
            f"account {account_id} is linked to {current.customer_id}; add --force to move the link"
        )
    now = datetime.now(UTC)
    link = Link(
        billing_account=target.name,
        account_id=account_id,
        customer_id=customer_id,
        status="active",
        payload_hash=None,
        payload=None,
        mapping_fingerprint=None,
        writeback_pending=True,
        first_synced_at=current.first_synced_at if current else now,
        last_synced_at=now,
    )
    intent = store.intents.get(target.name, account_id)
    run_id = store.runs.start("admin", dry_run=False)
    with store.transaction():
        store.links.save([link])
        # A create interrupted before its link was saved leaves an intent; the admin's link
        # settles it, so it must not stay open (nor be replayed over the admin's choice).
        store.intents.drop(target.name, account_id)
        store.runs.record_outcomes(
            run_id,
            [
                Outcome(
                    account_id=account_id,
                    billing_account=target.name,
                    outcome="adopted",
                    customer_id=customer_id,
                    error_code="admin_link",
                    error_message=f"{note} by {by}"
                    + (f" (was {current.customer_id})" if current else ""),
                )
            ],
        )
    store.runs.finish(run_id, status="succeeded", counts={"updated": 1})
    log.info(
        "admin.linked",
        account_id=account_id,
        customer_id=customer_id,
        by=by,
        previous=current.customer_id if current else None,
        closed_intent=intent.idempotency_key if intent else None,
    )
    return link


def resolve_conflict(
    store: Store,
    targets: Sequence[BillingTarget],
    conflict_id: int,
    *,
    choice: str,
    customer_id: str | None,
    by: str,
) -> Any:
    """Apply and record an admin's decision on a conflict: link, new or ignore."""
    conflict = store.conflicts.get(check_conflict_id(conflict_id))
    if conflict is None:
        raise ConfigError(
            f"there is no conflict {conflict_id}; see `billing-connector conflicts list`"
        )
    if conflict.status != "open":
        raise ConfigError(
            f"conflict {conflict_id} was already resolved ({conflict.resolution}) by "
            f"{conflict.resolved_by} at {conflict.resolved_at}"
        )
    allowed = {
        c.split(":")[0].split()[0]
        for c in CONFLICT_CHOICES.get(conflict.kind, ("--link", "--new", "--ignore"))
    }
    if f"--{choice}" not in allowed:
        raise ConfigError(
            f"conflict {conflict_id} ({conflict.kind}) cannot be resolved with --{choice}; "
            f"choose one of {', '.join(sorted(allowed))}"
        )
    # Checked before anything is read or written; "" for the choices that take no id.
    chosen = check_customer_id(customer_id, argument="--link") if choice == "link" else ""
    if choice == "link" and conflict.kind == "shared_group_separate_customers":
        customers = dict(conflict.details.get("customers") or {})
        if chosen not in customers.values():
            raise ConfigError(
                f"conflict {conflict_id}: choose one of the account's customers "
                f"({', '.join(f'{m}: {c}' for m, c in sorted(customers.items()))}); nothing was "
                "changed"
            )
        by_name = {t.name: t for t in targets}
        missing = sorted(m for m in customers if m not in by_name)
        if missing:
            raise ConfigError(
                f"billing account(s) {', '.join(missing)} of conflict {conflict_id} are not in "
                "the configuration; nothing was changed"
            )
        # Every member of the group that holds another customer now uses the chosen one; the
        # other customer stays in billing, untouched (never merged, moved or deleted).
        for member, current in sorted(customers.items()):
            if current != chosen:
                link_account(
                    store,
                    by_name[member],
                    conflict.account_id,
                    chosen,
                    by=by,
                    force=True,
                    note=f"conflict {conflict_id} resolved (sharing group)",
                )
        resolution = f"link:{chosen}"
    elif choice == "link":
        target = next((t for t in targets if t.name == conflict.billing_account), None)
        if target is None:
            raise ConfigError(
                f"billing account '{conflict.billing_account}' is not in the configuration"
            )
        link_account(
            store,
            target,
            conflict.account_id,
            chosen,
            by=by,
            force=True,
            note=f"conflict {conflict_id} resolved",
        )
        resolution = f"link:{chosen}"
    else:
        resolution = choice
    resolved = store.conflicts.resolve(conflict_id, resolution=resolution, by=by)
    log.info(
        "admin.conflict_resolved",
        conflict_id=conflict_id,
        kind=conflict.kind,
        resolution=resolution,
        by=by,
    )
    return resolved
