"""`billing-connector demo --target chargebee`: the walk-through on a local Chargebee site.

The same steps as the Stripe demo (backfill, a few Salesforce edits, a dry run, a sync, a sync
that writes nothing), driven by the real connector over HTTP on 127.0.0.1 against the Salesforce
sandbox and a Chargebee sandbox site with three business entities and Customer Sharing on. The
config is what an admin writes: one Chargebee account whose entities the routing rules pick per
order (by currency, then by billing country). Umbrella Corporation bills under all three and
gets one customer, created under the entity of its first order and used from the other two.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console
from rich.table import Table

from connector.sandbox.chargebee import ChargebeeSandbox
from connector.sandbox.run import (
    SAMPLE_ID_FIELDS,
    SANDBOX_CHARGEBEE_KEY,
    SANDBOX_ORG_ID,
    SANDBOX_TOKEN,
    UMBRELLA,
    _edit_some_accounts,
    _print,
    _Stopped,
    start_chargebee_sandbox,
)
from connector.sandbox.salesforce import SalesforceSandbox

if TYPE_CHECKING:
    from connector.engine import Mode

# The demo site's business entities (a legal entity per region) and the account using them.
DEMO_ENTITIES = ("acme-us", "acme-eu", "acme-uk")
DEMO_ACCOUNT = "chargebee"
DEMO_FIELD = "Chargebee_Customer_Id__c"
_EU = ["Germany", "DE", "France", "FR", "Netherlands", "NL", "Spain", "ES", "Sweden", "SE"]
_UK = ["United Kingdom", "GB", "UK"]


def demo_config(
    salesforce_url: str, chargebee_url: str, *, state_url: str, mappings_dir: str
) -> dict[str, Any]:
    """One Chargebee account with three entities and customer sharing, routed per order."""
    name = {e: f"{DEMO_ACCOUNT}.{e}" for e in DEMO_ENTITIES}
    return {
        "salesforce": {
            "auth": "access_token",
            "instance_url": salesforce_url,
            "org_id": SANDBOX_ORG_ID,
        },
        "billing": {
            "accounts": [
                {
                    "name": DEMO_ACCOUNT,
                    "kind": "chargebee",
                    "site": "demo-test",
                    "api_base": chargebee_url,  # only for the sandbox
                    "api_key_env": "CHARGEBEE_API_KEY",
                    "business_entities": list(DEMO_ENTITIES),
                    "sharing": "customer_sharing",
                    "writeback_field": DEMO_FIELD,
                }
            ]
        },
        "routing": {
            "rules": [
                {
                    "field": "Order.CurrencyIsoCode",
                    "map": {"USD": name["acme-us"], "EUR": name["acme-eu"], "GBP": name["acme-uk"]},
                },
                {"field": "Account.BillingCountry", "in": _EU, "account": name["acme-eu"]},
                {"field": "Account.BillingCountry", "in": _UK, "account": name["acme-uk"]},
            ],
            "default": name["acme-us"],
        },
        "state": {"url": state_url},
        "mappings_dir": mappings_dir,
    }


def run_chargebee_demo(
    state_dir: Path,
    *,
    console: Console,
    stop: threading.Event | None = None,
    log_level: str = "warning",
    log_format: str = "console",
    chargebee: ChargebeeSandbox | None = None,
) -> int:
    """Backfill, edit, dry run, sync, sync again on the Chargebee sandbox; print what the site
    holds per entity and Umbrella's shared customer. Returns the exit code (1 when stopped).

    `chargebee`: a running sandbox site to use (and leave running, for a caller to inspect);
    by default one is started and stopped here."""
    from connector.app import open_pipeline
    from connector.config import Config, SecretSource
    from connector.log import configure
    from connector.sandbox.sample import load_sample
    from connector.shipped import default_mappings_dir
    from connector.state.store import StateStore

    configure(level=log_level, fmt=log_format)
    sample = load_sample()
    sf = SalesforceSandbox(
        sample.get("salesforce") or {},
        access_token=SANDBOX_TOKEN,
        org_id=SANDBOX_ORG_ID,
        customer_id_fields=(*SAMPLE_ID_FIELDS, DEMO_FIELD),
    ).start()
    site = {"business_entities": list(DEMO_ENTITIES), "customer_sharing": True}
    cb = chargebee or start_chargebee_sandbox(site)
    if chargebee is not None:
        chargebee.load(site)
    try:
        if state_dir.exists():
            shutil.rmtree(state_dir)
        state_dir.mkdir(mode=0o700, parents=True)  # sample customer data: this user only
        state_dir.chmod(0o700)
        state_file = (state_dir / "state.db").resolve()
        data = demo_config(
            sf.url,
            cb.url,
            state_url=f"sqlite:///{state_file}",
            mappings_dir=str(default_mappings_dir() / "chargebee"),
        )
        cfg = Config.model_validate(data)
        (state_dir / "config.yaml").write_text(
            "# Written by `billing-connector demo --target chargebee`. The sandbox URLs below are\n"
            "# gone once the demo ends; commands that only read the store (status, conflicts\n"
            "# list, xref show) work. Set CHARGEBEE_API_KEY for a real site.\n"
            + yaml.safe_dump(data, sort_keys=False)
        )
        secrets = SecretSource(
            {"SALESFORCE_ACCESS_TOKEN": SANDBOX_TOKEN, "CHARGEBEE_API_KEY": SANDBOX_CHARGEBEE_KEY}
        )
        console.print(
            f"[bold]Sandbox[/]: Salesforce {sf.url}, Chargebee site {cb.url} with business "
            f"entities {', '.join(DEMO_ENTITIES)} and Customer Sharing on (sample data)",
            highlight=False,
        )
        worst = 0

        def step(title: str, mode: Mode, **kw: Any) -> Any:
            nonlocal worst
            if stop is not None and stop.is_set():
                raise _Stopped
            with open_pipeline(cfg, secrets, stop=stop) as p:
                report = p.engine.run(mode, **kw)
            _print(console, title, report)
            worst = max(worst, report.exit_code)
            if report.status == "interrupted":
                raise _Stopped
            return report

        class _Org:  # what _edit_some_accounts reads
            salesforce = sf

        try:
            step("1. backfill: every activated order, each under its routed entity", "backfill")
            edited = _edit_some_accounts(_Org())  # type: ignore[arg-type]
            console.print(f"\n[bold]2. edits in Salesforce[/]: {edited}", highlight=False)
            step("3. dry run of the next sync (nothing is written)", "sync", dry_run=True)
            step("4. sync: only what changed", "sync")
            step("5. sync again: nothing changed, no Chargebee call", "sync")
        except _Stopped:
            console.print("\n[bold]stopped by a signal[/]: the rest of the demo was skipped")
            return 1
        _print_entities(console, cb.customers, len(cb.customers()))
        with StateStore.open(cfg.state_url) as store:
            links = {
                f"{DEMO_ACCOUNT}.{e}": store.links.get(f"{DEMO_ACCOUNT}.{e}", UMBRELLA)
                for e in DEMO_ENTITIES
            }
        t = Table(title=f"Umbrella Corporation ({UMBRELLA}): one shared customer, three entities")
        for col in ("billing account", "business entity", "customer", "created under"):
            t.add_column(col)
        for name, link in links.items():
            creator = (link.shared_from or name) if link else None
            t.add_row(
                name,
                name.split(".", 1)[1],
                link.customer_id if link else "-",
                creator.split(".", 1)[1] if creator else "-",
            )
        console.print(t)
        console.print(
            f"\nState file: {state_file}\n"
            f"Next: billing-connector xref show {UMBRELLA} -c {state_dir / 'config.yaml'}",
            highlight=False,
        )
        return worst
    finally:
        sf.stop()
        if chargebee is None:
            cb.stop()


def _print_entities(console: Console, customers: Any, total: int) -> None:
    t = Table(
        title=f"Chargebee sandbox now holds {total} customers, by the entity they were created under"
    )
    for col in ("business entity", "customers", "for example"):
        t.add_column(col)
    for entity in DEMO_ENTITIES:
        mine = customers(entity)
        t.add_row(
            entity,
            str(len(mine)),
            ", ".join(f"{c['id']} ({c.get('company') or ''})" for c in mine[:2]),
        )
    console.print(t)
