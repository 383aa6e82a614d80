"""Starting both sandbox servers together, and the `demo` command built on them.

The demo is what a newcomer runs first: it needs no credentials, starts the local Salesforce
org and Stripe account in-process with the sample data, and drives the real connector (real
clients over HTTP on 127.0.0.1) through a backfill, a few Salesforce edits and a sync.
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from connector.sandbox.chargebee import ChargebeeSandbox
from connector.sandbox.salesforce import SalesforceSandbox
from connector.sandbox.stripe import StripeSandbox
from connector.sandbox.stripe_accounts import DEFAULT_ACCOUNT
from connector.sandbox.stripe_limits import RateLimits

SANDBOX_ORG_ID = "00D000000000001AAA"
# Shaped like a real token (org id, "!", opaque part) so the org id is read from it as in production.
SANDBOX_TOKEN = "00D000000000001!AQsandboxAccessTokenForLocalUseOnly"
SANDBOX_STRIPE_KEY = "sk_test_sandbox0000000000000000"
# A Chargebee test-site key is "test_" + opaque text; the sandbox accepts any such key.
SANDBOX_CHARGEBEE_KEY = "test_sandboxChargebeeKeyForLocalUseOnly"
# The sample's several-account set-up (issue 13): an organization key for three accounts, two
# of which share customers. A sandbox key: it opens nothing but the local Stripe sandbox.
SAMPLE_ORG_KEY = "sk_org_test_sample_umbrella_000000"
SAMPLE_ACCOUNTS = (
    ("europe", "acct_1SampleEurope0000", "Stripe_Europe_Customer_Id__c"),
    ("uk", "acct_1SampleUK00000000", "Stripe_Europe_Customer_Id__c"),  # shares Europe's customers
    ("us", "acct_1SampleUS00000000", "Stripe_US_Customer_Id__c"),
)
SAMPLE_ID_FIELDS = ("Stripe_Europe_Customer_Id__c", "Stripe_US_Customer_Id__c")


@dataclass
class SandboxPair:
    salesforce: SalesforceSandbox
    stripe: StripeSandbox
    access_token: str = SANDBOX_TOKEN
    stripe_key: str = SANDBOX_STRIPE_KEY

    def config_snippet(
        self, *, state_url: str = "sqlite:///state.db", mappings_dir: str = "mappings"
    ) -> str:
        return yaml.safe_dump(
            self.config_dict(state_url=state_url, mappings_dir=mappings_dir), sort_keys=False
        )

    def config_dict(
        self, *, state_url: str = "sqlite:///state.db", mappings_dir: str = "mappings"
    ) -> dict[str, Any]:
        return {
            "salesforce": {
                "auth": "access_token",
                "instance_url": self.salesforce.url,
                "org_id": SANDBOX_ORG_ID,
            },
            "billing": {"accounts": [{"id": "default", "api_base": self.stripe.url}]},
            "state": {"url": state_url},
            "mappings_dir": mappings_dir,
        }

    def secrets(self) -> dict[str, str]:
        return {"SALESFORCE_ACCESS_TOKEN": self.access_token, "STRIPE_API_KEY": self.stripe_key}

    def several_accounts_config(
        self, *, state_url: str, mappings_dir: str = "mappings"
    ) -> dict[str, Any]:
        """The sample's three Stripe accounts behind one organization key: Europe and UK in a
        sharing group, the US outside; orders routed by their Stripe account lookup, the rest
        to Europe."""
        data = self.config_dict(state_url=state_url, mappings_dir=mappings_dir)
        data["billing"] = {
            "accounts": [
                {
                    "name": name,
                    "api_key_env": "STRIPE_ORG_KEY",
                    "stripe_context": acct,
                    "api_base": self.stripe.url,
                    "writeback_field": field,
                }
                for name, acct, field in SAMPLE_ACCOUNTS
            ],
            "sharing_groups": [{"name": "umbrella-europe", "accounts": ["europe", "uk"]}],
        }
        data["routing"] = {
            "rules": [
                {
                    "field": "Order.Stripe_Account__r.Stripe_ID__c",
                    "map": {acct: name for name, acct, _ in SAMPLE_ACCOUNTS},
                }
            ],
            "default": "europe",
        }
        return data

    def stripe_accounts_text(self) -> str:
        """The Stripe accounts a data set adds beside the default one, for people to copy from."""
        described = self.stripe.directory.describe()
        extra = [a for a in described["accounts"] if a["id"] != DEFAULT_ACCOUNT]
        if not extra and not described["organizations"]:
            return ""
        lines = [
            "Stripe accounts in this data set (sandbox keys: not secret, not for real Stripe):"
        ]
        for account in extra:
            keys = (
                ", ".join(sorted(self.stripe.directory.accounts[account["id"]].keys))
                or "no keys of its own"
            )
            group = (
                " sharing group " + "+".join(account["sharing_group"])
                if account["sharing_group"]
                else ""
            )
            mode = "live" if account["livemode"] else "test"
            lines.append(f"  {account['id']} ({mode}{group}): {keys}")
        for org in described["organizations"]:
            keys = ", ".join(sorted(self.stripe.directory.organizations[org["id"]].keys))
            lines.append(
                f"  organization {org['id']} reaches {', '.join(org['accounts'])} with Stripe-Context: {keys}"
            )
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        self.salesforce.stop()
        self.stripe.stop()


def read_data_file(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a data set is a mapping with 'salesforce' and 'stripe' sections")
    return data


def start_sandboxes(
    data_file: Path | None = None,
    *,
    salesforce_port: int = 0,
    stripe_port: int = 0,
    stripe_limits: RateLimits | None = None,
    stripe_latency: float = 0.0,
    salesforce_latency: float = 0.0,
) -> SandboxPair:
    """Both servers with a data set (the sample by default). Bad data raises ValueError naming
    the file and the entry, before any server listens.

    `stripe_limits` turns on Stripe's rate limits; the latencies are added to every request
    (for Salesforce that is per query page, each page being one request).
    """
    from connector.sandbox.sample import load_sample

    data = read_data_file(data_file) if data_file else load_sample()
    where = str(data_file) if data_file else "sample data"
    # The Stripe side first: it validates its whole section without listening on a port.
    st = StripeSandbox(port=stripe_port, rate_limits=stripe_limits)
    try:
        st.load(data.get("stripe") or {})
    except ValueError as exc:
        raise ValueError(f"{where}: stripe.{exc}") from None
    st.set_latency(stripe_latency)
    sf = SalesforceSandbox(
        data.get("salesforce") or {},
        port=salesforce_port,
        access_token=SANDBOX_TOKEN,
        org_id=SANDBOX_ORG_ID,
        customer_id_fields=SAMPLE_ID_FIELDS,
    ).start()
    sf.set_latency(salesforce_latency)
    st.start()
    return SandboxPair(salesforce=sf, stripe=st)


def start_chargebee_sandbox(
    data: dict[str, Any] | None = None, *, port: int = 0
) -> ChargebeeSandbox:
    """A local Chargebee site with the `chargebee` section of a data set (entities, sharing,
    customers); the SDK reaches it with `sandbox.sdk_options()` and SANDBOX_CHARGEBEE_KEY."""
    sandbox = ChargebeeSandbox(port=port).start()
    sandbox.load(data or {})
    return sandbox


def run_demo(
    state_dir: Path,
    *,
    console: Console,
    stop: threading.Event | None = None,
    log_level: str = "warning",
    log_format: str = "console",
) -> int:
    """Backfill, edit, sync, sync again; print each step. Returns the exit code.

    `stop` set (a signal) ends the step in progress cleanly and skips the rest: exit 1.
    """
    from connector.app import open_pipeline
    from connector.config import Config, SecretSource
    from connector.log import configure
    from connector.shipped import default_mappings_dir

    configure(level=log_level, fmt=log_format)
    mappings = default_mappings_dir()  # the shipped ones, wherever the command is run from
    pair = start_sandboxes()
    try:
        if state_dir.exists():
            shutil.rmtree(state_dir)
        # The demo store holds (sample) customer data: readable by this user only.
        state_dir.mkdir(mode=0o700, parents=True)
        state_dir.chmod(0o700)
        state_file = (state_dir / "state.db").resolve()
        cfg_data = pair.config_dict(state_url=f"sqlite:///{state_file}", mappings_dir=str(mappings))
        cfg = Config.model_validate(cfg_data)
        # Left behind so `status`, `conflicts list` and `xref show` can read the demo's store.
        (state_dir / "config.yaml").write_text(
            "# Written by `billing-connector demo`. The sandbox URLs below are gone once the demo\n"
            "# ends; commands that only read the store (status, conflicts list, xref show) work.\n"
            + yaml.safe_dump(cfg_data, sort_keys=False)
        )
        secrets = SecretSource(pair.secrets())
        console.print(
            f"[bold]Sandbox[/]: Salesforce {pair.salesforce.url}, Stripe {pair.stripe.url} (sample data)"
        )
        worst = 0

        def step(title: str, mode: str, **kw: Any) -> Any:
            nonlocal worst
            if stop is not None and stop.is_set():
                raise _Stopped
            with open_pipeline(cfg, secrets, stop=stop) as p:
                report = p.engine.run(mode, **kw)  # type: ignore[arg-type]
            _print(console, title, report)
            worst = max(worst, report.exit_code)
            if report.status == "interrupted":
                raise _Stopped
            return report

        try:
            step("1. backfill: every activated order", "backfill")
            edited = _edit_some_accounts(pair)
            console.print(f"\n[bold]2. edits in Salesforce[/]: {edited}")
            step("3. dry run of the next sync (nothing is written)", "sync", dry_run=True)
            step("4. sync: only what changed", "sync")
            step("5. sync again: nothing changed, no Stripe call", "sync")
        except _Stopped:
            console.print("\n[bold]stopped by a signal[/]: the rest of the demo was skipped")
            return 1
        customers = pair.stripe.customers()
        t = Table(title=f"Stripe sandbox now holds {len(customers)} customers (first 8)")
        for col in ("id", "name", "email", "country", "salesforce_account_id"):
            t.add_column(col)
        for c in customers[:8]:
            t.add_row(
                c["id"],
                c.get("name") or "",
                c.get("email") or "",
                (c.get("address") or {}).get("country") or "",
                (c.get("metadata") or {}).get("salesforce_account_id", ""),
            )
        console.print(t)
        worst = max(worst, _several_accounts(pair, state_dir, console))
        console.print(
            f"\nState file: {state_file}\nNext: billing-connector status -c {state_dir / 'config.yaml'}\n"
            "      billing-connector sandbox   (servers that stay up, with a ready config)",
            highlight=False,
        )
        return worst
    finally:
        pair.stop()


UMBRELLA = "001000000000007AAA"


def _several_accounts(pair: SandboxPair, state_dir: Path, console: Console) -> int:
    """Three Stripe accounts (two sharing customers): Umbrella, with orders in all three, gets
    one shared customer and one separate one. Prints its links."""
    from connector.app import open_pipeline
    from connector.config import Config, SecretSource
    from connector.shipped import default_mappings_dir

    if not all(pair.stripe.directory.accounts.get(a) for _, a, _ in SAMPLE_ACCOUNTS):
        return 0  # a data set without the sample's accounts
    state_file = (state_dir / "several-accounts.db").resolve()
    data = pair.several_accounts_config(
        state_url=f"sqlite:///{state_file}", mappings_dir=str(default_mappings_dir())
    )
    secrets = SecretSource(
        {"SALESFORCE_ACCESS_TOKEN": pair.access_token, "STRIPE_ORG_KEY": SAMPLE_ORG_KEY}
    )
    with open_pipeline(Config.model_validate(data), secrets) as p:
        report = p.engine.run("backfill")
        links = {name: p.store.links.get(name, UMBRELLA) for name, _, _ in SAMPLE_ACCOUNTS}
    _print(
        console,
        "6. several Stripe accounts: Europe + UK share customers, the US does not; orders "
        "routed by Order.Stripe_Account__r.Stripe_ID__c (backfill)",
        report,
    )
    t = Table(title=f"Umbrella Corporation ({UMBRELLA}): one link per billing account")
    for col in ("billing account", "Stripe account", "customer", "created in"):
        t.add_column(col)
    # The member whose link is oldest created the customer; the others use it by its id.
    created_in: dict[str, str] = {}
    dated = [(ln.first_synced_at, n, ln.customer_id) for n, ln in links.items() if ln]
    for _, name, customer in sorted((d for d in dated if d[0] is not None), reverse=True):
        created_in[customer] = name
    for name, acct, _ in SAMPLE_ACCOUNTS:
        ln = links[name]
        t.add_row(
            name,
            acct,
            ln.customer_id if ln else "-",
            created_in.get(ln.customer_id, "-") if ln else "-",
        )
    console.print(t)
    return report.exit_code


class _Stopped(Exception):
    """A signal asked the demo to stop between steps."""


def _edit_some_accounts(pair: SandboxPair) -> str:
    """Rename one billed account, change another's phone, and activate an order for a new one."""
    sf = pair.salesforce
    billed = sorted(
        {
            o["AccountId"]
            for o in sf.records("Order")
            if o.get("StatusCode") == "Activated" and o.get("AccountId")
        }
    )
    notes = []
    if billed:
        acc = sf.get("Account", billed[0]) or {}
        sf.update("Account", billed[0], {"Name": f"{acc.get('Name', 'Account')} (renamed)"})
        notes.append(f"renamed {billed[0]}")
    if len(billed) > 1:
        sf.update("Account", billed[1], {"Phone": "+1 415 555 0199"})
        notes.append(f"new phone on {billed[1]}")
    new_acc = sf.create(
        "Account",
        {"Name": "Demo Newco Ltd", "BillingCountry": "United Kingdom", "BillingCity": "London"},
    )
    contact = sf.create(
        "Contact",
        {
            "AccountId": new_acc,
            "FirstName": "Ada",
            "LastName": "Byron",
            "Email": "ada@newco.example",
        },
    )
    order = sf.create(
        "Order",
        {
            "AccountId": new_acc,
            "Status": "Draft",
            "EffectiveDate": "2026-11-01",
            "BillToContactId": contact,
        },
    )
    sf.update("Order", order, {"Status": "Activated"})
    notes.append(f"activated order {order} for new account {new_acc}")
    return "; ".join(notes)


def _print(console: Console, title: str, report: Any) -> None:
    console.print(f"\n[bold]{title}[/] ({report.status})", highlight=False)
    console.print(f"   {report.summary()}", highlight=False)
    if report.dry_run:
        for p in report.plan:
            if p.action != "unchanged":
                console.print(
                    f"   would {p.action:<8} {p.account_id}  {p.detail()}", highlight=False
                )
    if report.error:
        console.print(f"[red]error:[/] {report.error}")
