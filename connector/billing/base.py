"""The billing-target port: what the engine may ask of any billing system.

Adapters (stripe.py, later chargebee.py) implement `BillingTarget` and never import the engine.
Payloads are plain nested mappings in the target's own parameter names (Stripe's dotted paths
`address.line1` become {"address": {"line1": ...}}); an empty string means "unset this field",
as Stripe's API defines it. A target never deletes, merges or moves a customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# A customer payload: nested mapping of the target's parameter names to values.
CustomerPayload = Mapping[str, Any]

# Metadata keys the connector owns on every customer; mappings cannot set them.
RESERVED_METADATA_KEYS = frozenset({"salesforce_account_id", "salesforce_org_id"})


@dataclass(frozen=True, slots=True)
class RemoteCustomer:
    """A customer as the billing system holds it now."""

    id: str
    payload: CustomerPayload
    deleted: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)


class BillingTarget(Protocol):
    """One billing account of one billing system."""

    @property
    def name(self) -> str:
        """The billing account id from config (links are keyed by it)."""
        ...

    calls: int  # requests sent so far, for the run report

    def create_customer(self, payload: CustomerPayload, *, idempotency_key: str) -> str:
        """Create a customer and return its id. The same key and payload return the same id."""
        ...

    def update_customer(
        self, customer_id: str, payload: CustomerPayload, *, idempotency_key: str
    ) -> None:
        """Set exactly the fields in `payload`; fields it does not name are left alone."""
        ...

    def fetch_customer(self, customer_id: str) -> RemoteCustomer | None:
        """The customer, or None when it does not exist (deleted customers count as existing)."""
        ...

    def find_by_salesforce_account(self, account_id: str) -> list[RemoteCustomer]:
        """Customers whose metadata names this Salesforce account (for crash reconciliation)."""
        ...
