"""Billing accounts in config.yaml: each names its kind (a registered target) and the Account
field that receives its customer id (or none); the one-Stripe-account settings of the previous
release still load, with a deprecation note; a key in a comment is refused like one in a value;
the Salesforce source reads every write-back field; the run report counts per billing account."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fault_readback import cli, requests_seen
from simple_salesforce.api import Salesforce

from connector.app import open_pipeline
from connector.config import Config, SecretSource, load_config
from connector.engine import RunReport
from connector.errors import ConfigError
from connector.salesforce import connect
from connector.sandbox.run import SANDBOX_ORG_ID, SANDBOX_TOKEN, SandboxPair
from connector.sandbox.salesforce import SalesforceSandbox
from connector.sandbox.stripe import StripeSandbox

SF = {"auth": "access_token", "instance_url": "http://127.0.0.1:1"}


def write(tmp_path: Path, data: dict[str, Any], extra: str = "") -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False) + extra, encoding="utf-8")
    return cfg


def test_an_account_names_its_kind_and_write_back_field(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            {
                "salesforce": SF,
                "billing": {
                    "accounts": [
                        {"name": "us", "kind": "stripe", "writeback_field": "Stripe_US_Id__c"},
                        {"name": "eu", "kind": "stripe", "api_key_env": "STRIPE_EU_KEY"},
                        {"name": "org", "writeback_field": None},
                    ]
                },
            },
        )
    )
    accounts = cfg.billing.accounts
    assert [a.name for a in accounts] == ["us", "eu", "org"]
    assert [a.kind for a in accounts] == ["stripe"] * 3
    # Only accounts that name a field write back; unnamed after the first means none.
    assert cfg.billing.writeback_fields() == {"us": "Stripe_US_Id__c"}
    assert cfg.deprecations == ()


def test_without_a_billing_section_the_first_account_writes_to_the_usual_field(
    tmp_path: Path,
) -> None:
    cfg = load_config(write(tmp_path, {"salesforce": SF}))
    assert cfg.billing.writeback_fields() == {"default": "Stripe_Customer_Id__c"}


def test_the_previous_releases_id_field_is_the_first_accounts_with_a_deprecation_note(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        {
            "salesforce": {**SF, "stripe_id_field": "Billing_Id__c"},
            "billing": {"target": "stripe", "accounts": [{"id": "default"}, {"id": "b"}]},
        },
    )
    cfg = load_config(path)
    assert cfg.billing.writeback_fields() == {"default": "Billing_Id__c"}
    lines = path.read_text().splitlines()
    field_line = next(i for i, ln in enumerate(lines, 1) if "stripe_id_field" in ln)
    target_line = next(i for i, ln in enumerate(lines, 1) if "target:" in ln)
    assert cfg.deprecations == (
        f"{path}:{field_line}: salesforce.stripe_id_field is deprecated and will be removed in "
        "the next release; set writeback_field on the billing account instead "
        "(billing.accounts[0].writeback_field)",
        f"{path}:{target_line}: billing.target is deprecated and will be removed in the next "
        "release; set kind on each billing account instead (billing.accounts[].kind)",
    )


def test_the_old_and_new_id_field_settings_must_agree(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="disagree"):
        load_config(
            write(
                tmp_path,
                {
                    "salesforce": {**SF, "stripe_id_field": "A__c"},
                    "billing": {"accounts": [{"id": "x", "writeback_field": "B__c"}]},
                },
            )
        )


@pytest.mark.parametrize(
    ("account", "says"),
    [
        ({"name": "x", "kind": "chargebeee"}, "unknown kind 'chargebeee'; known: chargebee, stripe"),
        ({"name": "x", "writeback_field": "Bad Field"}, "String should match pattern"),
    ],
)
def test_a_bad_account_names_file_line_and_key(
    tmp_path: Path, account: dict[str, Any], says: str
) -> None:
    path = write(tmp_path, {"salesforce": SF, "billing": {"accounts": [account]}})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert says in str(caught.value) and str(caught.value).startswith(f"{path}:")
    assert caught.value.key is not None and caught.value.key.startswith("billing.accounts.0.")


def test_two_accounts_cannot_write_to_one_field(tmp_path: Path) -> None:
    accounts = [{"name": "a", "writeback_field": "X__c"}, {"name": "b", "writeback_field": "x__C"}]
    with pytest.raises(ConfigError, match="same Account field"):
        load_config(write(tmp_path, {"salesforce": SF, "billing": {"accounts": accounts}}))


@pytest.mark.parametrize(
    "comment",
    [
        "# old key, do not use: sk_live_FAKEfake0000FAKEfake\n",
        "  # api_key: rk_test_FAKEfake0000FAKEfake\n",
        "# sk_org_live_FAKEfake0000FAKEfake\n",
    ],
)
def test_a_key_in_a_comment_is_refused_naming_its_line(tmp_path: Path, comment: str) -> None:
    path = write(tmp_path, {"salesforce": SF}, extra=comment)
    line = len(path.read_text().splitlines())
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.exit_code == 2 and caught.value.line == line
    assert "STRIPE_API_KEY" in str(caught.value) and str(caught.value).startswith(f"{path}:{line}:")
    assert "FAKEfake" not in str(caught.value)  # the error never repeats the secret


def test_a_key_in_a_comment_stops_the_command_with_exit_2_before_contacting_anything(
    tmp_path: Path,
) -> None:
    pair = SandboxPair(salesforce=SalesforceSandbox().start(), stripe=StripeSandbox().start())
    try:
        cfg = tmp_path / "config.yaml"
        state = tmp_path / "state.db"
        cfg.write_text(
            pair.config_snippet(state_url=f"sqlite:///{state}", mappings_dir="mappings")
            + "# STRIPE_API_KEY=sk_live_FAKEfake0000FAKEfake\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "STRIPE_"))}
        env.update(pair.secrets(), BILLING_CONNECTOR_CONFIG=str(cfg))
        line = len(cfg.read_text().splitlines())

        result = cli("sync", env=env)

        assert result.returncode == 2, result.stderr
        assert f"{cfg}:{line}:" in result.stderr
        assert requests_seen(pair) == 0 and not state.exists()
    finally:
        pair.stop()


def test_the_source_reads_every_write_back_field_into_the_row() -> None:
    acme = "001000000000A01AAA"
    org = {
        "Account": [{"Id": acme, "Name": "Acme", "Billing_Id__c": " cus_1 "}],
        "Order": [
            {
                "Id": "801000000000O01AAA",
                "AccountId": acme,
                "Status": "Activated",
                "EffectiveDate": "2026-01-05",
                "ActivatedDate": "2026-01-05T10:00:00.000+0000",
            }
        ],
    }
    with SalesforceSandbox(
        org, access_token=SANDBOX_TOKEN, org_id=SANDBOX_ORG_ID, stripe_id_field="Billing_Id__c"
    ) as sb:
        cfg = Config.model_validate(
            {
                "salesforce": {"auth": "access_token", "instance_url": sb.url},
                "billing": {"accounts": [{"name": "us", "writeback_field": "Billing_Id__c"}]},
            }
        )
        source = connect(
            cfg.salesforce,
            SecretSource({"SALESFORCE_ACCESS_TOKEN": SANDBOX_TOKEN}),
            writeback_fields=cfg.billing.writeback_fields(),
        )
        rows = [r for page in source.activated_orders(["Account.Name"]) for r in page.rows]
    assert isinstance(source.sf, Salesforce)
    assert [dict(r.writeback_values) for r in rows] == [{"Billing_Id__c": "cus_1"}]
    assert rows[0].writeback_value("Billing_Id__c") == "cus_1"


def test_the_json_report_counts_each_billing_account(
    sandboxes: SandboxPair,
    make_config: Callable[..., Config],
    secrets: SecretSource,
) -> None:
    second = StripeSandbox().start()
    try:
        cfg = make_config(
            billing={
                "accounts": [
                    {"name": "us", "kind": "stripe", "api_base": sandboxes.stripe.url},
                    {
                        "name": "eu",
                        "kind": "stripe",
                        "api_base": second.url,
                        "writeback_field": None,
                    },
                ]
            }
        )
        with open_pipeline(cfg, secrets) as p:
            report: RunReport = p.engine.run("sync")
    finally:
        second.stop()
    data = report.as_json()
    per = data["billing_accounts"]
    assert set(per) == {"us", "eu"}
    assert per["us"]["created"] == 3 and per["eu"]["created"] == 3
    assert per["us"]["calls"] + per["eu"]["calls"] == data["billing_calls"] == data["stripe_calls"]
    assert data["created"] == per["us"]["created"] + per["eu"]["created"]
    assert len(second.customers()) == 3 and len(sandboxes.stripe.customers()) == 3
