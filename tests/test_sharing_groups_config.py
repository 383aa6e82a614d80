"""Sharing groups in config (billing.sharing_groups) and the mappings of their members: an
account belongs to one group, a group's accounts may share one write-back field (they share one
customer id), and `mappings check` refuses a group whose members' mappings disagree on a field
the group shares at the pinned API version."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import MAPPINGS

from connector.app import check_group_mappings, sharing_groups
from connector.config import load_config
from connector.errors import ConfigError

SF = {"auth": "access_token", "instance_url": "http://127.0.0.1:1"}
ACCOUNTS = [
    {"name": "eu", "api_key_env": "ORG_KEY", "stripe_context": "acct_1Eu", "writeback_field": "Stripe_Customer_Id__c"},
    {"name": "uk", "api_key_env": "ORG_KEY", "stripe_context": "acct_1Uk"},
    {"name": "us", "api_key_env": "ORG_KEY", "stripe_context": "acct_1Us", "writeback_field": "Stripe_US_Id__c"},
]


def write(tmp_path: Path, billing: dict[str, Any], mappings: Path = MAPPINGS) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump({"salesforce": SF, "billing": billing, "mappings_dir": str(mappings)}, sort_keys=False),
        encoding="utf-8",
    )
    return path


def test_a_group_is_a_list_of_accounts_or_names_its_primary(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, {"accounts": ACCOUNTS, "sharing_groups": [["eu", "uk"]]}))
    assert cfg.billing.sharing_groups[0].accounts == ("eu", "uk")
    assert cfg.billing.group_of("uk") is cfg.billing.sharing_groups[0]
    assert cfg.billing.group_of("us") is None
    cfg = load_config(
        write(tmp_path, {"accounts": ACCOUNTS, "sharing_groups": [{"name": "europe", "accounts": ["eu", "uk"], "primary": "uk"}]})
    )
    assert (cfg.billing.sharing_groups[0].label, cfg.billing.sharing_groups[0].primary) == ("europe", "uk")


def test_what_a_group_shares_follows_the_pinned_api_version(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, {"accounts": ACCOUNTS, "sharing_groups": [["eu", "uk"]]}))
    ((label, members, shared),) = sharing_groups(cfg)
    assert (label, members) == ("eu+uk", ("eu", "uk"))
    assert {"metadata", "description", "shipping", "tax_ids", "name", "address"} <= shared
    older = [dict(a, stripe_version="2025-06-30.basil") if a["name"] == "uk" else a for a in ACCOUNTS]
    cfg = load_config(write(tmp_path, {"accounts": older, "sharing_groups": [["eu", "uk"]]}))
    ((_, _, shared),) = sharing_groups(cfg)
    assert shared == {"name", "email", "phone", "address"}  # what both versions share


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([["eu", "apac"]], "'apac' is not in billing.accounts"),
        ([["eu", "uk"], ["uk", "us"]], "two sharing groups"),
        ([["eu"]], "at least 2"),
        ([{"accounts": ["eu", "uk"], "primary": "us"}], "primary 'us' is not one of"),
    ],
)
def test_a_bad_group_is_refused_with_file_and_line(tmp_path: Path, groups: list[Any], message: str) -> None:
    path = write(tmp_path, {"accounts": ACCOUNTS, "sharing_groups": groups})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert caught.value.file == path and caught.value.line is not None


def test_only_accounts_of_one_group_may_share_a_write_back_field(tmp_path: Path) -> None:
    same = [dict(a, writeback_field="Stripe_Customer_Id__c") if a["name"] == "uk" else a for a in ACCOUNTS]
    cfg = load_config(write(tmp_path, {"accounts": same, "sharing_groups": [["eu", "uk"]]}))
    assert cfg.billing.writeback_fields()["uk"] == "Stripe_Customer_Id__c"
    with pytest.raises(ConfigError, match="same Account field"):
        load_config(write(tmp_path, {"accounts": same}))
    across = [dict(a, writeback_field="Stripe_Customer_Id__c") if a["name"] == "us" else a for a in ACCOUNTS]
    with pytest.raises(ConfigError, match="same Account field"):
        load_config(write(tmp_path, {"accounts": across, "sharing_groups": [["eu", "uk"]]}))


def _mappings(tmp_path: Path, uk_extra: str) -> Path:
    folder = tmp_path / "mappings"
    (folder / "uk").mkdir(parents=True)
    text = (MAPPINGS / "customer.yaml").read_text()
    (folder / "customer.yaml").write_text(text)
    (folder / "uk" / "customer.yaml").write_text(text + uk_extra)
    return folder


def test_members_may_differ_on_fields_the_group_does_not_share(tmp_path: Path) -> None:
    folder = _mappings(tmp_path, "  invoice_settings.footer:\n    value: Registered in England\n")
    cfg = load_config(write(tmp_path, {"accounts": ACCOUNTS, "sharing_groups": [["eu", "uk"]]}, folder))
    assert check_group_mappings(cfg) == []


def test_a_group_whose_members_map_a_shared_field_differently_is_refused(tmp_path: Path) -> None:
    folder = _mappings(tmp_path, "  metadata.entity:\n    value: Umbrella UK Ltd\n")
    path = write(tmp_path, {"accounts": ACCOUNTS, "sharing_groups": [["eu", "uk"]]}, folder)
    (problem,) = check_group_mappings(load_config(path))
    uk_file = folder / "uk" / "customer.yaml"
    line = next(i for i, ln in enumerate(uk_file.read_text().splitlines(), 1) if "metadata.entity:" in ln)
    assert (problem.file, problem.line) == (uk_file, line)
    assert "metadata.entity" in problem.message and "'eu'" in problem.message and "'uk'" in problem.message

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "STRIPE_"))}
    result = subprocess.run(
        [sys.executable, "-m", "connector", "mappings", "check", "--config", str(path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 2
    assert f"{uk_file}:{line}:" in result.stderr and "sharing group eu+uk" in result.stderr
