"""Chargebee billing accounts in config.yaml: a site, one business entity or several (each its
own billing account NAME.ENTITY that routing rules pick), customer sharing as an automatic
sharing group with an optional primary entity; Stripe's settings refused on a Chargebee account
and Chargebee's on a Stripe account, naming file, line and key; Stripe configs unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.app import build_targets, engine_groups
from connector.billing.chargebee import ChargebeeTarget
from connector.config import SecretSource, load_config
from connector.errors import ConfigError
from connector.sandbox.run import SANDBOX_CHARGEBEE_KEY

SF = {"auth": "access_token", "instance_url": "http://127.0.0.1:1"}
SECRETS = SecretSource({"CHARGEBEE_API_KEY": SANDBOX_CHARGEBEE_KEY, "STRIPE_API_KEY": "sk_test_x"})


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return cfg


def line_of(path: Path, text: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if text in ln)


def cb(**extra: Any) -> dict[str, Any]:
    return {"name": "cb", "kind": "chargebee", "site": "acme-test", **extra}


def test_shared_entities_become_entity_accounts_in_one_sharing_group(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            {
                "salesforce": SF,
                "billing": {
                    "accounts": [
                        cb(
                            business_entities=["acme-us", "acme-eu", "acme-uk"],
                            sharing="customer_sharing",
                            primary_entity="acme-eu",
                            writeback_field="Chargebee_Customer_Id__c",
                        )
                    ]
                },
                "routing": {
                    "rules": [
                        {
                            "field": "Order.CurrencyIsoCode",
                            "map": {"USD": "cb.acme-us", "EUR": "cb.acme-eu", "GBP": "cb.acme-uk"},
                        }
                    ]
                },
            },
        )
    )
    accounts = cfg.billing.accounts
    assert [(a.id, a.business_entity_id) for a in accounts] == [
        ("cb.acme-us", "acme-us"),
        ("cb.acme-eu", "acme-eu"),
        ("cb.acme-uk", "acme-uk"),
    ]
    (group,) = cfg.billing.sharing_groups
    assert group.label == "cb" and group.primary == "cb.acme-eu"
    assert group.accounts == ("cb.acme-us", "cb.acme-eu", "cb.acme-uk")
    # One shared customer id: every entity account writes it back to the same field.
    assert set(cfg.billing.writeback_fields().values()) == {"Chargebee_Customer_Id__c"}
    targets = build_targets(cfg, SECRETS)
    assert all(isinstance(t, ChargebeeTarget) for t in targets)
    settings = [t.settings for t in targets]  # type: ignore[attr-defined]
    assert [s.business_entity_id for s in settings] == ["acme-us", "acme-eu", "acme-uk"]
    assert all(s.customer_sharing and s.site == "acme-test" for s in settings)
    assert all(s.requests_per_minute == 150 for s in settings)  # a test site's limit
    (eg,) = engine_groups(cfg, targets)
    assert eg.members == group.accounts and eg.primary == "cb.acme-eu"
    # the daemon runs the site's shared entities together, as one partition
    from connector.partitions import partitions_of

    (partition,) = partitions_of(cfg)
    assert set(partition.accounts) == set(group.accounts)


def test_entities_without_sharing_are_separate_accounts_with_no_shared_field(
    tmp_path: Path,
) -> None:
    cfg = load_config(
        write(
            tmp_path,
            {
                "salesforce": SF,
                "billing": {
                    "accounts": [
                        cb(business_entities=["us", "eu"], requests_per_minute=900),
                    ]
                },
            },
        )
    )
    assert [a.id for a in cfg.billing.accounts] == ["cb.us", "cb.eu"]
    assert cfg.billing.sharing_groups == ()
    # a customer per entity: no one Account field can hold both ids
    assert cfg.billing.writeback_fields() == {}
    targets = build_targets(cfg, SECRETS)
    ids = {t.customer_id("00D000000000001EAA", "001000000000001AAA") for t in targets}  # type: ignore[attr-defined]
    assert len(ids) == 2  # entity-specific ids
    assert {t.settings.requests_per_minute for t in targets} == {900}  # type: ignore[attr-defined]


def test_one_entity_and_the_key_variable(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            {
                "salesforce": SF,
                "billing": {
                    "accounts": [
                        {"name": "stripe"},
                        cb(business_entity_id="acme-eu", api_key_env="CB_EU_API_KEY"),
                    ]
                },
            },
        )
    )
    assert [a.id for a in cfg.billing.accounts] == ["stripe", "cb"]
    secrets = SecretSource({"CB_EU_API_KEY": SANDBOX_CHARGEBEE_KEY, "STRIPE_API_KEY": "sk_test_x"})
    t = build_targets(cfg, secrets)[1]
    assert isinstance(t, ChargebeeTarget)
    assert t.settings.business_entity_id == "acme-eu" and t.settings.api_key_env == "CB_EU_API_KEY"


@pytest.mark.parametrize(
    ("account", "key", "words"),
    [
        (cb(stripe_version="2025-03-31.basil"), "stripe_version", "Stripe setting"),
        (cb(stripe_context="acct_1Abc"), "stripe_context", "Stripe setting"),
        (cb(stripe_account="acct_1Abc"), "stripe_account", "Stripe setting"),
        ({"name": "s", "site": "acme-test"}, "site", "Chargebee setting"),
        (
            {"name": "s", "kind": "stripe", "business_entities": ["us"]},
            "business_entities",
            "Chargebee setting",
        ),
        ({"name": "s", "sharing": "customer_sharing"}, "sharing", "Chargebee setting"),
        (
            {"name": "s", "requests_per_minute": 100},
            "requests_per_minute",
            "max_requests_per_second",
        ),
        (cb(business_entities=["us", "eu"], business_entity_id="us"), "accounts.0", "not both"),
        (cb(business_entities=["us", "us"]), "business_entities", "once"),
        (cb(business_entities=["u s"]), "business_entities", "letters, digits"),
        (cb(business_entity_id="x" * 51), "business_entity_id", "50"),
        (cb(business_entities=["us", "eu"], primary_entity="eu"), "accounts.0", "customer_sharing"),
        (
            cb(business_entities=["us"], sharing="customer_sharing", primary_entity="eu"),
            "accounts.0",
            "not one of",
        ),
    ],
)
def test_settings_of_the_other_kind_and_bad_entities_name_file_line_and_key(
    tmp_path: Path, account: dict[str, Any], key: str, words: str
) -> None:
    path = write(tmp_path, {"salesforce": SF, "billing": {"accounts": [account]}})
    with pytest.raises(ConfigError, match=words) as err:
        load_config(path)
    e = err.value
    assert e.file == path and e.key is not None and e.key.endswith(key)
    if not key.startswith("accounts"):
        assert e.line == line_of(path, key)


def test_routing_names_entity_accounts_not_the_site_account(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "salesforce": SF,
            "billing": {"accounts": [cb(business_entities=["us", "eu"], writeback_field=None)]},
            "routing": {
                "rules": [{"field": "Order.CurrencyIsoCode", "equals": "USD", "account": "cb"}]
            },
        },
    )
    with pytest.raises(
        ConfigError, match=r"'cb', which is not in billing.accounts \(cb.us, cb.eu\)"
    ):
        load_config(path)


def test_entities_without_sharing_refuse_one_writeback_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "salesforce": SF,
            "billing": {
                "accounts": [cb(business_entities=["us", "eu"], writeback_field="Cb_Id__c")]
            },
        },
    )
    with pytest.raises(ConfigError, match="cannot hold them all"):
        load_config(path)


def test_a_stripe_config_of_before_loads_unchanged(tmp_path: Path) -> None:
    data = {
        "salesforce": SF,
        "billing": {
            "accounts": [
                {"name": "us", "stripe_version": "2025-03-31.basil", "max_requests_per_second": 5},
                {"name": "eu", "kind": "stripe", "stripe_account": "acct_1Eu"},
            ],
            "sharing_groups": [["us", "eu"]],
        },
    }
    cfg = load_config(write(tmp_path, data))
    assert [a.id for a in cfg.billing.accounts] == ["us", "eu"]
    assert [g.accounts for g in cfg.billing.sharing_groups] == [("us", "eu")]
    assert all(a.site is None and a.business_entities is None for a in cfg.billing.accounts)


def test_mappings_check_accepts_the_shipped_chargebee_mapping_and_refuses_stripes(
    tmp_path: Path,
) -> None:
    from conftest import MAPPINGS
    from typer.testing import CliRunner

    from connector.cli import app

    account = cb(business_entities=["us", "eu"], sharing="customer_sharing")
    good = write(
        tmp_path,
        {
            "salesforce": SF,
            "billing": {"accounts": [account]},
            "mappings_dir": str(MAPPINGS / "chargebee"),
        },
    )
    ok = CliRunner().invoke(app, ["mappings", "check", "-c", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "ok (0 warning(s))" in ok.output
    other = tmp_path / "other"
    other.mkdir()
    wrong = write(
        other,
        {"salesforce": SF, "billing": {"accounts": [account]}, "mappings_dir": str(MAPPINGS)},
    )
    bad = CliRunner().invoke(app, ["mappings", "check", "-c", str(wrong)])
    assert bad.exit_code == 2
    assert (
        f"{MAPPINGS / 'customer.yaml'}:1:1: billing account 'cb.us' is of kind 'chargebee'"
        in bad.output
    )
    assert str(MAPPINGS / "chargebee") in bad.output


def test_the_example_configs_chargebee_account_loads_when_uncommented(tmp_path: Path) -> None:
    from conftest import REPO

    lines = (REPO / "config.example.yaml").read_text(encoding="utf-8").splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "# - name: chargebee")
    block = []
    for ln in lines[start:]:
        if not ln.startswith("    #"):
            break
        text = ln.replace("    # ", "    ", 1)
        if text.strip().startswith("#"):
            continue  # a comment inside the commented block
        block.append(text)
    path = tmp_path / "config.yaml"
    path.write_text(
        "salesforce: {auth: access_token, instance_url: 'http://127.0.0.1:1'}\n"
        "billing:\n  accounts:\n    - {name: default, kind: stripe}\n" + "\n".join(block) + "\n",
        encoding="utf-8",
    )
    cfg = load_config(path)
    assert [a.id for a in cfg.billing.accounts] == [
        "default",
        "chargebee.acme-us",
        "chargebee.acme-eu",
    ]
    (group,) = cfg.billing.sharing_groups
    assert group.primary == "chargebee.acme-us"


def test_entities_sharing_customers_must_map_every_field_alike(tmp_path: Path) -> None:
    import shutil

    from conftest import MAPPINGS
    from typer.testing import CliRunner

    from connector.cli import app

    folder = tmp_path / "mappings"
    shutil.copytree(MAPPINGS / "chargebee", folder)
    own = folder / "cb.eu"
    own.mkdir()
    text = (folder / "customer.yaml").read_text(encoding="utf-8")
    (own / "customer.yaml").write_text(
        text.replace(
            "    from: Account.Name\n    transforms: [trim]",
            "    from: Account.Name\n    transforms: [trim, upper]",
            1,
        ),
        encoding="utf-8",
    )
    account = cb(business_entities=["us", "eu"], sharing="customer_sharing")
    path = write(
        tmp_path,
        {"salesforce": SF, "billing": {"accounts": [account]}, "mappings_dir": str(folder)},
    )
    shared = CliRunner().invoke(app, ["mappings", "check", "-c", str(path)])
    assert shared.exit_code == 2, shared.output
    assert "sharing group cb" in shared.output and "company" in shared.output
    # without sharing each entity has its own customer: its own mapping is fine
    apart = tmp_path / "apart"
    apart.mkdir()
    path = write(
        apart,
        {
            "salesforce": SF,
            "billing": {"accounts": [cb(business_entities=["us", "eu"], writeback_field=None)]},
            "mappings_dir": str(folder),
        },
    )
    alone = CliRunner().invoke(app, ["mappings", "check", "-c", str(path)])
    assert alone.exit_code == 0, alone.output


def test_only_a_stripe_account_writes_back_to_stripes_field_unasked(tmp_path: Path) -> None:
    """Stripe_Customer_Id__c is the field Stripe's connector package adds: a Chargebee id
    written there unasked would mislead whoever reads it."""
    chargebee = load_config(write(tmp_path, {"salesforce": SF, "billing": {"accounts": [cb()]}}))
    assert chargebee.billing.accounts[0].writeback_field is None
    named = load_config(
        write(
            tmp_path,
            {
                "salesforce": SF,
                "billing": {"accounts": [cb(writeback_field="Chargebee_Customer_Id__c")]},
            },
        )
    )
    assert named.billing.accounts[0].writeback_field == "Chargebee_Customer_Id__c"
    stripe = load_config(
        write(tmp_path, {"salesforce": SF, "billing": {"accounts": [{"name": "s"}]}})
    )
    assert stripe.billing.accounts[0].writeback_field == "Stripe_Customer_Id__c"
