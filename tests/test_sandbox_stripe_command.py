"""`billing-connector sandbox` serves the sample's Stripe accounts with Stripe's rate limits, as flags say.

The command runs as users run it (a child process); the test reads its output line by line
(waiting on the pipe, not on a clock), talks to the servers it printed, then interrupts it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import stripe

from connector.sandbox.sample import (
    STRIPE_EUROPE,
    STRIPE_ORG_KEY,
    STRIPE_UK,
    STRIPE_US,
    load_sample,
)
from connector.sandbox.stripe import StripeSandbox


def _start(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "sandbox", "--salesforce-port", "0", "--stripe-port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:  # blocks until the command prints; ends if it exits
        lines.append(line.rstrip("\n"))
        if line.startswith("Ctrl-C to stop."):
            break
    return proc, lines


@pytest.fixture
def running() -> Iterator[tuple[str, list[str]]]:
    # A refill of one request per 1000 s: what passes is the burst, however slow the machine.
    proc, lines = _start("--stripe-burst", "2", "--stripe-global-rate", "0.001")
    try:
        urls = [m.group(1) for line in lines if (m := re.match(r"Stripe sandbox:\s+(\S+)", line))]
        assert urls, "\n".join(lines) + (proc.stderr.read() if proc.stderr and proc.poll() is not None else "")
        yield urls[0], lines
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)  # only keeps a broken command from hanging the suite


def test_sandbox_command_serves_the_sample_accounts_with_limits(running: tuple[str, list[str]]) -> None:
    url, lines = running
    text = "\n".join(lines)
    for account in (STRIPE_EUROPE, STRIPE_UK, STRIPE_US):
        assert account in text
    assert "burst 2" in text and "global 0.001/s" in text
    eu = stripe.StripeClient(STRIPE_ORG_KEY, stripe_context=STRIPE_EUROPE, base_addresses={"api": url}, max_network_retries=0)
    made = eu.v1.customers.create(params={"name": "Umbrella Europe"})
    uk = stripe.StripeClient(STRIPE_ORG_KEY, stripe_context=STRIPE_UK, base_addresses={"api": url}, max_network_retries=0)
    # Shared in the sample's sharing group; the organization key's two requests use its burst of 2.
    assert uk.v1.customers.retrieve(made.id).name == "Umbrella Europe"
    with pytest.raises(stripe.RateLimitError) as err:
        uk.v1.customers.retrieve(made.id)
    assert (err.value.headers or {}).get("Stripe-Rate-Limited-Reason") == "global-rate"
    # The default account is still the single-account sandbox the printed config points at.
    key = next(m.group(1) for line in lines if (m := re.match(r"export STRIPE_API_KEY='([^']+)'", line)))
    listed = requests.get(f"{url}/v1/customers", auth=(key, ""), timeout=5).json()
    assert [c["id"] for c in listed["data"]] == ["cus_Adopt000000001"]


def test_sample_accounts_load_beside_the_default_one() -> None:
    with StripeSandbox(data=load_sample()["stripe"]) as sb:
        assert [c["id"] for c in sb.customers()] == ["cus_Adopt000000001"]
        assert sb.directory.shares_with(STRIPE_EUROPE, STRIPE_UK)
        assert not sb.directory.shares_with(STRIPE_EUROPE, STRIPE_US)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--stripe-burst", "0"], "--stripe-burst"),
        (["--stripe-endpoint-rate", "-1"], "--stripe-endpoint-rate"),
        (["--salesforce-latency", "-0.5"], "--salesforce-latency"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(args: list[str], named: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "connector", "sandbox", "--salesforce-port", "0", "--stripe-port", "0", *args],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert named in done.stderr + done.stdout


def test_a_bad_data_file_exits_2_naming_the_file_and_the_entry(tmp_path: Path) -> None:
    data = tmp_path / "accounts.yaml"
    data.write_text(
        "salesforce: {}\n"
        "stripe:\n"
        "  accounts:\n"
        "    - id: acct_1Good0000000000\n"
        "  sharing_groups:\n"
        "    - [acct_1Good0000000000, acct_1Missing000000]\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "connector", "sandbox", "--salesforce-port", "0", "--stripe-port", "0", "--data", str(data)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert str(data) in out.replace("\n", "") or data.name in out
    assert "sharing_groups[0]" in out and "acct_1Missing000000" in out
    assert "Traceback" not in out
