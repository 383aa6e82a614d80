"""Removing a field from the mapping (issue 12): a removed tag key is unset once on each customer
(sent empty), and no update that changes nothing is ever sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import BILLED, MAPPINGS

from connector.config import Config
from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

REGION = "  metadata.region:\n    value: EMEA\n"


def mapping_dir(tmp_path: Path, extra: str = "", drop: str | None = None) -> Path:
    folder = tmp_path / "mappings"
    folder.mkdir(exist_ok=True)
    text = (MAPPINGS / "customer.yaml").read_text()
    if drop:
        assert drop in text
        text = text.replace(drop, "")
    (folder / "customer.yaml").write_text(text + extra)
    return folder


def test_a_removed_tag_key_is_unset_once_and_then_nothing_is_sent(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Config], tmp_path: Path
) -> None:
    run_sync("backfill", config=make_config(mappings_dir=mapping_dir(tmp_path, REGION)))
    assert all(c["metadata"].get("region") == "EMEA" for c in sandboxes.stripe.customers())
    writes = sandboxes.stripe.write_count

    without = make_config(mappings_dir=mapping_dir(tmp_path))
    first = run_sync("sync", config=without)
    second = run_sync("sync", config=without)

    assert first.updated == len(BILLED) and sandboxes.stripe.write_count == writes + len(BILLED)
    assert all("region" not in c["metadata"] for c in sandboxes.stripe.customers())
    assert all(c["metadata"].get("salesforce_account_id") for c in sandboxes.stripe.customers())
    assert second.billing_calls == 0 and second.updated == 0


def test_removing_a_plain_field_sends_no_update(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Config], tmp_path: Path
) -> None:
    run_sync("backfill")
    writes = sandboxes.stripe.write_count

    # Stripe keeps what was written to a field the mapping stops naming: nothing to send.
    fewer = make_config(mappings_dir=mapping_dir(tmp_path, drop="  description:\n    from: Account.Description"))
    report = run_sync("sync", config=fewer)
    again = run_sync("sync", config=fewer)

    assert report.exit_code == 0 and report.updated == 0 and report.billing_calls == 0
    assert sandboxes.stripe.write_count == writes
    assert again.billing_calls == 0
