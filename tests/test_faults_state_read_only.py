"""The state store turns read-only in the middle of a sync (PostgreSQL's
default_transaction_read_only, a SQLite file the connector may no longer write), right after
Stripe created a customer whose link must now be saved. The run stops with exit 3 and an error
saying the store became read-only; it says the run itself could not be recorded (the next run
marks it interrupted); `--json` still prints one object. Once writable again, the next sync
links the customer that was made, and creates no duplicate. On SQLite and PostgreSQL."""

from __future__ import annotations

import json

from conftest import BILLED
from fault_readback import STRIPE_CREATE, assert_one_customer_each, on_request, read_store
from state_fixtures import ReadOnlySwitch, read_only
from typer.testing import CliRunner

from connector.cli import app
from connector.sandbox.run import SandboxPair

__all__ = ["read_only"]  # fixture, imported for pytest


def test_a_store_turning_read_only_mid_run_stops_with_exit_3_and_json_says_why(
    sandboxes: SandboxPair, cli_env: dict[str, str], db_url: str, read_only: ReadOnlySwitch
) -> None:
    on_request(sandboxes.stripe, STRIPE_CREATE, read_only.on, method="POST")

    result = CliRunner().invoke(app, ["sync", "--json"], env=cli_env, catch_exceptions=False)

    assert result.exit_code == 3, result.output
    [line] = [ln for ln in result.stdout.splitlines() if ln.strip()]
    report = json.loads(line)
    assert report["exit_code"] == 3 and report["status"] == "failed"
    assert "the state store became read-only during the run" in report["error"]
    assert "could not be recorded as failed" in report["error"]
    assert "disk I/O error" not in report["error"]
    assert "became read-only" in result.stderr
    # The page's creates reached Stripe; the transaction that links them could not be written.
    made = [c["id"] for c in sandboxes.stripe.customers()]
    assert made

    read_only.off()
    again = CliRunner().invoke(app, ["sync", "--json"], env=cli_env, catch_exceptions=False)

    assert again.exit_code == 0, again.output
    customers = assert_one_customer_each(sandboxes, BILLED)
    assert set(made) <= set(customers.values())
    view = read_store(db_url)
    view.assert_links_match(customers)
    assert not view.intents
    assert [r.status for r in view.runs[:2]] == ["succeeded", "interrupted"]


def test_a_store_read_only_before_the_run_starts_still_prints_one_json_object(
    sandboxes: SandboxPair, cli_env: dict[str, str], read_only: ReadOnlySwitch
) -> None:
    read_only.on()  # migrations (auto_migrate) need a write: the run cannot start

    result = CliRunner().invoke(app, ["sync", "--json"], env=cli_env, catch_exceptions=False)

    assert result.exit_code == 3, result.output
    [line] = [ln for ln in result.stdout.splitlines() if ln.strip()]
    report = json.loads(line)
    assert report == {
        "mode": "sync",
        "status": "failed",
        "error": report["error"],
        "exit_code": 3,
    }
    assert report["error"].startswith("the state store is read-only")
    assert sandboxes.stripe.stats()["total"] == 0
