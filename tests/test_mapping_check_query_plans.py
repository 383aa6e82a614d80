"""`mappings check --online` asks Salesforce's query plan (`/query/?explain=`) for every query a
sync sends and warns on a TableScan (issue 15). The sandbox answers explain in Salesforce's
shape: led by an index only when the queried object's own indexed field leads the filter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

from conftest import MAPPINGS, REPO
from fault_readback import SF_QUERY

from connector.app import connect_source
from connector.config import Config, SecretSource
from connector.mapping import load_mappings
from connector.query_plans import table_scans
from connector.sandbox.run import SandboxPair


def explain(sandboxes: SandboxPair, soql: str) -> dict[str, Any]:
    cfg_source = sandboxes.salesforce
    import requests

    r = requests.get(
        f"{cfg_source.url}/services/data/v62.0/query/",
        params={"explain": soql},
        headers={"Authorization": f"Bearer {sandboxes.access_token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_the_sandbox_explains_the_old_ored_query_as_a_table_scan_and_the_new_ones_as_index(
    sandboxes: SandboxPair,
) -> None:
    old = (
        "SELECT Id FROM Order WHERE StatusCode = 'Activated' AND (SystemModstamp >= 2026-01-01T00:00:00Z "
        "OR Account.SystemModstamp >= 2026-01-01T00:00:00Z OR BillToContact.SystemModstamp >= 2026-01-01T00:00:00Z)"
    )
    plan = explain(sandboxes, old)
    assert plan["plans"][0]["leadingOperationType"] == "TableScan"
    assert plan["plans"][0]["sobjectType"] == "Order"
    assert set(plan["plans"][0]) >= {"cardinality", "fields", "leadingOperationType", "notes",
                                     "relativeCost", "sobjectCardinality", "sobjectType"}
    new = ("SELECT Id, SystemModstamp FROM Account WHERE SystemModstamp >= 2026-01-01T00:00:00.000Z "
           "AND SystemModstamp < 2026-01-02T00:00:00.000Z ORDER BY SystemModstamp, Id LIMIT 2000")
    plan = explain(sandboxes, new)
    assert plan["plans"][0]["leadingOperationType"] == "Index"
    assert plan["plans"][0]["fields"] == ["SystemModstamp"]


def test_every_query_of_the_shipped_mapping_is_led_by_an_index(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource
) -> None:
    cfg = make_config()
    source = connect_source(cfg, secrets)
    before = len(sandboxes.salesforce.soql_received())

    warnings = table_scans(source, [load_mappings(MAPPINGS)], ["Stripe_Customer_Id__c"])

    assert warnings == []
    assert len(sandboxes.salesforce.soql_received()) == before  # explained, never run


def test_a_table_scan_in_the_plan_is_a_warning_naming_the_object_and_the_query(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource
) -> None:
    cfg = make_config()
    source = connect_source(cfg, secrets)
    # A large org where the optimizer finds a filter unselective answers with a scan plan.
    scan = {"plans": [{"cardinality": 900000, "fields": [], "leadingOperationType": "TableScan",
                       "notes": [{"description": "Not considering filter for optimization because unindexed",
                                  "fields": ["Type"], "tableEnumOrId": "Order"}],
                       "relativeCost": 2.9, "sobjectCardinality": 900000, "sobjectType": "Order"}]}
    sandboxes.salesforce.inject_fault(method="GET", path=SF_QUERY, status=200, body=scan, count=1)

    warnings = table_scans(source, [load_mappings(MAPPINGS)], ["Stripe_Customer_Id__c"])

    assert len(warnings) == 1
    text = warnings[0].message()
    assert "TableScan" in text and "every Order" in text and "unindexed: Type" in text
    assert "SELECT " in text


def test_mappings_check_online_runs_the_plans_and_reports_ok(cli_env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "connector", "mappings", "check", "--online"],
                            env=cli_env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TableScan" not in result.stdout
    assert "ok" in result.stdout
