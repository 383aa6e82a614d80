"""A run's memory is bounded by a page, not by the number of accounts: five times the accounts
over five times the pages leave the peak of a dry run where it was (its plan is handed on page
by page, no set of account ids is kept), and each page's plan reaches the sink before the next
page is read.

The sandboxes run in a child process (`billing-connector sandbox`), so the Python memory traced
here is the connector's own. Deterministic: tracemalloc counts allocations, not time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from connector.app import open_pipeline
from connector.config import Config, SecretSource
from connector.engine import Decision, PlannedWrite
from connector.sandbox.run import SANDBOX_ORG_ID, SANDBOX_STRIPE_KEY, SANDBOX_TOKEN
from connector.sandbox.salesforce import id18

REPO = Path(__file__).resolve().parents[1]
PAGE = 200
SMALL, LARGE = 1_000, 5_000


def org(n: int) -> dict[str, Any]:
    accounts, contacts, orders = [], [], []
    for i in range(n):
        acc, con = id18(f"001Mm{i:010d}"), id18(f"003Mm{i:010d}")
        accounts.append({"Id": acc, "Name": f"Memory Customer {i:06d}", "BillingCity": "Berlin",
                         "BillingCountry": "Germany", "Phone": f"+49 30 {i:07d}"})
        contacts.append({"Id": con, "AccountId": acc, "LastName": f"Payer {i}",
                         "Email": f"billing{i}@memory.example"})
        orders.append({"Id": id18(f"801Mm{i:010d}"), "AccountId": acc, "BillToContactId": con,
                       "Status": "Activated", "EffectiveDate": "2026-01-01"})
    return {"salesforce": {"Account": accounts, "Contact": contacts, "Order": orders}}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, dict[str, str]]]:
    """One sandbox process per org size, in child processes; their URLs by size."""
    procs, urls = [], {}
    try:
        for n in (SMALL, LARGE):
            data = tmp_path_factory.mktemp(f"org{n}") / "org.json"
            data.write_text(json.dumps(org(n)), encoding="utf-8")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "STRIPE_"))}
            proc = subprocess.Popen(
                [sys.executable, "-m", "connector", "sandbox", "--data", str(data),
                 "--salesforce-port", "0", "--stripe-port", "0"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
            )
            procs.append(proc)
            assert proc.stdout is not None
            text = ""
            for line in proc.stdout:
                text += line
                if "Ctrl-C" in line:
                    break
            sf = re.search(r"Salesforce sandbox: (http://127\.0\.0\.1:\d+)", text)
            st = re.search(r"Stripe sandbox:\s+(http://127\.0\.0\.1:\d+)", text)
            assert sf and st, text + (proc.stderr.read() if proc.stderr else "")
            urls[n] = {"salesforce": sf.group(1), "stripe": st.group(1)}
        yield urls
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


class CountingSink:
    """Keeps counts only, and the peak number of plans it was handed at once."""

    def __init__(self) -> None:
        self.pages = 0
        self.planned_total = 0
        self.largest = 0
        self.decided_total = 0

    def planned(self, plans: Sequence[PlannedWrite]) -> None:
        self.pages += 1
        self.planned_total += len(plans)
        self.largest = max(self.largest, len(plans))

    def decided(self, decisions: Sequence[Decision]) -> None:
        self.decided_total += len(decisions)


def dry_backfill(urls: dict[str, str], state: Path) -> tuple[int, CountingSink, Any]:
    cfg = Config.model_validate({
        "salesforce": {"auth": "access_token", "instance_url": urls["salesforce"],
                       "org_id": SANDBOX_ORG_ID, "page_size": PAGE},
        "billing": {"accounts": [{"id": "default", "api_base": urls["stripe"]}]},
        "state": {"url": f"sqlite:///{state}"},
        "mappings_dir": str(REPO / "mappings"),
    })
    secrets = SecretSource({"SALESFORCE_ACCESS_TOKEN": SANDBOX_TOKEN, "STRIPE_API_KEY": SANDBOX_STRIPE_KEY})
    sink = CountingSink()
    with open_pipeline(cfg, secrets) as p:
        tracemalloc.start()
        try:
            report = p.engine.run("backfill", dry_run=True, sink=sink)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return peak, sink, report


def test_a_dry_run_over_five_times_the_pages_peaks_where_a_small_one_does(
    served: dict[int, dict[str, str]], tmp_path: Path
) -> None:
    dry_backfill(served[SMALL], tmp_path / "warm.db")  # first use: imports, caches, SDK set-up
    small_peak, _, small = dry_backfill(served[SMALL], tmp_path / "small.db")
    large_peak, large_sink, large = dry_backfill(served[LARGE], tmp_path / "large.db")

    assert (small.created, large.created) == (SMALL, LARGE)
    assert (small.accounts_seen, large.accounts_seen) == (SMALL, LARGE)
    assert large.plan == () and large.decisions == ()  # handed on, not kept for the report
    # Every page's plan reached the sink as its own batch, none bigger than a page.
    assert large_sink.pages == LARGE // PAGE and large_sink.largest == PAGE
    assert large_sink.planned_total == large_sink.decided_total == LARGE
    # Kept whole, the plan alone would be several MiB at 5,000 accounts: the peak stays put.
    assert large_peak < small_peak * 1.25 + 256 * 1024, (small_peak, large_peak)
