"""Salesforce calls are spent per page, never per record: one query page per page of orders,
one composite write-back per 200 accounts; the demo and the sandbox command work as documented."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

N = 450


def add_billed_accounts(sandboxes: SandboxPair, n: int) -> list[str]:
    sf = sandboxes.salesforce
    ids = []
    for i in range(n):
        acc = sf.create("Account", {"Name": f"Bulk Customer {i:04d}", "BillingCountry": "Germany"})
        order = sf.create("Order", {"AccountId": acc, "Status": "Draft", "EffectiveDate": "2026-04-01"})
        sf.update("Order", order, {"Status": "Activated"})
        ids.append(acc)
    return ids


def test_a_backfill_spends_one_query_per_page_and_one_write_back_per_200_accounts(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Any]
) -> None:
    ids = add_billed_accounts(sandboxes, N)
    cfg = make_config(salesforce={"page_size": 200},
                      billing={"accounts": [{"id": "default", "api_base": sandboxes.stripe.url, "max_requests_per_second": 1000}]})
    before = dict(sandboxes.salesforce.stats()["requests"])

    report = run_sync("backfill", config=cfg)

    orders = N + 4  # plus the four activated orders of the small org
    billed = N + 3
    assert report.created == billed and report.failed == 0
    assert report.stripe_calls == billed  # one call per created account
    after = sandboxes.salesforce.stats()["requests"]
    spent = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    # A Composite request (`/composite`) carries a query: the deletions query and the first
    # order page each take one, with a describe beside them.
    queries = sum(
        v for k, v in spent.items() if "/query" in k or k.rstrip("/").endswith("/composite")
    )
    writebacks = sum(v for k, v in spent.items() if "composite/sobjects" in k)
    assert writebacks == math.ceil(billed / 200)
    assert queries == math.ceil(orders / 200) + 1  # order pages + the deleted-accounts query
    # The custom relationships the syncs after it watch (the quote, its primary contact) are
    # resolved by describes that ride in those two Composite requests: no call of their own.
    assert not [k for k in spent if k.endswith("/describe")], spent
    assert report.salesforce_calls == queries + writebacks
    assert report.salesforce_calls <= math.ceil(orders / 2000) + math.ceil(billed / 200) + 5
    assert all(sandboxes.salesforce.get("Account", a)["Stripe_Customer_Id__c"] for a in ids)

    again = run_sync("sync", config=cfg)
    assert again.stripe_calls == 0 and again.created == again.updated == 0


def test_demo_runs_end_to_end_on_the_built_in_sandbox(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "STRIPE_"))}
    result = subprocess.run([sys.executable, "-m", "connector", "demo", "--state-dir", str(tmp_path / "demo")],
                            env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1. backfill" in result.stdout and "5. sync again" in result.stdout
    assert "would create" in result.stdout
    assert (tmp_path / "demo" / "state.db").exists()
    assert (tmp_path / "demo" / "config.yaml").exists()
    status = subprocess.run([sys.executable, "-m", "connector", "status", "--json", "-c", str(tmp_path / "demo" / "config.yaml")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert '"mode": "sync"' in status.stdout


def test_the_sandbox_command_serves_until_interrupted(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "connector", "sandbox", "--salesforce-port", "0", "--stripe-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(lines)
        sf_url = re.search(r"Salesforce sandbox: (http://127\.0\.0\.1:\d+)", text)
        st_url = re.search(r"Stripe sandbox:\s+(http://127\.0\.0\.1:\d+)", text)
        assert sf_url and st_url, text
        assert "instance_url: " + sf_url.group(1) in text and "api_base: " + st_url.group(1) in text
        import requests

        versions = requests.get(f"{sf_url.group(1)}/services/data/", timeout=5)
        assert versions.status_code == 200
        customers = requests.get(f"{st_url.group(1)}/_sandbox/customers", timeout=5).json()["data"]
        assert [c["id"] for c in customers] == ["cus_Adopt000000001"]  # the sample data's one customer
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode == 0


def test_a_crashed_backfill_resumes_after_the_last_page_it_finished(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Any]
) -> None:
    add_billed_accounts(sandboxes, N)
    cfg = make_config(salesforce={"page_size": 200},
                      billing={"accounts": [{"id": "default", "api_base": sandboxes.stripe.url, "max_requests_per_second": 1000}]})
    # The second page of orders never arrives: Salesforce fails, the run stops.
    sandboxes.salesforce.inject_fault(method="GET", path=r"/query/01g", status=503, count=10,
                                      body=[{"errorCode": "SERVER_UNAVAILABLE", "message": "try later"}])

    crashed = run_sync("backfill", config=cfg)

    assert crashed.status == "failed" and crashed.exit_code == 3
    assert crashed.orders_read == 200 and crashed.created == crashed.accounts_seen
    sandboxes.salesforce.clear_faults()
    resumed = run_sync("backfill", config=cfg)

    assert resumed.exit_code == 0
    assert resumed.orders_read == N + 4 - 200  # the finished page is not read again
    assert resumed.created == N + 3 - crashed.created
    per_account: dict[str, int] = {}
    for c in sandboxes.stripe.customers():
        key = c["metadata"]["salesforce_account_id"]
        per_account[key] = per_account.get(key, 0) + 1
    assert len(per_account) == N + 3 and set(per_account.values()) == {1}

    full_again = run_sync("backfill", config=cfg)  # a finished backfill starts from the beginning
    assert full_again.orders_read == N + 4 and full_again.stripe_calls == 0


def test_the_sandbox_command_loads_a_data_file(tmp_path: Path) -> None:
    data = tmp_path / "org.yaml"
    data.write_text(
        "salesforce:\n  Account:\n    - {Id: 001000000000X01AAA, Name: From A File}\n"
        "stripe:\n  customers:\n    - {id: cus_FromAFile00001, name: Filed}\n"
    )
    proc = subprocess.Popen([sys.executable, "-m", "connector", "sandbox", "--data", str(data),
                             "--salesforce-port", "0", "--stripe-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        text = ""
        for line in proc.stdout:
            text += line
            if "Ctrl-C" in line:
                break
        sf_url = re.search(r"Salesforce sandbox: (http://127\.0\.0\.1:\d+)", text)
        st_url = re.search(r"Stripe sandbox:\s+(http://127\.0\.0\.1:\d+)", text)
        token = re.search(r"SALESFORCE_ACCESS_TOKEN='([^']+)'", text)
        assert sf_url and st_url and token, text
        import requests

        accounts = requests.get(f"{sf_url.group(1)}/services/data/v62.0/query/", params={"q": "SELECT Name FROM Account"},
                                headers={"Authorization": f"Bearer {token.group(1)}"}, timeout=5).json()
        customers = requests.get(f"{st_url.group(1)}/_sandbox/customers", timeout=5).json()["data"]
        assert [r["Name"] for r in accounts["records"]] == ["From A File"]
        assert [c["id"] for c in customers] == ["cus_FromAFile00001"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
