"""`billing-connector run` as a real process against the sandboxes and each store: the schedule
fires and coalesces an overlapping run; SIGTERM finishes the record in progress, records the run
as interrupted and exits 0; a second signal exits at once; two daemons on one PostgreSQL share
two partitions and one SIGKILLed hands its partition over with no duplicate and no lost link.
Every wait is on a logged event or a sandbox hook, never on time."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import BILLED, MAPPINGS
from daemon_process import Daemon, write_config
from fault_readback import (
    STRIPE_CREATE,
    add_billed_accounts,
    assert_one_customer_each,
    on_request,
    read_store,
)
from state_fixtures import pg_schema_url

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair
from connector.sandbox.stripe import StripeSandbox


def test_the_schedule_fires_again_and_coalesces_a_run_still_going(
    sandboxes: SandboxPair, cli_env: dict[str, str], db_url: str
) -> None:
    write_config(cli_env, schedule={"every": "1s"})
    add_billed_accounts(sandboxes.salesforce, 6)
    sandboxes.stripe.set_latency(0.5)  # the first run lasts several intervals
    daemon = Daemon(cli_env)
    try:
        daemon.event("schedule.run_skipped")  # due while the first run was still going
        daemon.event("run.finished", count=2)  # and the schedule goes on after it
        daemon.signal(signal.SIGTERM)
        code = daemon.wait()
    finally:
        daemon.kill()
    assert code == 0, daemon.tail()
    first, second = daemon.seen("run.finished")[:2]
    assert first["status"] == "succeeded" and first["created"] == len(BILLED) + 6, daemon.tail(80)
    # The first run's overlap was skipped, not queued: the next run found nothing left to do.
    assert second["created"] == 0
    # Every line of a run carries its run id and billing account.
    for e in daemon.events:
        if e.get("event", "").startswith(("sync.record", "run.")):
            assert e.get("run_id") and e.get("billing_account") == "default", e


def test_sigterm_finishes_the_record_in_progress_records_the_run_interrupted_and_exits_0(
    sandboxes: SandboxPair, cli_env: dict[str, str], db_url: str
) -> None:
    # Enough creates that, several in flight at the account's pace (20 a second), the run
    # still lasts seconds: the signal arrives mid-run.
    new = add_billed_accounts(sandboxes.salesforce, 60)
    sandboxes.stripe.set_latency(0.3)
    daemon = Daemon(cli_env)
    try:
        daemon.event("sync.record.created", count=2)
        daemon.signal(signal.SIGTERM)
        code = daemon.wait()
    finally:
        daemon.kill()
    assert code == 0, daemon.tail()
    view = read_store(db_url)
    assert view.runs[0].status == "interrupted"
    done = {c["metadata"]["salesforce_account_id"] for c in sandboxes.stripe.customers()}
    assert 2 <= len(done) < len(BILLED) + len(new), "not stopped mid-run"
    view.assert_links_match(assert_one_customer_each(sandboxes, done))
    assert not view.intents  # the record in progress finished and was linked


def test_a_second_signal_exits_at_once_and_the_next_run_makes_no_duplicate(
    sandboxes: SandboxPair,
    cli_env: dict[str, str],
    run_sync: Callable[..., RunReport],
    db_url: str,
) -> None:
    new = add_billed_accounts(sandboxes.salesforce, 4)
    in_flight = threading.Event()
    on_request(sandboxes.stripe, STRIPE_CREATE, in_flight.set, method="POST")
    sandboxes.stripe.set_latency(8)  # the create would keep the first signal waiting
    daemon = Daemon(cli_env)
    try:
        assert in_flight.wait(180), daemon.tail()
        daemon.signal(signal.SIGTERM)
        daemon.event("daemon.stopping")
        daemon.signal(signal.SIGTERM)
        code = daemon.wait()
    finally:
        daemon.kill()
    assert code == 130, daemon.tail()
    sandboxes.stripe.set_latency(0)
    again = run_sync("sync")
    assert again.exit_code == 0
    read_store(db_url).assert_links_match(assert_one_customer_each(sandboxes, BILLED | set(new)))


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg_schema_url() as url:
        yield url


@pytest.fixture
def pg_cli_env(sandboxes: SandboxPair, pg_url: str, tmp_path: Path) -> dict[str, str]:
    """Like `cli_env`, on PostgreSQL only: replicas share a server, never a SQLite file."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(sandboxes.config_snippet(state_url=pg_url, mappings_dir=str(MAPPINGS)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "STRIPE_"))}
    env.update(sandboxes.secrets())
    env["BILLING_CONNECTOR_CONFIG"] = str(cfg)
    return env


