"""Several Stripe accounts end to end (issue 13): orders routed by rule, one link per
(Salesforce account, billing account), sharing groups with one customer used from every
member, unroutable orders refused with their reason, a SIGKILL between two accounts' writes,
and a sharing group formed after customers existed.

The real connector (open_pipeline, or `python -m connector` in a subprocess) runs against the
Salesforce sandbox and the multi-account Stripe sandbox, driven by one organization key with
Stripe-Context, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import MAPPINGS

from connector.app import open_pipeline
from connector.config import Config, SecretSource, load_config
from connector.engine import ORDERS_CURSOR, RunReport
from connector.sandbox.http import Fault
from connector.sandbox.run import SANDBOX_ORG_ID, SANDBOX_TOKEN
from connector.sandbox.salesforce import SalesforceSandbox
from connector.sandbox.stripe import StripeSandbox
from connector.state.store import StateStore

EU, UK, US = "acct_1MultiEurope00000", "acct_1MultiUK000000000", "acct_1MultiUS000000000"
ORG_KEY = "sk_org_test_multi_umbrella_00001"
ACME, BETA, UMBRELLA, NOWHERE = (
    "001000000000M01AAA",
    "001000000000M02AAA",
    "001000000000M03AAA",
    "001000000000M04AAA",
)
FIELDS = {"eu": "Stripe_Customer_Id__c", "uk": "Stripe_UK_Customer_Id__c", "us": "Stripe_US_Customer_Id__c"}
LOOKUP = {EU: "a0S000000000001AAA", UK: "a0S000000000002AAA", US: "a0S000000000003AAA"}


def order(n: int, account: str, day: int, *, lookup: str | None = None, currency: str = "EUR") -> dict[str, Any]:
    row: dict[str, Any] = {
        "Id": f"801000000000M{n:02d}AAA",
        "AccountId": account,
        "Status": "Activated",
        "EffectiveDate": f"2026-03-{day:02d}",
        "ActivatedDate": f"2026-03-{day:02d}T10:00:00.000+0000",
        "CurrencyIsoCode": currency,
    }
    if lookup:
        row["Stripe_Account__c"] = LOOKUP[lookup]
    return row


def org() -> dict[str, list[dict[str, Any]]]:
    return {
        "Stripe_Account__c": [
            {"Id": LOOKUP[EU], "Name": "Europe", "Stripe_ID__c": EU},
            {"Id": LOOKUP[UK], "Name": "UK", "Stripe_ID__c": UK},
            {"Id": LOOKUP[US], "Name": "US", "Stripe_ID__c": US},
        ],
        "Account": [
            {"Id": ACME, "Name": "Acme Corp", "Phone": "+1 217 555 0100", "BillingCountry": "US"},
            {"Id": BETA, "Name": "Beta GmbH", "BillingCountry": "Germany"},
            {"Id": UMBRELLA, "Name": "Umbrella Corporation", "Phone": "+44 20 7946 0000"},
            {"Id": NOWHERE, "Name": "Nowhere AG", "BillingCountry": "Switzerland"},
        ],
        "Order": [
            # Acme bills in Europe (Stripe's connector set-up: the lookup names the account) and
            # in the US (routed by currency, no lookup).
            order(1, ACME, 1, lookup=EU),
            order(2, ACME, 2, currency="USD"),
            order(3, BETA, 3, lookup=EU),
            # Umbrella bills in all three
            order(4, UMBRELLA, 4, lookup=EU),
            order(5, UMBRELLA, 5, lookup=UK, currency="GBP"),
            order(6, UMBRELLA, 6, lookup=US, currency="USD"),
            # no rule takes a Swiss franc order without a lookup, and there is no default
            order(7, NOWHERE, 7, currency="CHF"),
        ],
    }


def stripe_data(*, shared: bool) -> dict[str, Any]:
    return {
        "accounts": [{"id": EU}, {"id": UK}, {"id": US}],
        "organizations": [{"id": "org_1MultiUmbrella", "keys": [ORG_KEY], "accounts": [EU, UK, US]}],
        "sharing_groups": [[EU, UK]] if shared else [],
    }


class World:
    def __init__(self, tmp_path: Path, db_url: str, *, shared: bool) -> None:
        self.tmp_path = tmp_path
        self.db_url = db_url
        self.sf = SalesforceSandbox(
            org(), access_token=SANDBOX_TOKEN, org_id=SANDBOX_ORG_ID, customer_id_fields=list(FIELDS.values())
        ).start()
        self.stripe = StripeSandbox(data=stripe_data(shared=shared)).start()
        self.write_config(groups=[["eu", "uk"]] if shared else [])

    def write_config(self, *, groups: list[list[str]]) -> None:
        accounts = [
            {
                "name": name,
                "api_key_env": "STRIPE_ORG_KEY",
                "stripe_context": acct,
                "api_base": self.stripe.url,
                "writeback_field": FIELDS[name],
            }
            for name, acct in (("eu", EU), ("uk", UK), ("us", US))
        ]
        data = {
            "salesforce": {"auth": "access_token", "instance_url": self.sf.url, "org_id": SANDBOX_ORG_ID},
            "billing": {"accounts": accounts, "sharing_groups": groups},
            "routing": {
                "rules": [
                    {"field": "Order.Stripe_Account__r.Stripe_ID__c", "map": {EU: "eu", UK: "uk", US: "us"}},
                    {"field": "Order.CurrencyIsoCode", "in": ["USD"], "account": "us"},
                ]
            },
            "state": {"url": self.db_url},
            "mappings_dir": str(MAPPINGS),
        }
        self.config_path = self.tmp_path / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "STRIPE_"))}
        env.update(SALESFORCE_ACCESS_TOKEN=SANDBOX_TOKEN, STRIPE_ORG_KEY=ORG_KEY)
        env["BILLING_CONNECTOR_CONFIG"] = str(self.config_path)
        return env

    def run(self, mode: str = "sync") -> RunReport:
        secrets = SecretSource({"SALESFORCE_ACCESS_TOKEN": SANDBOX_TOKEN, "STRIPE_ORG_KEY": ORG_KEY})
        with open_pipeline(self.config, secrets) as p:
            return p.engine.run(mode)  # type: ignore[arg-type]

    def customers_of(self, account_id: str) -> dict[str, list[str]]:
        """Stripe account -> ids of the live customers tagged with `account_id` it can see."""
        return {
            acct: [
                c["id"]
                for c in self.stripe.customers(account=acct)
                if c["metadata"].get("salesforce_account_id") == account_id
            ]
            for acct in (EU, UK, US)
        }

    def customers_made_for(self, account_id: str) -> int:
        """Customers created for `account_id` in any account (a shared one counts once)."""
        ids = {i for ids in self.customers_of(account_id).values() for i in ids}
        return len(ids)

    def links(self, account_id: str) -> dict[str, str]:
        with StateStore.open(self.db_url) as store:
            return {
                ba: ln.customer_id
                for ba in ("eu", "uk", "us")
                if (ln := store.links.get(ba, account_id)) is not None and ln.status == "active"
            }

    def stop(self) -> None:
        self.sf.stop()
        self.stripe.stop()


@pytest.fixture
def unshared(tmp_path: Path, db_url: str) -> Iterator[World]:
    world = World(tmp_path, db_url, shared=False)
    try:
        yield world
    finally:
        world.stop()


@pytest.fixture
def shared(tmp_path: Path, db_url: str) -> Iterator[World]:
    world = World(tmp_path, db_url, shared=True)
    try:
        yield world
    finally:
        world.stop()


def test_orders_in_two_unshared_accounts_give_two_customers_and_two_links_stable_over_ten_runs(
    unshared: World,
) -> None:
    first = unshared.run("backfill")
    assert first.billing_accounts["eu"]["created"] == 3  # Acme, Beta, Umbrella
    assert first.billing_accounts["us"]["created"] == 2  # Acme (by currency), Umbrella
    acme = unshared.customers_of(ACME)
    assert (len(acme[EU]), len(acme[UK]), len(acme[US])) == (1, 0, 1)
    links = unshared.links(ACME)
    assert links == {"eu": acme[EU][0], "us": acme[US][0]}
    assert unshared.links(BETA).keys() == {"eu"}
    writes = unshared.stripe.write_count
    for _ in range(10):
        report = unshared.run("sync")
        assert report.created == report.updated == report.failed == 0
        assert unshared.links(ACME) == links
    assert unshared.stripe.write_count == writes
    assert unshared.customers_of(ACME) == acme


def test_each_write_back_field_holds_its_own_accounts_customer(unshared: World) -> None:
    unshared.run("backfill")
    links = unshared.links(UMBRELLA)
    record = unshared.sf.get("Account", UMBRELLA)
    assert record is not None
    assert record[FIELDS["eu"]] == links["eu"] and record[FIELDS["uk"]] == links["uk"]
    assert record[FIELDS["us"]] == links["us"]
    assert len(set(links.values())) == 3  # unshared: three customers
    acme = unshared.sf.get("Account", ACME)
    assert acme is not None and acme[FIELDS["uk"]] is None  # no UK order, nothing written


def test_a_field_holding_another_customer_is_never_overwritten(unshared: World) -> None:
    unshared.sf.update("Account", BETA, {FIELDS["us"]: "cus_PutThereByHand01"})
    unshared.run("backfill")
    record = unshared.sf.get("Account", BETA)
    assert record is not None
    assert record[FIELDS["us"]] == "cus_PutThereByHand01"  # Beta has no US order: untouched
    assert record[FIELDS["eu"]] == unshared.links(BETA)["eu"]


def test_an_unroutable_order_is_refused_with_its_reason_and_nothing_is_created(unshared: World) -> None:
    report = unshared.run("backfill")
    assert report.refused == 1 and report.failed == 0 and report.exit_code == 1
    assert unshared.customers_made_for(NOWHERE) == 0 and unshared.links(NOWHERE) == {}
    with StateStore.open(unshared.db_url) as store:
        (outcome,) = [o for o in store.runs.outcomes_for_run(report.run_id) if o.account_id == NOWHERE]
    assert (outcome.outcome, outcome.error_code, outcome.order_id) == ("refused", "unroutable", "801000000000M07AAA")
    assert outcome.error_message is not None
    assert "Order.CurrencyIsoCode = 'CHF'" in outcome.error_message and "routing.default" in outcome.error_message


def test_a_change_of_routing_for_later_orders_adds_a_link_and_never_moves_one(unshared: World) -> None:
    unshared.run("backfill")
    before = unshared.links(BETA)
    assert before.keys() == {"eu"}
    unshared.sf.advance_clock(60)
    unshared.sf.create(
        "Order",
        {"AccountId": BETA, "Status": "Activated", "EffectiveDate": "2026-04-01", "CurrencyIsoCode": "USD"},
    )
    unshared.run("sync")
    after = unshared.links(BETA)
    assert after["eu"] == before["eu"] and after.keys() == {"eu", "us"}
    assert unshared.customers_made_for(BETA) == 2


def test_a_sharing_group_has_one_customer_used_from_both_accounts_written_once_per_change(
    shared: World,
) -> None:
    shared.run("backfill")
    umbrella = shared.customers_of(UMBRELLA)
    links = shared.links(UMBRELLA)
    # One customer in the group (seen from both members by the same id), one in the US.
    assert links["eu"] == links["uk"] != links["us"]
    assert umbrella[EU] == umbrella[UK] == [links["eu"]] and umbrella[US] == [links["us"]]
    assert shared.customers_made_for(UMBRELLA) == 2
    assert shared.stripe.stats()["customers_by_account"].get(UK, 0) == 0  # created in EU, its first order
    record = shared.sf.get("Account", UMBRELLA)
    assert record is not None and record[FIELDS["uk"]] == links["eu"] == record[FIELDS["eu"]]

    for _ in range(3):
        again = shared.run("sync")
        assert again.created == again.updated == 0
    assert shared.links(UMBRELLA) == links

    shared.sf.advance_clock(60)
    shared.sf.update("Account", UMBRELLA, {"Phone": "+44 20 7946 0999"})
    shared.stripe.exchanges.clear()
    report = shared.run("sync")
    posts = [e for e in shared.stripe.exchanges if e["method"] == "POST" and e["path"].startswith("/v1/customers/")]
    written = sorted(e["path"].rsplit("/", 1)[1] for e in posts)
    assert written == sorted([links["eu"], links["us"]])  # the shared customer once, the US one once
    assert report.created == 0
    assert shared.customers_made_for(UMBRELLA) == 2


def test_a_sigkill_between_two_accounts_writes_leaves_exactly_the_right_customers(unshared: World) -> None:
    # Every create in the US account is dropped before it is applied until the process is
    # killed: the European creates are done, the American ones not.
    fault = unshared.stripe.inject_fault(
        Fault(count=10_000, method="POST", path=r"^/v1/customers$", drop="before", header=("stripe-context", US))
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "backfill"],
        env=unshared.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert unshared.stripe.wait_until(lambda: fault.hits >= 1, timeout=120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    unshared.stripe.clear_faults()
    assert unshared.customers_made_for(ACME) == 1  # only Europe had been written

    report = unshared.run("backfill")
    assert report.failed == 0
    for account, accounts in ((ACME, {"eu", "us"}), (BETA, {"eu"}), (UMBRELLA, {"eu", "uk", "us"})):
        assert unshared.customers_made_for(account) == len(accounts)
        links = unshared.links(account)
        assert links.keys() == accounts
        seen = unshared.customers_of(account)
        for ba, acct in (("eu", EU), ("uk", UK), ("us", US)):
            assert seen[acct] == ([links[ba]] if ba in accounts else [])


def test_a_group_formed_after_customers_exist_opens_a_conflict_and_writes_to_neither(unshared: World) -> None:
    unshared.run("backfill")
    separate = unshared.links(UMBRELLA)
    assert separate["eu"] != separate["uk"]
    # The accounts join a sharing group in Stripe, and the admin says so in config.
    unshared.stripe.directory.add_sharing_group([EU, UK])
    unshared.write_config(groups=[["eu", "uk"]])
    unshared.sf.advance_clock(60)
    unshared.sf.update("Account", UMBRELLA, {"Phone": "+44 20 7946 0123"})
    unshared.stripe.exchanges.clear()

    report = unshared.run("sync")

    posts = [e["path"] for e in unshared.stripe.exchanges if e["method"] == "POST"]
    assert f"/v1/customers/{separate['eu']}" not in posts and f"/v1/customers/{separate['uk']}" not in posts
    assert f"/v1/customers/{separate['us']}" in posts  # outside the group: written as usual
    assert report.created == 0 and report.refused >= 1
    assert unshared.links(UMBRELLA) == separate
    listed = subprocess.run(
        [sys.executable, "-m", "connector", "conflicts", "list", "--json"],
        env=unshared.env(), capture_output=True, text=True, timeout=300,
    )
    assert listed.returncode == 0, listed.stderr
    (conflict,) = [c for c in json.loads(listed.stdout) if c["account_id"] == UMBRELLA]
    assert conflict["kind"] == "shared_group_separate_customers"
    assert conflict["details"]["customers"] == {"eu": separate["eu"], "uk": separate["uk"]}
    assert "sharing group" in conflict["details"]["message"] and conflict["choices"]

    again = unshared.run("sync")  # still held: nothing written
    assert again.created == 0 and unshared.links(UMBRELLA) == separate

    resolved = subprocess.run(
        [sys.executable, "-m", "connector", "conflicts", "resolve", str(conflict["id"]), "--link", separate["eu"]],
        env=unshared.env(), capture_output=True, text=True, timeout=300,
    )
    assert resolved.returncode == 0, resolved.stderr
    unshared.stripe.exchanges.clear()
    unshared.run("sync")
    assert unshared.links(UMBRELLA) == {"eu": separate["eu"], "uk": separate["eu"], "us": separate["us"]}
    # Nothing merged or deleted: the UK customer still exists, untouched.
    assert unshared.stripe.get_customer(separate["uk"], account=UK) is not None
    assert all(
        not e["path"].endswith(separate["uk"]) for e in unshared.stripe.exchanges if e["method"] in ("POST", "DELETE")
    )


def cli(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args], env=world.env(), capture_output=True, text=True, timeout=300
    )


def test_sync_and_backfill_run_one_billing_account_with_a_cursor_of_its_own(unshared: World) -> None:

    only = cli(unshared, "backfill", "--account", "us", "--json")
    assert only.returncode == 1, only.stderr  # Nowhere's order is refused: it routes nowhere
    report = json.loads(only.stdout)
    assert set(report["billing_accounts"]) == {"us"} and report["billing_accounts"]["us"]["created"] == 2
    assert unshared.customers_made_for(BETA) == 0  # Beta bills in Europe only
    with StateStore.open(unshared.db_url) as store:
        # The shared cursor stays where the other accounts are: nothing was applied for them.
        assert store.cursors.get(ORDERS_CURSOR) is None
        assert store.cursors.get(f"{ORDERS_CURSOR}@us")
    synced = cli(unshared, "sync", "--account", "us", "--json")
    assert json.loads(synced.stdout)["billing_accounts"]["us"]["created"] == 0
    full = cli(unshared, "sync", "--json")
    counts = json.loads(full.stdout)["billing_accounts"]
    assert counts["eu"]["created"] == 3 and counts["uk"]["created"] == 1 and counts["us"]["created"] == 0
    bad = cli(unshared, "sync", "--account", "apac")
    assert bad.returncode == 2 and "--account apac" in bad.stderr and "eu, uk, us" in bad.stderr


def test_xref_show_and_status_break_down_per_billing_account(shared: World) -> None:
    shared.run("backfill")
    shown = cli(shared, "xref", "show", UMBRELLA, "--json")
    assert shown.returncode == 0, shown.stderr
    per = {b["billing_account"]: b for b in json.loads(shown.stdout)["billing_accounts"]}
    links = shared.links(UMBRELLA)
    assert {ba: b["customer_id"] for ba, b in per.items()} == links
    assert per["eu"]["customer_id"] == per["uk"]["customer_id"]
    assert (per["eu"]["created_in"], per["eu"]["used_from"]) == ("eu", ["eu", "uk"])
    assert per["uk"]["sharing_group"] == "eu+uk" and per["us"]["created_in"] is None
    status = cli(shared, "status", "--json")
    assert status.returncode == 0, status.stderr
    by_account = json.loads(status.stdout)["billing_accounts"]
    assert by_account["eu"]["links"] == {"active": 3}
    assert by_account["uk"]["links"] == {"active": 1} and by_account["us"]["links"] == {"active": 2}


def test_the_demo_gives_umbrella_one_shared_customer_and_one_separate_and_prints_its_links(tmp_path: Path) -> None:
    import io
    import re

    from rich.console import Console

    from connector.sandbox.run import run_demo

    console = Console(file=io.StringIO(), width=200, record=True)
    code = run_demo(tmp_path / "demo", console=console)
    text = console.export_text()
    assert code == 0, text
    rows = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(r"│ (europe|uk|us)\s+│ acct_\w+\s+│ (cus_\w+)\s+│ (\w+)\s+│", text)
    }
    assert set(rows) == {"europe", "uk", "us"}
    assert rows["europe"] == rows["uk"] == (rows["europe"][0], "europe")
    assert rows["us"][0] != rows["europe"][0] and rows["us"][1] == "us"


def test_an_account_with_a_mapping_folder_of_its_own_is_written_with_it(unshared: World, tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    (folder / "us").mkdir(parents=True)
    text = (MAPPINGS / "customer.yaml").read_text()
    (folder / "customer.yaml").write_text(text)
    (folder / "us" / "customer.yaml").write_text(text + "  metadata.entity:\n    value: Umbrella US Inc\n")
    data = yaml.safe_load(unshared.config_path.read_text())
    data["mappings_dir"] = str(folder)
    unshared.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    unshared.run("backfill")
    links = unshared.links(ACME)
    us = unshared.stripe.get_customer(links["us"], account=US)
    eu = unshared.stripe.get_customer(links["eu"], account=EU)
    assert us is not None and eu is not None
    assert us["metadata"].get("entity") == "Umbrella US Inc" and "entity" not in eu["metadata"]
    again = unshared.run("sync")
    assert again.created == again.updated == 0  # each account's links carry its own fingerprint


def test_running_one_member_of_a_sharing_group_runs_its_group(shared: World) -> None:
    result = cli(shared, "backfill", "--account", "uk", "--json")
    report = json.loads(result.stdout)
    assert set(report["billing_accounts"]) == {"eu", "uk"}
    links = shared.links(UMBRELLA)
    assert links.keys() == {"eu", "uk"} and links["eu"] == links["uk"]
    assert shared.customers_of(UMBRELLA)[US] == []


def test_the_daemon_routes_each_partitions_orders_to_its_own_account(unshared: World) -> None:
    from connector.daemon import Daemon

    secrets = SecretSource({"SALESFORCE_ACCESS_TOKEN": SANDBOX_TOKEN, "STRIPE_ORG_KEY": ORG_KEY})
    with Daemon(unshared.config, secrets) as daemon:
        result = daemon.tick()
    assert set(result.reports) == {"eu", "uk", "us"}
    assert unshared.links(BETA).keys() == {"eu"}  # Beta bills in Europe only
    assert unshared.customers_of(BETA)[US] == [] and unshared.customers_of(BETA)[UK] == []
    assert unshared.customers_made_for(NOWHERE) == 0  # its order routes nowhere


def test_the_daemon_runs_a_sharing_group_as_one_partition_with_one_shared_customer(
    shared: World,
) -> None:
    from connector.daemon import Daemon

    secrets = SecretSource({"SALESFORCE_ACCESS_TOKEN": SANDBOX_TOKEN, "STRIPE_ORG_KEY": ORG_KEY})
    with Daemon(shared.config, secrets) as daemon:
        assert daemon.partition_names == ["eu+uk", "us"]
        result = daemon.tick()
        assert result.held == {"eu+uk", "us"}
        group = result.reports["eu+uk"]
        assert set(group.billing_accounts) == {"eu", "uk"}  # one run, one lock, both members
        links = shared.links(UMBRELLA)
        assert links["eu"] == links["uk"] != links["us"]
        assert shared.customers_of(UMBRELLA) == {EU: [links["eu"]], UK: [links["eu"]], US: [links["us"]]}
        assert shared.customers_made_for(UMBRELLA) == 2  # one for the group, one in the US
        assert shared.stripe.stats()["customers_by_account"].get(UK, 0) == 0  # created once, in EU
        again = daemon.tick()
    assert all(r.created == r.updated == 0 for r in again.reports.values())
    assert shared.links(UMBRELLA) == links
    with StateStore.open(shared.db_url) as store:
        # Several partitions: the group's cursors are its own, named as `sync --account` names them.
        assert store.cursors.get(f"{ORDERS_CURSOR}@eu+uk") and store.cursors.get(f"{ORDERS_CURSOR}@us")
        assert store.cursors.get(f"{ORDERS_CURSOR}@eu") is None


def test_a_group_formed_later_starts_its_partition_at_its_least_advanced_members_cursor(
    unshared: World,
) -> None:
    from connector.daemon import Daemon

    secrets = SecretSource({"SALESFORCE_ACCESS_TOKEN": SANDBOX_TOKEN, "STRIPE_ORG_KEY": ORG_KEY})
    # Umbrella without its UK order: nobody has two customers when the group forms.
    unshared.sf.delete("Order", "801000000000M05AAA")
    with Daemon(unshared.config, secrets) as daemon:
        assert set(daemon.tick().reports) == {"eu", "uk", "us"}
    with StateStore.open(unshared.db_url) as store:
        uk_cursor = store.cursors.get(f"{ORDERS_CURSOR}@uk")
    # A UK order for Acme after the UK partition's last run; then only the EU partition runs
    # (its cursor passes the order, which is not Europe's), the UK one not.
    unshared.sf.advance_clock(600)
    unshared.sf.create(
        "Order",
        {"AccountId": ACME, "Status": "Activated", "EffectiveDate": "2026-04-01",
         "CurrencyIsoCode": "GBP", "Stripe_Account__c": LOOKUP[UK]},
    )
    unshared.sf.advance_clock(600)
    assert cli(unshared, "sync", "--account", "eu").returncode in (0, 1)
    with StateStore.open(unshared.db_url) as store:
        eu_cursor = store.cursors.get(f"{ORDERS_CURSOR}@eu")
        assert store.cursors.get(f"{ORDERS_CURSOR}@uk") == uk_cursor
    assert uk_cursor and eu_cursor and uk_cursor < eu_cursor
    assert unshared.links(ACME).keys() == {"eu", "us"}
    # The two accounts join a sharing group: the daemon now runs them as one partition.
    unshared.stripe.directory.add_sharing_group([EU, UK])
    unshared.write_config(groups=[["eu", "uk"]])
    with Daemon(unshared.config, secrets) as daemon:
        result = daemon.tick()
    assert set(result.reports) == {"eu+uk", "us"}
    # Read from the UK cursor, not the European one: the order is found, and Acme's group
    # customer (created in Europe) is used from the UK too, never a second customer.
    links = unshared.links(ACME)
    assert links["uk"] == links["eu"] and unshared.customers_made_for(ACME) == 2
    assert result.reports["eu+uk"].created == 0
    with StateStore.open(unshared.db_url) as store:
        assert (store.cursors.get(f"{ORDERS_CURSOR}@eu+uk") or "") >= eu_cursor


def test_account_takes_only_the_lock_of_its_own_partition(unshared: World) -> None:
    from connector.partitions import Partition

    # A daemon replica runs Europe's partition: the US one can run beside it, Europe not.
    with (
        StateStore.open(unshared.db_url) as store,
        store.locks.hold(Partition("eu").lock_name, holder="replica-a:4242"),
    ):
        us = cli(unshared, "sync", "--account", "us", "--json")
        eu = cli(unshared, "sync", "--account", "eu", "--json")
    assert us.returncode == 1, us.stderr  # ran: Nowhere's order is refused, it routes nowhere
    assert json.loads(us.stdout)["billing_accounts"]["us"]["created"] == 2
    assert eu.returncode == 3 and "replica-a:4242" in eu.stderr
    assert unshared.links(ACME).keys() == {"us"}


def test_account_takes_the_lock_of_the_sharing_group_holding_that_account(shared: World) -> None:
    from connector.partitions import Partition

    # A daemon replica runs the group's partition: `--account us` runs beside it, while
    # `--account uk` (in the group) is refused naming the replica.
    group = Partition("eu+uk", ("eu", "uk"))
    with (
        StateStore.open(shared.db_url) as store,
        store.locks.hold(group.lock_name, holder="replica-a:4242"),
    ):
        us = cli(shared, "sync", "--account", "us", "--json")
        uk = cli(shared, "sync", "--account", "uk", "--json")
    assert us.returncode == 1, us.stderr  # ran: Nowhere's order is refused, it routes nowhere
    assert json.loads(us.stdout)["billing_accounts"]["us"]["created"] == 2
    assert uk.returncode == 3 and "replica-a:4242" in uk.stderr
    assert shared.customers_of(UMBRELLA)[EU] == [] and shared.links(UMBRELLA).keys() == {"us"}
