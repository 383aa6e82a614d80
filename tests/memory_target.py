"""A tiny billing target in memory that implements the port (`connector.billing.base`).

For the planner's table tests: no server, no SDK, milliseconds. It behaves as the port promises
(idempotent creates, updates that touch only the named fields, an empty value unsets when the
rules say so, the typed errors) and records every call so a test can assert what was sent.
Faults are injected per method: `fail_next("update_customer", RateLimited("..."))`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from connector.billing.base import (
    CustomerMissing,
    CustomerPayload,
    InvalidRequest,
    RemoteCustomer,
    TargetRules,
)

MEMORY_RULES = TargetRules(
    system="memory",
    idempotency_window=timedelta(hours=24),
    idempotency_key_max=100,  # the tightest limit among real targets (Chargebee)
    tag_field="metadata",
    tag_key_max=40,
    tag_value_max=500,
    tag_keys_max=50,
    empty_unsets=True,
    client_chosen_ids=False,
    search=True,
)


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    args: tuple[Any, ...]
    idempotency_key: str | None = None


@dataclass
class MemoryTarget:
    """One billing account held in a dict. `customers` maps id -> stored payload."""

    name: str = "main"
    rules: TargetRules = MEMORY_RULES
    calls: int = 0
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    log: list[Call] = field(default_factory=list)
    _keys: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    _faults: dict[str, list[Exception]] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    # --- test controls -------------------------------------------------------------------

    def fail_next(self, method: str, error: Exception, times: int = 1) -> None:
        self._faults.setdefault(method, []).extend([error] * times)

    def add_customer(self, payload: Mapping[str, Any], *, customer_id: str | None = None) -> str:
        cid = customer_id or self._new_id()
        self.customers[cid] = copy.deepcopy(dict(payload))
        return cid

    def with_rules(self, **changes: Any) -> MemoryTarget:
        self.rules = replace(self.rules, **changes)
        return self

    def writes(self) -> list[Call]:
        return [c for c in self.log if c.method in ("create_customer", "update_customer")]

    # --- the port ------------------------------------------------------------------------

    def create_customer(self, payload: CustomerPayload, *, idempotency_key: str) -> str:
        self._enter("create_customer", (dict(payload),), idempotency_key)
        seen = self._keys.get(idempotency_key)
        if seen is not None:
            if seen[0] != ("create", _plain(payload)):
                raise InvalidRequest(
                    "idempotency key reused with other parameters", code="idempotency_error"
                )
            return str(seen[1])
        cid = self._new_id()
        self.customers[cid] = self._apply({}, payload)
        self._keys[idempotency_key] = (("create", _plain(payload)), cid)
        return cid

    def update_customer(
        self, customer_id: str, payload: CustomerPayload, *, idempotency_key: str
    ) -> None:
        self._enter("update_customer", (customer_id, dict(payload)), idempotency_key)
        if customer_id not in self.customers or customer_id in self.deleted:
            raise CustomerMissing(
                f"customer {customer_id} does not exist in billing account '{self.name}'",
                customer_id=customer_id,
                billing_account=self.name,
            )
        seen = self._keys.get(idempotency_key)
        if seen is not None:
            return
        self.customers[customer_id] = self._apply(self.customers[customer_id], payload)
        self._keys[idempotency_key] = (("update", customer_id, _plain(payload)), customer_id)

    def fetch_customers(self, ids: Sequence[str]) -> dict[str, RemoteCustomer | None]:
        self._enter("fetch_customers", (tuple(ids),), None)
        return {i: self._remote(i) for i in dict.fromkeys(ids)}

    def fetch_customer(self, customer_id: str) -> RemoteCustomer | None:
        self._enter("fetch_customer", (customer_id,), None)
        return self._remote(customer_id)

    def find_by_salesforce_account(self, account_id: str) -> list[RemoteCustomer]:
        self._enter("find_by_salesforce_account", (account_id,), None)
        out = []
        for cid, data in self.customers.items():
            tags = data.get(self.rules.tag_field) or {}
            if tags.get("salesforce_account_id") == account_id and cid not in self.deleted:
                remote = self._remote(cid)
                if remote is not None:
                    out.append(remote)
        return out

    # --- mechanics -----------------------------------------------------------------------

    def _enter(self, method: str, args: tuple[Any, ...], key: str | None) -> None:
        self.calls += 1
        self.log.append(Call(method, args, key))
        if key is not None and len(key) > self.rules.idempotency_key_max:
            raise ValueError(f"idempotency key longer than {self.rules.idempotency_key_max}")
        faults = self._faults.get(method)
        if faults:
            raise faults.pop(0)

    def _new_id(self) -> str:
        return f"mem_{next(self._ids):06d}"

    def _apply(self, current: Mapping[str, Any], payload: CustomerPayload) -> dict[str, Any]:
        out = copy.deepcopy(dict(current))
        for k, v in payload.items():
            if isinstance(v, Mapping):
                sub = self._apply(out.get(k) or {}, v)
                if sub:
                    out[k] = sub
                else:
                    out.pop(k, None)
            elif v == "" and self.rules.empty_unsets:
                out.pop(k, None)
            else:
                out[k] = v
        return out

    def _remote(self, customer_id: str) -> RemoteCustomer | None:
        data = self.customers.get(customer_id)
        if data is None:
            return None
        return RemoteCustomer(
            id=customer_id,
            payload={"id": customer_id, **copy.deepcopy(data)},
            deleted=customer_id in self.deleted,
            metadata=dict(data.get(self.rules.tag_field) or {}),
        )


def _plain(payload: Mapping[str, Any]) -> Any:
    return repr(sorted((k, _plain(v) if isinstance(v, Mapping) else v) for k, v in payload.items()))
