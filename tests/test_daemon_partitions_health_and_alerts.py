"""The daemon's tick, in process, against the sandboxes and each store: replicas share the
partitions (one per billing account) and take over a departed one's; /readyz turns unready
after a failed run and ready after recovery; one alert per change of state; metrics count it.
Ticks are called directly and the clock is injected: nothing waits for time to pass."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import BILLED
from fault_readback import SF_QUERY, assert_one_customer_each, cli, read_store
from webhook_receiver import WebhookReceiver

from connector.alerts import Alerter
from connector.config import Config, SecretSource
from connector.daemon import Daemon
from connector.health import HealthServer
from connector.sandbox.run import SandboxPair
from connector.sandbox.stripe import StripeSandbox


class Clock:
    def __init__(self) -> None:
        self.at = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **kw: float) -> None:
        self.at += timedelta(**kw)


@pytest.fixture
def second_stripe() -> Iterator[StripeSandbox]:
    st = StripeSandbox().start()
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture
def two_accounts(
    make_config: Callable[..., Config], sandboxes: SandboxPair, second_stripe: StripeSandbox
) -> Config:
    """Two billing accounts (two Stripe sandboxes): two partitions."""
    return make_config(
        billing={
            "accounts": [
                {"id": "eu", "api_base": sandboxes.stripe.url},
                {"id": "us", "api_base": second_stripe.url},
            ]
        },
        schedule={"every": "5m"},
    )


def get(url: str) -> tuple[int, dict[str, Any] | str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read().decode()
            code = r.status
    except urllib.error.HTTPError as exc:
        body, code = exc.read().decode(), exc.code
    try:
        return code, json.loads(body)
    except ValueError:
        return code, body


def test_two_replicas_share_two_partitions_and_one_takes_over_when_the_other_leaves(
    two_accounts: Config,
    secrets: SecretSource,
    sandboxes: SandboxPair,
    second_stripe: StripeSandbox,
    db_url: str,
) -> None:
    a = Daemon(two_accounts, secrets, holder="replica-a").start()
    b = Daemon(two_accounts, secrets, holder="replica-b")
    try:
        first = a.tick()
        assert first.held == {"eu", "us"}  # alone: it takes every partition
        assert {r.status for r in first.reports.values()} == {"succeeded"}
        b.start()
        assert b.tick().held == frozenset()  # both taken
        assert len(a.tick().held) == 1  # two replicas now: a keeps its fair share of one
        got = b.tick()
        assert len(got.held) == 1 and got.held.isdisjoint(a.held)
        assert got.reports and all(r.status == "succeeded" for r in got.reports.values())
        assert len(a.tick().held) == 1  # stable: nothing moves while both live
    finally:
        b.close()  # the replica leaves (its locks are freed, as a killed process's are)
    try:
        after = a.tick()
        assert after.held == {"eu", "us"}
    finally:
        a.close()
    for stripe in (sandboxes.stripe, second_stripe):
        account = "eu" if stripe is sandboxes.stripe else "us"
        customers = {c["metadata"]["salesforce_account_id"]: c["id"] for c in stripe.customers()}
        assert set(customers) == BILLED and len(stripe.customers()) == len(BILLED)
        read_store(db_url, billing_account=account).assert_links_match(customers)
    # Only the first account's customer id is written back to the Account.
    field = {
        a["Id"]: a.get("Stripe_Customer_Id__c") for a in sandboxes.salesforce.records("Account")
    }
    eu = {c["metadata"]["salesforce_account_id"]: c["id"] for c in sandboxes.stripe.customers()}
    assert all(field[acc] == cid for acc, cid in eu.items())


def test_readyz_is_unready_after_a_failed_run_and_ready_after_recovery_with_one_alert_each(
    make_config: Callable[..., Config],
    secrets: SecretSource,
    sandboxes: SandboxPair,
    db_url: str,
) -> None:
    receiver = WebhookReceiver().start()
    clock = Clock()
    config = make_config(schedule={"every": "5m"})
    daemon = Daemon(
        config, secrets, holder="solo", now=clock, alerter=Alerter(receiver.url)
    ).start()
    server = HealthServer(daemon.health, daemon.metrics, host="127.0.0.1", port=0).start()
    base = "http://{}:{}".format(*server.address)
    try:
        assert get(base + "/livez")[0] == 200
        assert get(base + "/readyz")[0] == 503  # no tick yet
        assert daemon.tick().reports["default"].status == "succeeded"
        assert get(base + "/readyz")[0] == 200

        # Salesforce answers 503 to every query: the run fails (transient), twice in a row.
        sandboxes.salesforce.inject_fault(count=10_000, status=503, path=SF_QUERY)
        clock.advance(minutes=5)
        failed = daemon.tick().reports["default"]
        assert failed.status == "failed"
        code, body = get(base + "/readyz")
        assert code == 503 and isinstance(body, dict)
        assert body["partitions"]["default"]["status"] == "failed"
        clock.advance(minutes=5)
        assert daemon.tick().reports["default"].status == "failed"  # first retry: next tick
        # Backing off: the next tick is too early for a third attempt.
        clock.advance(minutes=5)
        assert "default" not in daemon.tick().reports

        sandboxes.salesforce.clear_faults()
        clock.advance(minutes=10)
        assert daemon.tick().reports["default"].status == "succeeded"
        assert get(base + "/readyz")[0] == 200
        # Too long without a successful run is unready too (two intervals).
        clock.advance(minutes=11)
        assert get(base + "/readyz")[0] == 503
        daemon.alerter.wait_delivered()

        code, metrics = get(base + "/metrics")
        assert code == 200 and isinstance(metrics, str)
        assert 'billing_connector_runs_total{outcome="failed",partition="default"} 2.0' in metrics
        assert (
            'billing_connector_runs_total{outcome="succeeded",partition="default"} 2.0' in metrics
        )
        assert (
            'billing_connector_records_total{outcome="created",partition="default"} 3.0' in metrics
        )
        assert "billing_connector_last_success_timestamp_seconds" in metrics
        assert "billing_connector_cursor_lag_seconds" in metrics
        assert 'billing_connector_run_duration_seconds_count{partition="default"} 4.0' in metrics
    finally:
        server.stop()
        daemon.close()
        receiver.stop()
    texts = [m["text"] for m in receiver.messages]
    assert len(texts) == 2, texts  # unhealthy once (not once per failed run), recovered once
    assert "unhealthy" in texts[0] and "default" in texts[0]
    assert "recovered" in texts[1]
    assert_one_customer_each(sandboxes, BILLED)


def test_a_refused_credential_stops_the_daemon_with_exit_3(
    make_config: Callable[..., Config], sandboxes: SandboxPair, db_url: str
) -> None:
    wrong = SecretSource(
        {"SALESFORCE_ACCESS_TOKEN": "00Dwrong!token", "STRIPE_API_KEY": "sk_test_x"}
    )
    daemon = Daemon(make_config(), wrong, holder="solo").start()
    try:
        report = daemon.tick().reports["default"]
        assert report.status == "failed" and report.error_type == "AuthenticationError"
        assert daemon.fatal is not None and daemon.fatal.exit_code == 3
        assert daemon.stop.is_set()  # serve() returns at once with that code
    finally:
        daemon.close()


def test_a_one_shot_sync_while_the_daemon_holds_the_partition_exits_3_naming_it(
    make_config: Callable[..., Config],
    secrets: SecretSource,
    sandboxes: SandboxPair,
    cli_env: dict[str, str],
) -> None:
    daemon = Daemon(make_config(), secrets, holder="replica-x:77").start()
    try:
        assert daemon.tick().held == {"default"}
        created = len(sandboxes.stripe.customers())
        result = cli("sync", env=cli_env)
        status = cli("status", env=cli_env)
    finally:
        daemon.close()
    assert result.returncode == 3, result.stderr
    assert "replica-x:77" in result.stderr and "partition-default" in result.stderr
    assert len(sandboxes.stripe.customers()) == created  # the refused sync wrote nothing
    assert "partition-default: held by replica-x:77" in status.stdout
    # Released with the daemon: the one-shot sync runs now.
    assert cli("sync", env=cli_env).returncode == 0


def test_a_low_salesforce_api_budget_alerts_once(
    make_config: Callable[..., Config], secrets: SecretSource, sandboxes: SandboxPair
) -> None:
    receiver = WebhookReceiver().start()
    sf = sandboxes.salesforce
    sf.set_daily_limit(100)
    config = make_config(alerts={"api_budget_low": 0.5})
    daemon = Daemon(config, secrets, holder="solo", alerter=Alerter(receiver.url)).start()
    try:
        assert daemon.tick().reports["default"].status == "succeeded"
        assert receiver.messages == [] and daemon.alerter.problems == {}
        with sf.lock:
            sf._api_used = 60  # the org spent most of its day elsewhere
        assert daemon.tick().reports["default"].status == "succeeded"
        assert daemon.tick().reports["default"].status == "succeeded"
        daemon.alerter.wait_delivered()
    finally:
        daemon.close()
        receiver.stop()
    (message,) = receiver.messages
    assert "API budget low" in message["text"]
