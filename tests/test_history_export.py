"""`billing-connector history` exports what happened to each account in each run, as CSV or
JSON, with the error an admin needs (redacted), filtered by --failed and --since."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

from fault_readback import cli

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

MISSING = "001000000000A02AAA"


def make_history(sandboxes: SandboxPair, run_sync: Callable[..., RunReport]) -> None:
    # One account names a customer that does not exist: it fails, the others are created.
    sandboxes.salesforce.update("Account", MISSING, {"Stripe_Customer_Id__c": "cus_Missing0000001"})
    assert run_sync("sync").failed == 1


def test_history_as_csv_lists_every_outcome_with_the_error(
    sandboxes: SandboxPair, cli_env: dict[str, str], run_sync: Callable[..., RunReport]
) -> None:
    make_history(sandboxes, run_sync)
    result = cli("history", "--format", "csv", env=cli_env)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    by_account = {r["account_id"]: r for r in rows}
    assert by_account[MISSING]["outcome"] == "failed"
    assert "cus_Missing0000001" in by_account[MISSING]["error_message"]
    created = [r for r in rows if r["outcome"] == "created"]
    assert len(created) == 2 and all(r["customer_id"].startswith("cus_") for r in created)
    assert all(r["run_id"] and r["billing_account"] == "default" for r in rows)


def test_history_failed_as_json_holds_only_failures(
    sandboxes: SandboxPair, cli_env: dict[str, str], run_sync: Callable[..., RunReport]
) -> None:
    make_history(sandboxes, run_sync)
    result = cli("history", "--failed", "--format", "json", env=cli_env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["account_id"] for r in rows] == [MISSING]
    assert rows[0]["error_code"] == "adopt_customer_missing"


def test_history_since_a_later_date_is_empty_and_a_bad_date_exits_2(
    sandboxes: SandboxPair, cli_env: dict[str, str], run_sync: Callable[..., RunReport]
) -> None:
    make_history(sandboxes, run_sync)
    later = cli("history", "--since", "2999-01-01", "--format", "json", env=cli_env)
    assert later.returncode == 0 and json.loads(later.stdout) == []
    bad = cli("history", "--since", "yesterday", env=cli_env)
    assert bad.returncode == 2 and "--since" in bad.stderr
    wrong = cli("history", "--format", "xml", env=cli_env)
    assert wrong.returncode == 2 and "--format" in wrong.stderr
