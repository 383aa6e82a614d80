"""One billing target under test, whichever system it is: the `target` fixture of conftest.py.

The engine's integration tests run once per billing system from one set of tests. Each test
asks this object for what differs between systems (the sandbox, the config of its billing
account, the shipped mapping for it, the field the Account name goes to, the create path a fault
aims at) and reads what billing holds through the port's own `fetch_customers`, so the same
assertion means the same thing for Stripe and for Chargebee.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fault_readback import BA, opened

from connector.app import build_targets
from connector.billing.base import BillingTarget, RemoteCustomer
from connector.config import Config, SecretSource
from connector.engine import PlannedWrite, RunReport
from connector.planner import create_key
from connector.sandbox.chargebee import ChargebeeSandbox
from connector.sandbox.run import SANDBOX_CHARGEBEE_KEY
from connector.sandbox.stripe import StripeSandbox
from connector.state.records import Intent

MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"


@dataclass
class TargetUnderTest:
    """A billing system's sandbox and what the tests need to know about it."""

    kind: str  # "stripe" | "chargebee": billing.accounts[].kind
    server: StripeSandbox | ChargebeeSandbox
    mappings_dir: Path  # the shipped mapping for this system
    name_field: str  # where the shipped mapping puts Account.Name
    # Every path the shipped mapping puts Account.Name at, for an account with no shipping
    # address (Chargebee's billing address carries the company too).
    name_paths: tuple[str, ...]
    address_field: str  # the object the Account's billing address goes to
    create_path: str  # a regex of the create request's path, for faults
    api_key_env: str
    api_key: str

    def account_config(self, **extra: Any) -> dict[str, Any]:
        """`billing.accounts[0]` of a config for this sandbox."""
        acct: dict[str, Any] = {"id": "default", "api_base": self.server.url}
        if self.kind != "stripe":
            # Only Stripe accounts write back to Stripe_Customer_Id__c unasked; the suite reads
            # the same field for every kind, so it names it.
            acct.update(
                kind=self.kind, api_key_env=self.api_key_env, writeback_field="Stripe_Customer_Id__c"
            )
        return {**acct, **extra}

    def secrets(self) -> dict[str, str]:
        return {self.api_key_env: self.api_key}

    # --- what billing holds, read the same way for every system ---------------------------

    def port(self, config: Config, secrets: SecretSource) -> BillingTarget:
        [target] = build_targets(config, secrets)
        return target

    def customers(self, config: Config, secrets: SecretSource) -> dict[str, RemoteCustomer]:
        """Every customer that is not deleted, by id, read through the port (one request per
        call for Chargebee, one per customer for Stripe: count calls before reading)."""
        ids = [c["id"] for c in self.server.customers()]
        got = self.port(config, secrets).fetch_customers(ids) if ids else {}
        return {cid: c for cid, c in got.items() if c is not None and not c.deleted}

    def by_account(self, config: Config, secrets: SecretSource) -> dict[str, list[RemoteCustomer]]:
        """Customers grouped by the connector's tag salesforce_account_id."""
        out: dict[str, list[RemoteCustomer]] = {}
        for c in self.customers(config, secrets).values():
            out.setdefault(c.tags.get("salesforce_account_id", "?"), []).append(c)
        return out

    @property
    def writes(self) -> int:
        """Write requests the sandbox has answered (creates and updates, replays included)."""
        return int(self.server.write_count)

    @property
    def requests(self) -> int:
        return int(self.server.stats()["total"])


def stripe_target(server: StripeSandbox, api_key: str) -> TargetUnderTest:
    return TargetUnderTest(
        kind="stripe",
        server=server,
        mappings_dir=MAPPINGS,
        name_field="name",
        name_paths=("name",),
        address_field="address",
        create_path=r"^/v1/customers$",
        api_key_env="STRIPE_API_KEY",
        api_key=api_key,
    )


def chargebee_target(server: ChargebeeSandbox) -> TargetUnderTest:
    return TargetUnderTest(
        kind="chargebee",
        server=server,
        mappings_dir=MAPPINGS / "chargebee",
        name_field="company",
        name_paths=("company", "billing_address.company"),
        address_field="billing_address",
        create_path=r"^/api/v2/customers$",
        api_key_env="CHARGEBEE_API_KEY",
        api_key=SANDBOX_CHARGEBEE_KEY,
    )


def crash_after_create(
    port: BillingTarget,
    run: Callable[..., RunReport],
    db_url: str,
    account_id: str,
    *,
    intent_age: timedelta = timedelta(0),
    send: bool = True,
) -> tuple[PlannedWrite, str | None]:
    """Leave the store and billing as a process killed right after its create was applied:
    the intent the engine writes ahead (key and exact payload, as `_Run._create` records it),
    the create sent through the port with that key (unless `send` is False), its answer and the
    link lost. Returns the planned create and the customer made."""
    plan = {p.account_id: p for p in run("sync", dry_run=True).plan}
    planned = plan[account_id]
    assert planned.action == "create"
    key = create_key(BA, account_id, planned.payload_hash)
    with opened(db_url) as s:
        s.intents.record(
            Intent(
                billing_account=BA,
                account_id=account_id,
                idempotency_key=key,
                payload_hash=planned.payload_hash,
                created_at=datetime.now(UTC) - intent_age,
                payload=dict(planned.payload),
            )
        )
    if not send:
        return planned, None
    return planned, port.create_customer(planned.payload, idempotency_key=key)
