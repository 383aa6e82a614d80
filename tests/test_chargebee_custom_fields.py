"""Chargebee custom fields (`cf_*`) from a mapping reach the customer through the real SDK: sent
on create, sent again only when they change, and read back through the port."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from billing_targets import TargetUnderTest

from connector.config import Config
from connector.engine import RunReport
from connector.mapping import check_mappings
from connector.sandbox.run import SandboxPair

ACME = "001000000000A01AAA"

pytestmark = pytest.mark.parametrize("target", ["chargebee"], indirect=True)


@pytest.fixture
def custom_mapping(target: TargetUnderTest, tmp_path: Path) -> Path:
    folder = tmp_path / "mappings"
    shutil.copytree(target.mappings_dir, folder)
    with (folder / "customer.yaml").open("a", encoding="utf-8") as f:
        f.write("\n  cf_account_note:\n    from: Account.Description\n    transforms: [trim]\n")
    assert [p for p in check_mappings(folder) if p.severity == "error"] == []
    return folder


def test_custom_fields_are_sent_on_create_and_again_only_when_they_change(
    sandboxes: SandboxPair,
    target: TargetUnderTest,
    target_run: Callable[..., RunReport],
    target_config: Callable[..., Config],
    custom_mapping: Path,
    billed: Callable[[], dict[str, list]],
) -> None:
    config = target_config(mappings_dir=str(custom_mapping))

    assert target_run("backfill", config=config).exit_code == 0
    [acme] = billed()[ACME]
    assert acme.payload["cf_account_note"] == "Key account"

    sandboxes.salesforce.update("Account", ACME, {"Description": "Strategic account"})
    writes = target.writes
    changed = target_run("sync", config=config)

    assert changed.updated == 1 and target.writes == writes + 1
    update = [e for e in target.server.exchanges if e["method"] == "POST"][-1]  # type: ignore[union-attr]
    assert update["path"] == f"/api/v2/customers/{acme.id}"
    assert dict(update["form"]) == {"cf_account_note": "Strategic account"}
    assert billed()[ACME][0].payload["cf_account_note"] == "Strategic account"
    again = target_run("sync", config=config)
    assert again.billing_calls == 0 and target.writes == writes + 1
