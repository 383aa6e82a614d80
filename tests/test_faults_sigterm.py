"""SIGTERM in the middle of a run (a deploy, `docker stop`): the command finishes the record in
progress, records the run as interrupted, leaves the cursor where it was, and exits within a
bounded time; the next run completes with exactly one customer per account."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from conftest import BILLED
from fault_readback import add_billed_accounts, assert_one_customer_each, read_store

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

LATENCY = 0.25  # seconds per Stripe request: the run takes several seconds, long enough to stop


def test_sigterm_mid_run_finishes_the_record_in_progress_and_marks_the_run_interrupted(
    sandboxes: SandboxPair, cli_env: dict[str, str], run_sync: Callable[..., RunReport], db_url: str
) -> None:
    assert run_sync("sync").exit_code == 0
    before = read_store(db_url)
    new = add_billed_accounts(sandboxes.salesforce, 16)
    sandboxes.stripe.set_latency(LATENCY)
    creates = sandboxes.stripe.operations["create"]

    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "sync", "--json"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while sandboxes.stripe.operations["create"] < creates + 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never reached Stripe"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    took = time.monotonic() - stopped_at

    # Bounded: the record in progress (one create) and the write-back, not the other accounts.
    assert took < 5, f"took {took:.1f}s to stop"
    assert proc.returncode == 1, (out, err)  # interrupted: documented as exit 1
    assert json.loads(out)["created"] >= 1
    done = {c["metadata"]["salesforce_account_id"] for c in sandboxes.stripe.customers()} - BILLED
    assert 2 <= len(done) < len(new), "not stopped mid-run"
    customers = assert_one_customer_each(sandboxes, BILLED | done)
    view = read_store(db_url)
    # The record in progress finished: every customer Stripe made is linked, no intent is open.
    view.assert_links_match(customers)
    assert not view.intents
    assert view.runs[0].status == "interrupted"
    assert view.cursor == before.cursor

    sandboxes.stripe.set_latency(0)
    again = run_sync("sync")

    assert again.exit_code == 0 and again.failed == 0
    customers = assert_one_customer_each(sandboxes, BILLED | set(new))
    after = read_store(db_url)
    after.assert_links_match(customers)
    assert after.cursor is not None and before.cursor is not None and after.cursor > before.cursor


def test_a_second_sigterm_exits_at_once_and_the_next_run_still_makes_no_duplicate(
    sandboxes: SandboxPair, cli_env: dict[str, str], run_sync: Callable[..., RunReport], db_url: str
) -> None:
    new = add_billed_accounts(sandboxes.salesforce, 16)
    sandboxes.stripe.set_latency(2.0)  # a create in flight when the second signal lands

    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "sync"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while sandboxes.stripe.stats()["requests"].get("POST /v1/customers", 0) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never reached Stripe"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert time.monotonic() - stopped_at < 1.5  # did not wait for the create in flight (2 s)
    assert proc.returncode == 130  # the second signal exits at once

    sandboxes.stripe.set_latency(0)
    again = run_sync("sync")

    assert again.exit_code == 0 and again.failed == 0
    customers = assert_one_customer_each(sandboxes, BILLED | set(new))
    after = read_store(db_url)
    after.assert_links_match(customers)
    assert not after.intents


def test_sigkill_while_stripe_applies_a_create_is_completed_by_the_next_run(
    sandboxes: SandboxPair, cli_env: dict[str, str], run_sync: Callable[..., RunReport], db_url: str
) -> None:
    # No chance to clean up: the process dies with a create in flight; Stripe applies it anyway.
    new = add_billed_accounts(sandboxes.salesforce, 6)
    sandboxes.stripe.set_latency(1.0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "sync"],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while sandboxes.stripe.stats()["requests"].get("POST /v1/customers", 0) < 2:
            assert proc.poll() is None
            assert time.monotonic() < deadline, "the run never reached Stripe"
            time.sleep(0.02)
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    while sandboxes.stripe.operations["create"] < 2:  # the create in flight lands
        assert time.monotonic() < deadline
        time.sleep(0.02)

    crashed = read_store(db_url)
    made = {c["metadata"]["salesforce_account_id"]: c["id"] for c in sandboxes.stripe.customers()}
    orphan = [a for a in made if a not in crashed.links]
    # Created in Stripe, not linked yet (a page's links are saved in one transaction after its
    # writes) ...
    assert len(made) == 2 and len(orphan) >= 1
    assert all(o in crashed.intents for o in orphan)  # ... but their intents were recorded first
    assert crashed.runs[0].status == "running"

    sandboxes.stripe.set_latency(0)
    again = run_sync("sync")

    assert again.exit_code == 0 and again.failed == 0
    customers = assert_one_customer_each(sandboxes, BILLED | set(new))
    assert all(customers[o] == made[o] for o in orphan)
    after = read_store(db_url)
    after.assert_links_match(customers)
    assert not after.intents
    assert {r.run_id: r.status for r in after.runs}[crashed.runs[0].run_id] == "interrupted"
