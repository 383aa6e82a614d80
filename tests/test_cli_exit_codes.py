"""The `billing-connector` command as a user runs it: a subprocess, a config file, env secrets.

Exit codes: 0 all done, 1 some records failed or were refused, 2 configuration or mapping
invalid (nothing contacted), 3 could not run (auth, unreachable, lock held)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from connector.partitions import Partition
from connector.sandbox.run import SandboxPair
from connector.state.store import StateStore

JSON_KEYS = {"run_id", "mode", "orders_read", "accounts_seen", "created", "updated", "unchanged",
             "refused", "failed", "writeback_failed", "salesforce_calls", "billing_calls", "stripe_calls", "billing_accounts",
             "status", "error", "exit_code"}


def cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connector", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def requests_seen(sandboxes: SandboxPair) -> int:
    return int(sandboxes.salesforce.stats()["total"]) + int(sandboxes.stripe.stats()["total"])


def test_sync_json_prints_one_object_and_exits_0(sandboxes: SandboxPair, cli_env: dict[str, str]) -> None:
    result = cli("sync", "--json", env=cli_env)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == JSON_KEYS
    assert report["mode"] == "sync" and report["created"] == 3 and report["failed"] == 0
    assert report["billing_calls"] == 3 and report["stripe_calls"] == 3  # kept for one release
    [(name, counts)] = report["billing_accounts"].items()
    peak = counts.pop("peak_in_flight")
    assert name == "default" and 1 <= peak <= 3  # three creates, sent side by side or not
    assert counts == {"created": 3, "updated": 0, "unchanged": 0, "refused": 0, "failed": 0, "calls": 3,
                      "rate_limited": 0, "slowdowns": 0}
    assert (report["status"], report["error"], report["exit_code"]) == ("succeeded", None, 0)


def test_backfill_dry_run_prints_a_plan_and_writes_nothing(sandboxes: SandboxPair, cli_env: dict[str, str]) -> None:
    result = cli("backfill", "--dry-run", env=cli_env)

    assert result.returncode == 0, result.stderr
    assert "plan (nothing was written)" in result.stdout
    assert result.stdout.count("create") >= 3
    assert sandboxes.stripe.customers() == []


def test_an_invalid_config_exits_2_naming_file_line_and_key_and_contacts_nothing(
    sandboxes: SandboxPair, cli_env: dict[str, str], tmp_path: Path
) -> None:
    cfg = Path(cli_env["BILLING_CONNECTOR_CONFIG"])
    text = cfg.read_text().replace("auth: access_token", "auth: access_token\n  page_size: 5")
    cfg.write_text(text)
    line = text.splitlines().index("  page_size: 5") + 1

    result = cli("sync", env=cli_env)

    assert result.returncode == 2
    assert f"{cfg}:{line}:" in result.stderr and "page_size" in result.stderr
    assert requests_seen(sandboxes) == 0


def test_a_secret_in_the_config_file_is_refused_with_the_variable_to_use(
    sandboxes: SandboxPair, cli_env: dict[str, str]
) -> None:
    cfg = Path(cli_env["BILLING_CONNECTOR_CONFIG"])
    cfg.write_text(cfg.read_text().replace("  - id: default", "  - id: default\n    api_key_env: sk_test_4eC39HqLyjWDarjtT1zdp7dc"))

    result = cli("sync", env=cli_env)

    assert result.returncode == 2
    assert "STRIPE_API_KEY" in result.stderr
    assert "4eC39HqLyjWDarjtT1zdp7dc" not in result.stderr
    assert requests_seen(sandboxes) == 0


def test_a_broken_mapping_exits_2_and_contacts_nothing(sandboxes: SandboxPair, cli_env: dict[str, str], tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "customer.yaml").write_text("target: customer\nfields:\n  nmae:\n    from: Account.Name\n")
    cfg = Path(cli_env["BILLING_CONNECTOR_CONFIG"])
    cfg.write_text("\n".join(
        f"mappings_dir: {mappings}" if ln.startswith("mappings_dir:") else ln for ln in cfg.read_text().splitlines()
    ))

    result = cli("sync", env=cli_env)

    assert result.returncode == 2
    assert f"{mappings / 'customer.yaml'}:3:" in result.stderr
    assert requests_seen(sandboxes) == 0


def test_a_refused_salesforce_token_exits_3(sandboxes: SandboxPair, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "SALESFORCE_ACCESS_TOKEN": "00D000000000001!AQwrongwrongwrongwrongwrong"}

    result = cli("sync", env=env)

    assert result.returncode == 3
    assert "SALESFORCE_ACCESS_TOKEN" in result.stderr
    assert "AQwrongwrongwrong" not in result.stderr + result.stdout
    assert sandboxes.stripe.customers() == []


def test_another_runner_holding_the_lock_exits_3_naming_it(sandboxes: SandboxPair, cli_env: dict[str, str], db_url: str) -> None:
    store = StateStore.open(db_url)
    try:
        # A daemon replica running the billing account's partition.
        with store.locks.hold(Partition("default").lock_name, holder="replica-a:4242"):
            result = cli("sync", env=cli_env)
    finally:
        store.close()

    assert result.returncode == 3
    assert "replica-a:4242" in result.stderr
    assert sandboxes.stripe.customers() == []


def test_failed_records_exit_1_and_status_shows_them(sandboxes: SandboxPair, cli_env: dict[str, str]) -> None:
    sandboxes.salesforce.update("Account", "001000000000A02AAA", {"Stripe_Customer_Id__c": "cus_Missing0000001"})

    result = cli("sync", "--json", env=cli_env)
    status = cli("status", "--json", env=cli_env)

    assert result.returncode == 1
    assert json.loads(result.stdout)["failed"] == 1
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["runs"][0]["status"] == "partial"
    assert any(f["account_id"] == "001000000000A02AAA" and f["error_code"] == "adopt_customer_missing"
               for f in data["failures"])


def test_python_dash_m_and_the_console_script_are_the_same_command(cli_env: dict[str, str]) -> None:
    via_module = cli("--help", env=cli_env)
    script = Path(sys.executable).with_name("billing-connector")
    via_script = subprocess.run([str(script), "--help"], env=cli_env, capture_output=True, text=True, timeout=60)

    assert via_module.returncode == via_script.returncode == 0
    for command in ("sync", "backfill", "demo", "status", "sandbox", "mappings"):
        assert command in via_module.stdout and command in via_script.stdout
