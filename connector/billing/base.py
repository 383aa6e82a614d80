"""The billing-target port: what the engine may ask of any billing system, and nothing more.

Adapters (stripe.py, later chargebee.py) implement `BillingTarget`, describe themselves with
`TargetRules` and raise the typed errors below; they never import the engine. Payloads are plain
nested mappings in the target's own parameter names (`address.line1` becomes
{"address": {"line1": ...}}). Whether an empty value unsets a field, where the connector's tags
live and how long an idempotency key may be are the target's rules, never the engine's
assumptions. A target never deletes, merges or moves a customer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from connector.errors import ConnectorError, RecordError, TransientError, UnavailableError

# A customer payload: nested mapping of the target's parameter names to values.
CustomerPayload = Mapping[str, Any]

# Tag keys the connector owns on every customer (in the target's `tag_field`); mappings cannot
# set them. Neutral: every target carries them under the same names.
RESERVED_TAG_KEYS = frozenset({"salesforce_account_id", "salesforce_org_id"})
# The name the engine and the mapping compiler used before the port was neutral.
RESERVED_METADATA_KEYS = RESERVED_TAG_KEYS


@dataclass(frozen=True, slots=True)
class TargetRules:
    """What the engine and the mapping compiler must respect for one billing system."""

    system: str  # "stripe", later "chargebee": the key of the mapping schema too
    idempotency_window: timedelta  # how long the system keeps a key (Stripe: 24 h)
    idempotency_key_max: int  # Stripe 255, Chargebee 100
    tag_field: str  # where the connector tags what it wrote: "metadata" / "meta_data"
    tag_key_max: int
    tag_value_max: int
    tag_keys_max: int
    empty_unsets: bool  # an empty string unsets a field (Stripe)
    client_chosen_ids: bool  # the connector may choose the customer id (Chargebee)
    search: bool  # customers can be found by tag (Stripe Search)
    separate_calls: frozenset[str] = frozenset()  # payload keys that need a call of their own


# --- typed errors every adapter raises ------------------------------------------------------
# Each keeps a `code` so outcomes stay readable in the store and `status` (and so callers that
# compared codes before the types existed keep working).


class CustomerMissing(RecordError):
    """The customer does not exist in the billing account (never created, or deleted)."""

    def __init__(
        self,
        message: str,
        *,
        customer_id: str | None = None,
        billing_account: str | None = None,
        code: str = "customer_missing",
        account_id: str | None = None,
    ) -> None:
        self.customer_id = customer_id
        self.billing_account = billing_account
        super().__init__(message, code=code, account_id=account_id)


class InvalidRequest(RecordError):
    """The billing system refused what this record's data asked for (a 4xx); other records
    can go on."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "invalid_request",
        param: str | None = None,
        account_id: str | None = None,
    ) -> None:
        self.param = param
        super().__init__(message, code=code, account_id=account_id)


# --- errors of an update a target makes in several calls ------------------------------------
# A target whose `separate_calls` split one update into calls of their own (Chargebee: the
# billing address) raises these when a later call fails after an earlier one was applied.
# `applied` is the part of the payload the billing system now holds, `pending` the top-level keys
# still to send (in the form they were sent), `customer_id` the customer they concern: a create
# that adopted an existing customer raises them too, and the engine links that id. The engine
# records `applied` as what was written, so the next run sends `pending` again and nothing claims
# a state the billing system does not have.


class PartialUpdate(ConnectorError):
    """An update made in several calls stopped after an earlier call was applied. What both
    outcomes carry lives here; each subclass says which error it is to its callers (retry
    later, or skip the record) and which of `cause`'s fields it takes on."""

    def __init__(
        self,
        message: str,
        *,
        customer_id: str,
        applied: CustomerPayload,
        pending: CustomerPayload,
        cause: ConnectorError,
    ) -> None:
        self.customer_id = customer_id
        self.applied = applied
        self.pending = pending
        self.cause = cause
        # Cooperative: the next class in the MRO is TransientError or InvalidRequest.
        super().__init__(message, **self._fields_of(cause))

    @staticmethod
    def _fields_of(cause: ConnectorError) -> dict[str, Any]:
        raise NotImplementedError


