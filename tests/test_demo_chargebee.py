"""`billing-connector demo --target chargebee`: the walk-through on a Chargebee sandbox site with
three business entities and customer sharing exits 0, creates customers under each entity, and
gives Umbrella Corporation (orders in EUR, GBP and USD) one customer used from all three."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from connector.billing.chargebee import ChargebeeSettings, ChargebeeTarget, customer_id_for
from connector.cli import app
from connector.config import SecretSource
from connector.sandbox.chargebee import ChargebeeSandbox
from connector.sandbox.chargebee_demo import DEMO_ENTITIES, run_chargebee_demo
from connector.sandbox.run import SANDBOX_CHARGEBEE_KEY, SANDBOX_ORG_ID, UMBRELLA

SHARED = customer_id_for(SANDBOX_ORG_ID, UMBRELLA)


def test_the_cli_demo_exits_0_and_its_store_links_one_customer_from_three_entities(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    state = tmp_path / "demo"
    result = runner.invoke(
        app, ["demo", "--target", "chargebee", "--state-dir", str(state)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "5. sync again" in result.output and "created 0, updated 0" in result.output
    for entity in DEMO_ENTITIES:
        assert entity in result.output
    shown = runner.invoke(
        app, ["xref", "show", UMBRELLA, "--json", "-c", str(state / "config.yaml")]
    )
    assert shown.exit_code == 0, shown.output
    per = {b["billing_account"]: b for b in json.loads(shown.stdout)["billing_accounts"]}
    assert set(per) == {f"chargebee.{e}" for e in DEMO_ENTITIES}
    assert {b["customer_id"] for b in per.values()} == {SHARED}
    assert {b["business_entity"] for b in per.values()} == set(DEMO_ENTITIES)
    # created under the entity of Umbrella's first order (EUR), used from the other two
    assert {b["created_in"] for b in per.values()} == {"chargebee.acme-eu"}
    assert per["chargebee.acme-us"]["used_from"] == sorted(per)
    assert {b["sharing_group"] for b in per.values()} == {"chargebee"}


def test_after_the_demo_the_site_holds_customers_under_each_entity_and_one_shared(
    tmp_path: Path,
) -> None:
    console = Console(file=io.StringIO(), width=200, record=True)
    with ChargebeeSandbox().start() as site:
        code = run_chargebee_demo(tmp_path / "demo", console=console, chargebee=site)
        text = console.export_text()
        assert code == 0, text
        per_entity = {e: site.customers(e) for e in DEMO_ENTITIES}
        assert all(per_entity.values()), {e: len(c) for e, c in per_entity.items()}
        assert sum(len(c) for c in per_entity.values()) == len(site.customers())
        # Umbrella: one customer in the whole site, under acme-eu
        umbrella = [
            c
            for c in site.customers()
            if (c.get("meta_data") or {}).get("salesforce_account_id") == UMBRELLA
        ]
        assert [(c["id"], c["business_entity_id"]) for c in umbrella] == [(SHARED, "acme-eu")]
        # ... reachable from the other entities, as the connector reaches it (the SDK, the
        # entity header)
        secrets = SecretSource({"CHARGEBEE_API_KEY": SANDBOX_CHARGEBEE_KEY})
        for entity in ("acme-us", "acme-uk"):
            target = ChargebeeTarget(
                ChargebeeSettings(
                    name=f"chargebee.{entity}",
                    site="demo-test",
                    api_base=site.url,
                    business_entity_id=entity,
                    customer_sharing=True,
                ),
                secrets,
            )
            got = target.fetch_customer(SHARED)
            assert got is not None and got.metadata["salesforce_account_id"] == UMBRELLA
            assert site.exchanges[-1]["headers"]["chargebee-business-entity-id"] == entity
    assert f"{SHARED}" in text and "created under" in text
