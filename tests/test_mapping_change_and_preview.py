"""A changed mapping re-evaluates every linked account and updates exactly the customers whose
payload changed; preview and dry runs show what would be sent without writing anything."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import MAPPINGS

from connector.config import Config
from connector.engine import RunReport
from connector.sandbox.run import SandboxPair
from connector.state.store import StateStore

ACME, INITECH = "001000000000A01AAA", "001000000000A02AAA"


def mapping_copy(tmp_path: Path, extra: str = "", *, replace: tuple[str, str] | None = None) -> Path:
    folder = tmp_path / "mappings"
    folder.mkdir(parents=True, exist_ok=True)
    text = (MAPPINGS / "customer.yaml").read_text()
    if replace:
        assert replace[0] in text
        text = text.replace(replace[0], replace[1])
    (folder / "customer.yaml").write_text(text + extra)
    return folder


def test_a_changed_mapping_updates_exactly_the_customers_whose_payload_changed(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Config], tmp_path: Path,
    db_url: str,
) -> None:
    base = mapping_copy(tmp_path / "a", "")
    run_sync("backfill", config=make_config(mappings_dir=base))
    sandboxes.salesforce.advance_clock(3600)  # nothing in Salesforce changes from here on
    before = {c["id"]: c for c in sandboxes.stripe.customers()}

    # Spell out US states: only Acme (BillingState IL) has a payload that changes.
    state = "  address.state:\n    from: Account.BillingState\n    transforms: [trim]\n"
    changed = mapping_copy(tmp_path / "b", replace=(state, state.replace("[trim]", "[trim, {lookup: {map: {IL: Illinois}}}]")))
    report = run_sync("sync", config=make_config(mappings_dir=changed))

    assert report.updated == 1 and report.created == 0 and report.stripe_calls == 1
    assert report.orders_read == 4  # every activated order was evaluated again, not only changed ones
    after = {c["id"]: c for c in sandboxes.stripe.customers()}
    differing = [cid for cid in after if after[cid] != before[cid]]
    assert len(differing) == 1
    assert after[differing[0]]["address"]["state"] == "Illinois"
    assert after[differing[0]]["metadata"]["salesforce_account_id"] == ACME
    store = StateStore.open(db_url)
    try:
        fingerprints = {link.mapping_fingerprint for link in store.links.iter("default")}
    finally:
        store.close()
    assert len(fingerprints) == 1  # every link now carries the new mapping's fingerprint

    again = run_sync("sync", config=make_config(mappings_dir=changed))
    assert again.stripe_calls == 0


def test_a_mapping_change_that_touches_every_payload_rewrites_each_customer_once(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Config], tmp_path: Path,
) -> None:
    run_sync("backfill", config=make_config(mappings_dir=mapping_copy(tmp_path / "a", "")))
    writes = sandboxes.stripe.write_count

    changed = mapping_copy(tmp_path / "b", '  metadata.source:\n    value: "salesforce"\n')
    report = run_sync("sync", config=make_config(mappings_dir=changed))

    assert report.updated == 3 and sandboxes.stripe.write_count == writes + 3
    assert all(c["metadata"]["source"] == "salesforce" for c in sandboxes.stripe.customers())


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connector", *args], env=env, capture_output=True, text=True, timeout=120)


def test_preview_shows_the_payload_and_the_difference_from_stripe_and_writes_nothing(
    sandboxes: SandboxPair, cli_env: dict[str, str]
) -> None:
    assert _cli(["sync"], cli_env).returncode == 0
    sandboxes.salesforce.update("Account", ACME, {"Phone": "+1 217 555 0111"})
    writes, sf_state = sandboxes.stripe.write_count, sandboxes.salesforce.get("Account", ACME)

    result = _cli(["mappings", "preview", "--account", ACME, "--json"], cli_env)

    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    [entry] = data["billing_accounts"]
    assert entry["payload"]["phone"] == "+12175550111"
    assert entry["changes"] == {"phone": {"stripe": "+12175550100", "new": "+12175550111"}}
    assert sandboxes.stripe.write_count == writes
    assert sandboxes.salesforce.get("Account", ACME) == sf_state


def test_mappings_check_passes_on_the_shipped_mappings_and_fails_with_positions(tmp_path: Path, cli_env: dict[str, str]) -> None:
    ok = _cli(["mappings", "check", "--dir", str(MAPPINGS)], cli_env)
    broken = tmp_path / "m"
    broken.mkdir()
    (broken / "customer.yaml").write_text("target: customer\nfields:\n  name:\n    from: Account.Name\n"
                                          "  metadata.salesforce_account_id:\n    value: x\n")
    bad = _cli(["mappings", "check", "--dir", str(broken)], cli_env)

    assert ok.returncode == 0, ok.stderr
    assert bad.returncode == 2
    assert f"{broken / 'customer.yaml'}:5:3:" in bad.stderr


def test_conflicts_list_shows_the_choices_and_resolve_records_who(
    sandboxes: SandboxPair, cli_env: dict[str, str]
) -> None:
    assert _cli(["sync"], cli_env).returncode == 0
    sandboxes.salesforce.merge("001000000000D01AAA", [ACME])
    assert _cli(["sync"], cli_env).returncode == 1

    listed = _cli(["conflicts", "list"], cli_env)
    as_json = json.loads(_cli(["conflicts", "list", "--json"], cli_env).stdout)
    resolved = _cli(["conflicts", "resolve", str(as_json[0]["id"]), "--ignore", "--by", "alice"], cli_env)
    after = json.loads(_cli(["conflicts", "list", "--all", "--json"], cli_env).stdout)

    assert "merge_loser_linked" in listed.stdout and "conflicts resolve" in listed.stdout
    assert resolved.returncode == 0, resolved.stderr
    assert after[0]["status"] == "resolved" and after[0]["resolved_by"] == "alice"


def test_mappings_check_online_asks_salesforce_and_warns_about_formula_fields(
    sandboxes: SandboxPair, cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder = mapping_copy(tmp_path / "online", "  metadata.region:\n    from: Account.Region__c\n"
                                                "  metadata.tier:\n    from: Account.Tier__c\n")
    cfg = Path(cli_env["BILLING_CONNECTOR_CONFIG"])
    cfg.write_text("\n".join(f"mappings_dir: {folder}" if ln.startswith("mappings_dir:") else ln
                             for ln in cfg.read_text().splitlines()))

    offline = _cli(["mappings", "check"], cli_env)
    online = _cli(["mappings", "check", "--online"], cli_env)

    assert offline.returncode == 0, offline.stderr  # the file itself is well formed
    assert online.returncode == 2
    text = online.stdout + online.stderr
    lines = (folder / "customer.yaml").read_text().splitlines()
    # The added entries are the last ones (the shipped file mentions Region__c in a comment too).
    tier_line = max(i for i, ln in enumerate(lines, 1) if "from: Account.Tier__c" in ln)
    region_line = max(i for i, ln in enumerate(lines, 1) if "from: Account.Region__c" in ln)
    assert f"customer.yaml:{tier_line}:" in text and "Tier__c" in text
    assert f"customer.yaml:{region_line}:" in text and "formula" in text.lower()
    assert sandboxes.stripe.stats()["total"] == 0  # only Salesforce's describe was asked


def test_preview_by_order_uses_that_orders_contact(sandboxes: SandboxPair, cli_env: dict[str, str]) -> None:
    # The multi-order account: its older order's bill-to contact differs from the latest one's.
    result = _cli(["mappings", "preview", "--order", "801000000000O04AAA", "--json"], cli_env)

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["order_id"] == "801000000000O04AAA"
    assert data["billing_accounts"][0]["payload"]["email"] == "old@multi.example"
    assert data["billing_accounts"][0]["customer_id"] is None  # not linked yet: it would be created
    assert sandboxes.stripe.write_count == 0


def test_xref_show_and_link_for_support_work(sandboxes: SandboxPair, cli_env: dict[str, str]) -> None:
    assert _cli(["sync"], cli_env).returncode == 0
    spare = sandboxes.stripe.load({"customers": [{"id": "cus_SupportSpare01", "name": "Spare"}]})[0]

    shown = json.loads(_cli(["xref", "show", ACME, "--json"], cli_env).stdout)
    refused = _cli(["xref", "link", ACME, spare], cli_env)
    moved = _cli(["xref", "link", ACME, spare, "--force", "--by", "support@example.com"], cli_env)
    after = json.loads(_cli(["xref", "show", ACME, "--json"], cli_env).stdout)
    synced = _cli(["sync", "--json"], cli_env)

    [entry] = shown["billing_accounts"]
    assert entry["customer_id"].startswith("cus_") and entry["status"] == "active" and entry["writeback_pending"] is False
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert moved.returncode == 0, moved.stderr
    assert after["billing_accounts"][0]["customer_id"] == spare
    assert json.loads(synced.stdout)["updated"] == 1  # the next sync writes the mapping to it
    assert sandboxes.stripe.get_customer(spare)["name"] == "Acme Corp"
    assert sandboxes.salesforce.get("Account", ACME)["Stripe_Customer_Id__c"] == spare


def test_relationship_sources_and_the_link_transform_end_to_end(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Config], tmp_path: Path
) -> None:
    # Initech becomes a child of Acme, which has its own activated order (so its own customer).
    sandboxes.salesforce.update("Account", INITECH, {"ParentId": ACME})
    folder = mapping_copy(tmp_path, "  metadata.parent_name:\n    from: Account.Parent.Name\n    transforms: [trim]\n"
                                    "  metadata.parent_customer:\n    from: Account.ParentId\n    transforms: [link]\n")
    cfg = make_config(mappings_dir=folder)

    run_sync("backfill", config=cfg)

    by_account = {c["metadata"]["salesforce_account_id"]: c for c in sandboxes.stripe.customers()}
    assert by_account[INITECH]["metadata"]["parent_name"] == "Acme Corp"
    assert by_account[INITECH]["metadata"]["parent_customer"] == by_account[ACME]["id"]
    assert "parent_customer" not in by_account[ACME]["metadata"]  # its parent has no customer: unset

    # A change on the parent reaches the child's customer through the watched relationship.
    sandboxes.salesforce.update("Account", ACME, {"Name": "Acme Holding"})
    report = run_sync("sync", config=cfg)

    assert report.updated == 2  # Acme's own name, and Initech's parent_name
    assert sandboxes.stripe.get_customer(by_account[INITECH]["id"])["metadata"]["parent_name"] == "Acme Holding"
