"""The `link` transform reads another account's link: when that link is created, the accounts
that read it are planned again in the same run, wherever they fell in the page order, and in a
later run when the parent gets its customer then. With `overlap_seconds: 0`, so nothing passes
by luck of a re-read window."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import MAPPINGS

from connector.config import Config
from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

ACME, INITECH, PARENT = "001000000000A01AAA", "001000000000A02AAA", "001000000000P01AAA"
LINK_FIELD = "  metadata.parent_customer:\n    from: Account.ParentId\n    transforms: [link]\n"


def link_mapping(tmp_path: Path) -> Path:
    folder = tmp_path / "mappings"
    folder.mkdir()
    (folder / "customer.yaml").write_text((MAPPINGS / "customer.yaml").read_text() + LINK_FIELD)
    return folder


def by_account(sandboxes: SandboxPair) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["salesforce_account_id"]: c for c in sandboxes.stripe.customers()}


def test_a_child_read_before_its_parent_gets_the_parents_customer_in_the_same_run(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Config], tmp_path: Path
) -> None:
    # Acme's Id sorts before Initech's: the child is read (and would be planned) first.
    sandboxes.salesforce.update("Account", ACME, {"ParentId": INITECH})
    cfg = make_config(mappings_dir=link_mapping(tmp_path), salesforce={"overlap_seconds": 0})

    first = run_sync("backfill", config=cfg)

    customers = by_account(sandboxes)
    assert first.exit_code == 0 and first.created == 3
    assert customers[ACME]["metadata"]["parent_customer"] == customers[INITECH]["id"]
    again = run_sync("sync", config=cfg)
    assert again.billing_calls == 0 and again.updated == 0


def test_a_parent_that_gets_its_customer_in_a_later_run_reaches_its_child_at_once(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Config], tmp_path: Path
) -> None:
    # The parent has no activated order yet: the child is synced without a parent customer.
    cfg = make_config(mappings_dir=link_mapping(tmp_path), salesforce={"overlap_seconds": 0})
    run_sync("backfill", config=cfg)
    run_sync("sync", config=cfg)  # reads what the write-back touched: the children are quiet now
    sandboxes.salesforce.advance_clock(3600)
    assert "parent_customer" not in by_account(sandboxes)[ACME]["metadata"]

    order = sandboxes.salesforce.create("Order", {"AccountId": PARENT, "Status": "Draft", "EffectiveDate": "2026-06-01"})
    sandboxes.salesforce.update("Order", order, {"Status": "Activated"})
    sandboxes.salesforce.advance_clock(3600)
    report = run_sync("sync", config=cfg)

    customers = by_account(sandboxes)
    assert report.created == 1 and report.updated == 2 and report.exit_code == 0
    # Both children of the parent (Acme and Initech) now name the parent's new customer.
    assert customers[ACME]["metadata"]["parent_customer"] == customers[PARENT]["id"]
    assert customers[INITECH]["metadata"]["parent_customer"] == customers[PARENT]["id"]
    quiet = [run_sync("sync", config=cfg) for _ in range(2)]
    assert [q.billing_calls for q in quiet] == [0, 0]