class PartiallyApplied(PartialUpdate, TransientError):
    """An earlier call of a split update was applied; a later one failed for a passing reason
    (429, 5xx, a dropped connection). Record `applied`; send `pending` again later."""

    @staticmethod
    def _fields_of(cause: ConnectorError) -> dict[str, Any]:
        return {"code": getattr(cause, "code", None) or "partially_applied"}


class PartiallyRefused(PartialUpdate, InvalidRequest):
    """An earlier call of a split update was applied; the billing system refused a later one
    for this record's data. Record `applied`; the admin fixes what `cause` names."""

    cause: RecordError

    @staticmethod
    def _fields_of(cause: ConnectorError) -> dict[str, Any]:
        return {
            "code": getattr(cause, "code", None) or "invalid_request",
            "param": getattr(cause, "param", None),
        }


class RateLimited(TransientError):
    """The billing system kept answering 429 after the adapter's own retries; try later."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "rate_limit",
        retry_after: float | None = None,
        billing_account: str | None = None,
    ) -> None:
        self.billing_account = billing_account
        super().__init__(message, code=code, retry_after=retry_after)


class BillingUnreachable(UnavailableError):
    """No connection could be made to the billing account (refused, DNS, TLS): the account is
    down or misconfigured, not this record. Carries what an admin checks: the account and URL."""

    code = "billing_unreachable"

    def __init__(self, message: str, *, billing_account: str, url: str) -> None:
        self.billing_account = billing_account
        self.url = url
        self.message = message
        super().__init__(message)


def idempotency_key(*parts: str) -> str:
    """A key of fixed length (64 characters) naming one write: "bc1-" + 60 hex of SHA-256 over
    the parts joined by NUL. It fits every target's limit, so no target ever truncates one (a cut
    key could replay an old write and silently drop a new one)."""
    if not parts:
        raise ValueError("idempotency_key needs at least one part")
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()
    return f"bc1-{digest[:60]}"


@dataclass(frozen=True, slots=True)
class RemoteCustomer:
    """A customer as the billing system holds it now."""

    id: str
    payload: CustomerPayload
    deleted: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)  # the target's tag field

    @property
    def tags(self) -> Mapping[str, str]:
        """The connector's tags on this customer, whatever the target calls the field."""
        return self.metadata


class BillingTarget(Protocol):
    """One billing account of one billing system."""

    @property
    def name(self) -> str:
        """The billing account name from config (links are keyed by it)."""
        ...

    @property
    def rules(self) -> TargetRules:
        """The billing system's rules (limits, empty values, tags, keys, capabilities)."""
        ...

    calls: int  # requests sent so far, for the run report

    def create_customer(self, payload: CustomerPayload, *, idempotency_key: str) -> str:
        """Create a customer and return its id. The same key and payload return the same id."""
        ...

    def update_customer(
        self, customer_id: str, payload: CustomerPayload, *, idempotency_key: str
    ) -> None:
        """Set exactly the fields in `payload`; fields it does not name are left alone.
        Raises CustomerMissing when the customer does not exist."""
        ...

    def fetch_customers(self, ids: Sequence[str]) -> dict[str, RemoteCustomer | None]:
        """Each id -> the customer, or None when it does not exist. Batched context for the
        planner; ids repeated in `ids` are fetched once."""
        ...

    def fetch_customer(self, customer_id: str) -> RemoteCustomer | None:
        """The customer, or None when it does not exist (deleted customers count as existing)."""
        ...

    def find_by_salesforce_account(self, account_id: str) -> list[RemoteCustomer]:
        """Customers whose tags name this Salesforce account (for crash reconciliation)."""
        ...
