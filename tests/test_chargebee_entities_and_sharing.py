"""A Chargebee site with business entities, end to end (issue 14): the account's entities are
billing accounts NAME.ENTITY that routing rules pick per order, each write sent with
`chargebee-business-entity-id`; with customer sharing one customer per Salesforce account is
created under the primary entity and linked from the others (never created twice), the links
naming where it was created; without sharing one customer per entity with an entity-specific
id; Salesforce merges of synced accounts refused as for Stripe.

The real connector (open_pipeline) runs against the Salesforce sandbox and the Chargebee
sandbox, through the unmodified Chargebee SDK, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import MAPPINGS

from connector.app import build_targets, open_pipeline
from connector.billing.chargebee import ChargebeeTarget, customer_id_for
from connector.config import Config, SecretSource, load_config
from connector.engine import RunReport
from connector.sandbox.chargebee import ChargebeeSandbox
from connector.sandbox.run import (
    SANDBOX_CHARGEBEE_KEY,
    SANDBOX_ORG_ID,
    SANDBOX_TOKEN,
    start_chargebee_sandbox,
)
from connector.sandbox.salesforce import SalesforceSandbox
from connector.state.store import StateStore

ENTITIES = ("acme-eu", "acme-uk", "acme-us")
ACCOUNTS = tuple(f"cb.{e}" for e in ENTITIES)
FIELD = "Chargebee_Customer_Id__c"
ACME, BETA, UMBRELLA = "001000000000C01AAA", "001000000000C02AAA", "001000000000C03AAA"
SECRETS = SecretSource(
    {"SALESFORCE_ACCESS_TOKEN": SANDBOX_TOKEN, "CHARGEBEE_API_KEY": SANDBOX_CHARGEBEE_KEY}
)


def order(n: int, account: str, day: int, currency: str) -> dict[str, Any]:
    return {
        "Id": f"801000000000C{n:02d}AAA",
        "AccountId": account,
        "Status": "Activated",
        "EffectiveDate": f"2026-03-{day:02d}",
        "ActivatedDate": f"2026-03-{day:02d}T10:00:00.000+0000",
        "CurrencyIsoCode": currency,
    }


def org() -> dict[str, list[dict[str, Any]]]:
    return {
        "Account": [
            {"Id": ACME, "Name": "Acme Corp", "BillingCountry": "US"},
            {"Id": BETA, "Name": "Beta GmbH", "BillingCountry": "Germany"},
            {"Id": UMBRELLA, "Name": "Umbrella Corporation", "Phone": "+44 20 7946 0000"},
        ],
        "Order": [
            order(1, ACME, 1, "USD"),
            order(2, BETA, 2, "EUR"),
            # Umbrella bills under all three entities; its first order is British
            order(3, UMBRELLA, 3, "GBP"),
            order(4, UMBRELLA, 4, "EUR"),
            order(5, UMBRELLA, 5, "USD"),
        ],
    }


class Site:
    def __init__(self, tmp_path: Path, db_url: str, *, sharing: bool, primary: str | None = None):
        self.db_url = db_url
        self.sharing = sharing
        self.sf = SalesforceSandbox(
            org(), access_token=SANDBOX_TOKEN, org_id=SANDBOX_ORG_ID, customer_id_fields=[FIELD]
        ).start()
        self.cb: ChargebeeSandbox = start_chargebee_sandbox(
            {"business_entities": list(ENTITIES), "customer_sharing": sharing}
        )
        account: dict[str, Any] = {
            "name": "cb",
            "kind": "chargebee",
            "site": "acme-test",
            "api_base": self.cb.url,
            "business_entities": list(ENTITIES),
            "sharing": "customer_sharing" if sharing else "none",
            "writeback_field": FIELD if sharing else None,
        }
        if primary:
            account["primary_entity"] = primary
        data = {
            "salesforce": {
                "auth": "access_token",
                "instance_url": self.sf.url,
                "org_id": SANDBOX_ORG_ID,
            },
            "billing": {"accounts": [account]},
            "routing": {
                "rules": [
                    {
                        "field": "Order.CurrencyIsoCode",
                        "map": {"EUR": "cb.acme-eu", "GBP": "cb.acme-uk", "USD": "cb.acme-us"},
                    }
                ]
            },
            "state": {"url": db_url},
            "mappings_dir": str(MAPPINGS / "chargebee"),
        }
        self.path = tmp_path / "config.yaml"
        self.path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    @property
    def config(self) -> Config:
        return load_config(self.path)

    def run(self, mode: str = "sync") -> RunReport:
        with open_pipeline(self.config, SECRETS) as p:
            return p.engine.run(mode)  # type: ignore[arg-type]

    def customers_for(self, account_id: str) -> dict[str, list[str]]:
        """Entity -> ids of the customers created under it for `account_id`."""
        return {
            e: [
                c["id"]
                for c in self.cb.customers(e)
                if (c.get("meta_data") or {}).get("salesforce_account_id") == account_id
            ]
            for e in ENTITIES
        }

    def creates(self) -> list[dict[str, Any]]:
        return [
            x
            for x in self.cb.exchanges
            if x["method"] == "POST" and x["path"].rstrip("/").endswith("/customers")
        ]

    def stop(self) -> None:
        self.sf.stop()
        self.cb.stop()


@pytest.fixture
def shared(tmp_path: Path, db_url: str) -> Iterator[Site]:
    site = Site(tmp_path, db_url, sharing=True)
    yield site
    site.stop()


@pytest.fixture
def separate(tmp_path: Path, db_url: str) -> Iterator[Site]:
    site = Site(tmp_path, db_url, sharing=False)
    yield site
    site.stop()


def test_shared_customers_are_created_under_the_first_orders_entity_and_used_from_the_others(
    shared: Site,
) -> None:
    first = shared.run("backfill")
    assert first.exit_code == 0, first.error
    # Umbrella: one customer, under the entity of its first order (GBP: acme-uk)
    assert shared.customers_for(UMBRELLA) == {
        "acme-eu": [],
        "acme-uk": [customer_id_for(SANDBOX_ORG_ID, UMBRELLA)],
        "acme-us": [],
    }
    assert shared.customers_for(ACME)["acme-us"] and shared.customers_for(BETA)["acme-eu"]
    assert len(shared.cb.customers()) == 3 and len(shared.creates()) == 3
    # every create was sent under the entity its order was routed to
    entities = sorted(x["headers"]["chargebee-business-entity-id"] for x in shared.creates())
    assert entities == ["acme-eu", "acme-uk", "acme-us"]
    with StateStore.open(shared.db_url) as store:
        links = {ba: store.links.get(ba, UMBRELLA) for ba in ACCOUNTS}
        assert {ln.customer_id for ln in links.values() if ln} == {
            customer_id_for(SANDBOX_ORG_ID, UMBRELLA)
        }
        # the link records the primary entity and the entities that use its customer
        assert links["cb.acme-uk"].shared_from is None  # type: ignore[union-attr]
        assert links["cb.acme-eu"].shared_from == "cb.acme-uk"  # type: ignore[union-attr]
        assert store.links.shared_with("cb.acme-uk", UMBRELLA) == ["cb.acme-eu", "cb.acme-us"]
    # the shared customer is reachable from another entity through the SDK
    targets = {t.name: t for t in build_targets(shared.config, SECRETS)}
    eu = targets["cb.acme-eu"]
    assert isinstance(eu, ChargebeeTarget)
    got = eu.fetch_customer(customer_id_for(SANDBOX_ORG_ID, UMBRELLA))
    assert got is not None and got.metadata["salesforce_account_id"] == UMBRELLA
    assert shared.cb.exchanges[-1]["headers"]["chargebee-business-entity-id"] == "acme-eu"
    # all three entity accounts write the one shared id back
    assert shared.sf.get("Account", UMBRELLA)[FIELD] == customer_id_for(SANDBOX_ORG_ID, UMBRELLA)  # type: ignore[index]

    writes = shared.cb.write_count
    again = shared.run("sync")
    assert again.created == again.updated == 0 and shared.cb.write_count == writes

    # a change reaches the shared customer once, through its one writer (the primary)
    shared.sf.update("Account", UMBRELLA, {"Phone": "+44 20 7946 0999"})
    changed = shared.run("sync")
    assert changed.updated == 1 and changed.created == 0
    assert (
        shared.cb.get_customer(customer_id_for(SANDBOX_ORG_ID, UMBRELLA))["phone"]
        == "+442079460999"
    )  # type: ignore[index]
    updates = [x for x in shared.cb.exchanges if x["method"] == "POST"][len(shared.creates()) :]
    assert {x["headers"].get("chargebee-business-entity-id") for x in updates} <= {"acme-uk"}


def test_a_configured_primary_entity_holds_every_shared_customer(
    tmp_path: Path, db_url: str
) -> None:
    site = Site(tmp_path, db_url, sharing=True, primary="acme-us")
    try:
        assert site.run("backfill").exit_code == 0
        assert site.customers_for(UMBRELLA)["acme-us"] == [
            customer_id_for(SANDBOX_ORG_ID, UMBRELLA)
        ]
        assert site.customers_for(BETA) == {
            "acme-eu": [],
            "acme-uk": [],
            "acme-us": [customer_id_for(SANDBOX_ORG_ID, BETA)],
        }
        assert len(site.cb.customers()) == 3
        with StateStore.open(db_url) as store:
            assert store.links.get("cb.acme-eu", BETA).shared_from == "cb.acme-us"  # type: ignore[union-attr]
            assert store.links.shared_with("cb.acme-us", UMBRELLA) == ["cb.acme-eu", "cb.acme-uk"]
    finally:
        site.stop()


def test_without_sharing_each_entity_has_its_own_customer_and_id(separate: Site) -> None:
    first = separate.run("backfill")
    assert first.exit_code == 0, first.error
    made = separate.customers_for(UMBRELLA)
    assert made == {e: [customer_id_for(SANDBOX_ORG_ID, UMBRELLA, e)] for e in ENTITIES}
    assert len({i for ids in made.values() for i in ids}) == 3
    with StateStore.open(separate.db_url) as store:
        for ba, entity in zip(ACCOUNTS, ENTITIES, strict=True):
            link = store.links.get(ba, UMBRELLA)
            assert link is not None and link.shared_from is None
            assert link.customer_id == customer_id_for(SANDBOX_ORG_ID, UMBRELLA, entity)
    # no Account field can hold three customers: nothing is written back
    assert not separate.sf.get("Account", UMBRELLA).get(FIELD)  # type: ignore[union-attr]
    writes = separate.cb.write_count
    assert separate.run("sync").created == 0 and separate.cb.write_count == writes


@pytest.mark.parametrize("sharing", [True, False])
def test_a_merge_of_synced_accounts_is_refused_and_no_entity_is_written(
    tmp_path: Path, db_url: str, sharing: bool
) -> None:
    site = Site(tmp_path, db_url, sharing=sharing)
    try:
        assert site.run("backfill").exit_code == 0
        before = {c["id"]: c for c in site.cb.customers()}
        writes = site.cb.write_count
        # Umbrella (linked under every entity) merged into Beta (linked under acme-eu)
        site.sf.merge(BETA, [UMBRELLA])
        report = site.run("sync")
        assert report.refused >= 1 and report.created == 0
        assert site.cb.write_count == writes  # Chargebee cannot merge: nothing is sent
        assert {c["id"]: c for c in site.cb.customers()} == before
        with StateStore.open(db_url) as store:
            kinds = {c.kind for c in store.conflicts.list("open")}
            assert "merge_both_linked" in kinds
            for ba in ACCOUNTS:
                link = store.links.get(ba, UMBRELLA)
                assert link is not None and link.status == "merged"  # the cross-reference is kept
        again = site.run("sync")
        assert again.created == 0 and site.cb.write_count == writes
    finally:
        site.stop()


def test_account_names_the_site_account_for_all_its_entities_or_one_entity(
    separate: Site,
) -> None:
    with open_pipeline(separate.config, SECRETS, accounts=["cb.acme-uk"]) as p:
        assert [t.name for t in p.targets] == ["cb.acme-uk"]
        report = p.engine.run("backfill")
    assert report.created == 1 and separate.customers_for(UMBRELLA)["acme-uk"]
    assert (
        not separate.customers_for(UMBRELLA)["acme-eu"]
        and not separate.customers_for(ACME)["acme-us"]
    )
    with open_pipeline(separate.config, SECRETS, accounts=["cb"]) as p:
        assert [t.name for t in p.targets] == list(ACCOUNTS)
