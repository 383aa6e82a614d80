"""Routing orders to billing accounts: ordered rules, first match wins, then the default; an
order no rule takes, with no default, goes nowhere and says why. Rules are checked on load and
by `mappings check` (unknown account, a rule that can never match, and with --online a field
Salesforce does not let the integration user read). The fields rules test are read with every
order by the real Source, against the Salesforce sandbox.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import MAPPINGS
from pydantic import ValidationError

from connector.config import SecretSource, load_config
from connector.errors import ConfigError
from connector.routing import RoutingConfig, check_routing, route
from connector.salesforce import connect
from connector.sandbox.run import SANDBOX_ORG_ID, SANDBOX_TOKEN
from connector.sandbox.salesforce import SalesforceSandbox

EU_ACCT, UK_ACCT, US_ACCT = "acct_1SampleEurope0000", "acct_1SampleUK00000000", "acct_1SampleUS00000000"


def order(**fields: Any) -> dict[str, Any]:
    """An Order row as simple-salesforce returns it (relationships as nested records)."""
    account = fields.pop("Account", {})
    lookup = fields.pop("Stripe_Account__r", None)
    return {"Id": "801000000000X01AAA", "AccountId": "001000000000X01AAA", **fields,
            "Account": {"Id": "001000000000X01AAA", **account}, "Stripe_Account__r": lookup}


RULES = RoutingConfig.model_validate(
    {
        "rules": [
            {"field": "Order.Stripe_Account__r.Stripe_ID__c", "map": {EU_ACCT: "eu", UK_ACCT: "uk"}},
            {"field": "Order.CurrencyIsoCode", "in": ["USD", "CAD"], "account": "us"},
            {"field": "Account.BillingCountry", "equals": "Germany", "account": "eu"},
            {"field": "Order.Billing_Entity__c", "equals": "Umbrella UK Ltd", "account": "uk"},
        ]
    }
)


@pytest.mark.parametrize(
    ("row", "account", "rule"),
    [
        # Stripe's connector set-up: a lookup to a record holding the acct_ id, as one rule
        (order(Stripe_Account__r={"Stripe_ID__c": UK_ACCT}, CurrencyIsoCode="USD"), "uk", 0),
        # membership
        (order(CurrencyIsoCode="CAD"), "us", 1),
        # equality on a field of the order's account, compared as SOQL compares text
        (order(Account={"BillingCountry": " germany "}), "eu", 2),
        # a custom field of the order
        (order(Billing_Entity__c="Umbrella UK Ltd"), "uk", 3),
    ],
    ids=["lookup-record-acct-id", "currency-in", "account-country-equals", "custom-field"],
)
def test_each_kind_of_rule_routes_the_order(row: dict[str, Any], account: str, rule: int) -> None:
    decision = route(row, RULES)
    assert (decision.account, decision.rule) == (account, rule)
    assert f"rule {rule + 1}" in decision.reason


def test_the_first_matching_rule_wins() -> None:
    row = order(CurrencyIsoCode="USD", Account={"BillingCountry": "Germany"})
    assert route(row, RULES).account == "us"
    assert route(order(CurrencyIsoCode="EUR", Account={"BillingCountry": "Germany"}), RULES).account == "eu"


def test_an_order_no_rule_matches_goes_to_the_default() -> None:
    routing = RULES.model_copy(update={"default": "eu"})
    decision = route(order(CurrencyIsoCode="CHF"), routing)
    assert (decision.account, decision.rule) == ("eu", None)


def test_an_order_no_rule_matches_without_a_default_is_refused_with_the_values_read() -> None:
    decision = route(order(CurrencyIsoCode="CHF", Account={"BillingCountry": "Switzerland"}), RULES)
    assert decision.account is None
    assert "Order.CurrencyIsoCode = 'CHF'" in decision.reason
    assert "Account.BillingCountry = 'Switzerland'" in decision.reason
    assert "routing.default" in decision.reason


def test_an_empty_field_never_matches() -> None:
    routing = RoutingConfig.model_validate(
        {"rules": [{"field": "Order.Billing_Entity__c", "in": ["", "x"], "account": "a"}]}
    )
    assert route(order(Billing_Entity__c=None), routing).account is None
    assert route(order(Billing_Entity__c="  "), routing).account is None


def test_the_fields_rules_read_are_soql_paths_from_order_once_each() -> None:
    routing = RoutingConfig.model_validate(
        {
            "rules": [
                {"field": "Order.CurrencyIsoCode", "equals": "USD", "account": "us"},
                {"field": "Order.currencyisocode", "equals": "EUR", "account": "eu"},
                {"field": "Account.BillingCountry", "equals": "UK", "account": "uk"},
            ]
        }
    )
    assert routing.soql_fields() == ["CurrencyIsoCode", "Account.BillingCountry"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"field": "Order.CurrencyIsoCode", "account": "us"}, "exactly one of equals, in or map"),
        ({"field": "Order.CurrencyIsoCode", "equals": "USD", "in": ["CAD"], "account": "us"}, "has equals, in"),
        ({"field": "Order.CurrencyIsoCode", "equals": "USD"}, "account: NAME"),
        ({"field": "Order.X__c", "map": {"a": "us"}, "account": "us"}, "remove account"),
        ({"field": "Order.Stripe_Account__c.Stripe_ID__c", "map": {"a": "us"}}, "write Stripe_Account__r"),
        ({"field": "Contact.Email", "equals": "x", "account": "us"}, "must start with Order. or Account."),
    ],
)
def test_a_malformed_rule_is_refused_with_what_to_write(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RoutingConfig.model_validate({"rules": [rule]})
    assert message in str(caught.value)


def test_check_finds_unknown_accounts_and_rules_that_can_never_match() -> None:
    routing = RoutingConfig.model_validate(
        {
            "rules": [
                {"field": "Order.CurrencyIsoCode", "in": ["USD", "CAD"], "account": "us"},
                {"field": "Order.currencyisocode", "equals": " usd ", "account": "eu"},  # shadowed
                {"field": "Order.Stripe_Account__r.Stripe_ID__c", "map": {EU_ACCT: "europe"}},
                {"field": "Order.Billing_Entity__c", "in": [], "account": "uk"},
            ],
            "default": "apac",
        }
    )
    problems = check_routing(routing, ["eu", "uk", "us"])
    found = {(p.where, p.severity) for p in problems}
    assert found == {
        (("routing", "rules", 1), "error"),
        (("routing", "rules", 2, "map", EU_ACCT), "error"),
        (("routing", "rules", 3), "error"),
        (("routing", "default"), "error"),
    }
    text = "\n".join(p.message for p in problems)
    assert "'europe'" in text and "'apac'" in text and "can never match" in text


def test_check_with_describe_finds_unreadable_fields_and_impossible_picklist_values(tmp_path: Path) -> None:
    with SalesforceSandbox(access_token=SANDBOX_TOKEN, org_id=SANDBOX_ORG_ID) as sf:
        source = connect(
            load_config(_config(tmp_path, sf.url, {})).salesforce,
            SecretSource({"SALESFORCE_ACCESS_TOKEN": SANDBOX_TOKEN}),
        )
        routing = RoutingConfig.model_validate(
            {
                "rules": [
                    {"field": "Order.Stripe_Account__r.Stripe_ID__c", "map": {EU_ACCT: "eu"}},
                    {"field": "Order.CurrencyIsoCode", "in": ["CHF", "SEK"], "account": "eu"},
                    {"field": "Order.CurrencyIsoCode", "in": ["USD", "NOK"], "account": "us"},
                    {"field": "Order.Region__c", "equals": "EMEA", "account": "eu"},
                    {"field": "Order.Owner.Name", "equals": "x", "account": "us"},
                ]
            }
        )
        problems = check_routing(routing, ["eu", "us"], describe=source.describe)
    by_rule = {p.where[2]: (p.severity, p.message) for p in problems}
    assert set(by_rule) == {1, 2, 3, 4}
    assert by_rule[1][0] == "error" and "can never match" in by_rule[1][1]
    assert by_rule[2][0] == "warning" and "'nok'" in by_rule[2][1]
    assert by_rule[3][0] == "error" and "no field 'Region__c'" in by_rule[3][1]
    assert by_rule[4][0] == "error" and "no relationship 'Owner'" in by_rule[4][1]


def _config(tmp: Path, sf_url: str, extra: dict[str, Any], mappings: Path = MAPPINGS) -> Path:
    data: dict[str, Any] = {
        "salesforce": {"auth": "access_token", "instance_url": sf_url, "org_id": SANDBOX_ORG_ID},
        "billing": {
            "accounts": [
                {"name": "eu", "api_key_env": "EU_KEY", "writeback_field": "Stripe_Customer_Id__c"},
                {"name": "uk", "api_key_env": "UK_KEY"},
                {"name": "us", "api_key_env": "US_KEY"},
            ]
        },
        "mappings_dir": str(mappings),
        **extra,
    }
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_a_rule_naming_an_unknown_account_stops_the_config_with_file_and_line(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        "http://127.0.0.1:1",
        {"routing": {"rules": [{"field": "Order.CurrencyIsoCode", "equals": "JPY", "account": "apac"}]}},
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    line = next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if "account: apac" in ln)
    assert (caught.value.file, caught.value.line) == (path, line)
    assert caught.value.key == "routing.rules.0.account" and "'apac'" in str(caught.value)


def test_the_source_reads_every_field_the_rules_test_with_each_order(tmp_path: Path) -> None:
    org = {
        "Stripe_Account__c": [{"Id": "a0S000000000001AAA", "Name": "UK", "Stripe_ID__c": UK_ACCT}],
        "Account": [{"Id": "001000000000R01AAA", "Name": "Umbrella", "BillingCountry": "Germany"}],
        "Order": [
            {"Id": "801000000000R01AAA", "AccountId": "001000000000R01AAA", "Status": "Activated",
             "EffectiveDate": "2026-01-05", "CurrencyIsoCode": "GBP", "Stripe_Account__c": "a0S000000000001AAA",
             "Billing_Entity__c": "Umbrella UK Ltd"},
        ],
    }
    with SalesforceSandbox(org, access_token=SANDBOX_TOKEN, org_id=SANDBOX_ORG_ID) as sf:
        cfg = load_config(_config(tmp_path, sf.url, {"routing": {"rules": RULES.model_dump(by_alias=True)["rules"]}}))
        assert cfg.routing is not None
        source = connect(
            cfg.salesforce,
            SecretSource({"SALESFORCE_ACCESS_TOKEN": SANDBOX_TOKEN}),
            extra_fields=cfg.routing.soql_fields(),
        )
        # The mapping itself reads none of the routed fields.
        (page,) = list(source.activated_orders(["AccountId", "Account.Name"]))
    (row,) = page.rows
    assert route(row.record, cfg.routing).account == "uk"
    assert row.record["CurrencyIsoCode"] == "GBP"
    assert row.record["Billing_Entity__c"] == "Umbrella UK Ltd"
    assert row.record["Account"]["BillingCountry"] == "Germany"


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_mappings_check_reports_routing_and_per_account_folders(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    (mappings / "uk").mkdir(parents=True)
    (mappings / "apac").mkdir()
    text = (MAPPINGS / "customer.yaml").read_text()
    (mappings / "customer.yaml").write_text(text)
    (mappings / "uk" / "customer.yaml").write_text(text + "  metadata.entity:\n    from: Account.NoSuch Field\n")
    (mappings / "apac" / "customer.yaml").write_text(text)
    with SalesforceSandbox(access_token=SANDBOX_TOKEN, org_id=SANDBOX_ORG_ID) as sf:
        cfg = _config(
            tmp_path,
            sf.url,
            {"routing": {"rules": [{"field": "Order.Region__c", "equals": "EMEA", "account": "eu"}]}},
            mappings,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "STRIPE_"))}
        env["SALESFORCE_ACCESS_TOKEN"] = SANDBOX_TOKEN
        offline = _cli(["mappings", "check", "--config", str(cfg)], env)
        (mappings / "uk" / "customer.yaml").write_text(text)
        fixed = _cli(["mappings", "check", "--config", str(cfg)], env)
        online = _cli(["mappings", "check", "--config", str(cfg), "--online"], env)
    assert offline.returncode == 2
    assert f"{mappings / 'uk' / 'customer.yaml'}:" in offline.stderr
    assert "apac" in offline.stdout + offline.stderr  # a folder named for no billing account
    assert fixed.returncode == 0, fixed.stderr
    assert online.returncode == 2
    line = next(i for i, ln in enumerate(cfg.read_text().splitlines(), 1) if "Region__c" in ln)
    assert f"{cfg}:{line}:" in online.stderr and "no field 'Region__c'" in online.stderr

