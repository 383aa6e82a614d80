"""A tiny billing target held in memory: the port (`BillingTarget`) and nothing else.

For the planner's table tests, which run without servers. It keeps customers in a dict, honours
idempotency keys (same key, same answer) and never imports the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from connector.billing.base import CustomerMissing, RemoteCustomer, TargetRules

MEMORY_RULES = TargetRules(
    system="memory",
    idempotency_window=timedelta(hours=24),
    idempotency_key_max=100,
    tag_field="tags",
    tag_key_max=40,
    tag_value_max=500,
    tag_keys_max=50,
    empty_unsets=True,
    client_chosen_ids=False,
    search=True,
)


class MemoryTarget:
    """One billing account in memory."""

    def __init__(self, name: str = "mem", *, rules: TargetRules = MEMORY_RULES) -> None:
        self._name = name
        self._rules = rules
        self.calls = 0
        self.customers: dict[str, RemoteCustomer] = {}
        self._keys: dict[str, str] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def rules(self) -> TargetRules:
        return self._rules

    def add(self, customer_id: str, *, tags: Mapping[str, str] | None = None, deleted: bool = False) -> None:
        self.customers[customer_id] = RemoteCustomer(
            id=customer_id, payload={}, deleted=deleted, metadata=dict(tags or {})
        )

    def create_customer(self, payload: Mapping[str, Any], *, idempotency_key: str) -> str:
        self.calls += 1
        if idempotency_key in self._keys:
            return self._keys[idempotency_key]
        cid = f"mem_{len(self.customers) + 1:04d}"
        tags = dict(payload.get(self._rules.tag_field) or {})
        self.customers[cid] = RemoteCustomer(id=cid, payload=dict(payload), metadata=tags)
        self._keys[idempotency_key] = cid
        return cid

    def update_customer(
        self, customer_id: str, payload: Mapping[str, Any], *, idempotency_key: str
    ) -> None:
        self.calls += 1
        current = self.customers.get(customer_id)
        if current is None or current.deleted:
            raise CustomerMissing(f"customer {customer_id} does not exist", customer_id=customer_id)
        tags = {**current.metadata, **dict(payload.get(self._rules.tag_field) or {})}
        self.customers[customer_id] = replace(
            current, payload={**current.payload, **payload}, metadata=tags
        )

    def fetch_customers(self, ids: Sequence[str]) -> dict[str, RemoteCustomer | None]:
        self.calls += 1
        return {i: self.customers.get(i) for i in dict.fromkeys(ids)}

    def fetch_customer(self, customer_id: str) -> RemoteCustomer | None:
        return self.fetch_customers([customer_id])[customer_id]

    def find_by_salesforce_account(self, account_id: str) -> list[RemoteCustomer]:
        self.calls += 1
        return [
            c
            for c in self.customers.values()
            if c.metadata.get("salesforce_account_id") == account_id and not c.deleted
        ]