@pytest.fixture
def second_stripe() -> Iterator[StripeSandbox]:
    st = StripeSandbox().start()
    try:
        yield st
    finally:
        st.stop()


@pytest.mark.postgres
def test_two_daemons_share_two_partitions_and_a_killed_ones_partition_is_taken_over(
    sandboxes: SandboxPair,
    second_stripe: StripeSandbox,
    pg_cli_env: dict[str, str],
    pg_url: str,
) -> None:
    cli_env = pg_cli_env
    stripes = {"eu": sandboxes.stripe, "us": second_stripe}
    write_config(
        cli_env,
        schedule={"every": "1s"},
        billing={"accounts": [{"id": n, "api_base": s.url} for n, s in stripes.items()]},
    )
    a = Daemon(cli_env, name="a")
    b: Daemon | None = None
    try:
        a.event("partition.acquired", count=2)  # alone: both partitions
        a.event("run.finished", billing_account="eu")
        a.event("run.finished", billing_account="us")
        b = Daemon(cli_env, name="b")
        (taken,) = b.event("partition.acquired")  # a let one go for the newcomer
        moved = taken["billing_account"]
        kept = "us" if moved == "eu" else "eu"
        a.event("partition.released", billing_account=moved)

        first = add_billed_accounts(sandboxes.salesforce, 3, name="First Wave")
        for acc in first:
            b.event("sync.record.created", billing_account=moved, account_id=acc)
            a.event("sync.record.created", billing_account=kept, account_id=acc)
        assert not b.seen("sync.record.created", billing_account=kept)

        b.kill()  # SIGKILL: no clean-up; PostgreSQL frees its locks when its sessions end
        second = add_billed_accounts(sandboxes.salesforce, 3, name="Second Wave")
        a.event("partition.acquired", count=3)
        for acc in second:
            a.event("sync.record.created", billing_account=moved, account_id=acc)
            a.event("sync.record.created", billing_account=kept, account_id=acc)
        # Settled: a full run of the taken-over partition with nothing left to create.
        a.wait_for(
            lambda e: (
                e.get("event") == "run.finished"
                and e.get("billing_account") == moved
                and e.get("created") == 0
                and e.get("status") == "succeeded"
            )
        )
        a.signal(signal.SIGTERM)
        assert a.wait() == 0, a.tail()
    finally:
        a.kill()
        if b is not None:
            b.kill()
    everyone = BILLED | set(first) | set(second)
    for name, stripe in stripes.items():
        customers: dict[str, list[str]] = {}
        for c in stripe.customers():
            customers.setdefault(c["metadata"]["salesforce_account_id"], []).append(c["id"])
        assert set(customers) == everyone, name
        assert all(len(ids) == 1 for ids in customers.values()), f"duplicates in {name}"
        read_store(pg_url, billing_account=name).assert_links_match(
            {acc: ids[0] for acc, ids in customers.items()}
        )


def _can_make_pid_namespaces() -> bool:
    try:
        done = subprocess.run(
            ["unshare", "--pid", "--fork", "--kill-child", "true"], capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.mark.skipif(
    not _can_make_pid_namespaces(),
    reason="needs `unshare --pid` (root or user namespaces) to run the daemon as PID 1",
)
def test_as_pid_1_in_its_namespace_sigterm_still_stops_the_daemon_with_exit_0(
    sandboxes: SandboxPair, cli_env: dict[str, str], db_url: str
) -> None:
    # PID 1 gets no default signal actions: SIGTERM works only because the daemon handles it.
    daemon = Daemon(cli_env, prefix=("unshare", "--pid", "--fork", "--kill-child"))
    try:
        (started,) = daemon.event("daemon.started")
        assert started["holder"].endswith(":1")  # host:pid as the daemon sees itself
        daemon.event("run.finished")
        unshare = daemon.proc.pid
        children = Path(f"/proc/{unshare}/task/{unshare}/children").read_text().split()
        os.kill(int(children[0]), signal.SIGTERM)
        code = daemon.wait()
    finally:
        daemon.kill()
    assert code == 0, daemon.tail()
    assert daemon.seen("daemon.stopped")
