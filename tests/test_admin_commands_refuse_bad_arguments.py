"""Admin commands (`conflicts resolve`, `xref link`, `xref show`) as an admin types them, unset
shell variables and URL-copied ids included: a value that cannot be right exits 2 naming the
argument, with no traceback, before anything is contacted or written; a 15-character Account
id from a Salesforce URL is the same account as its 18-character form."""

from __future__ import annotations

import subprocess
import sys

import pytest

from connector.sandbox.run import SandboxPair
from connector.sandbox.salesforce import id18
from connector.state.store import StateStore

BA = "default"
# An Account id whose 15-character form has upper-case letters, so that its 18-character form
# differs from "15 characters + AAA" (id18 is the sandbox's own implementation of the suffix).
ACCOUNT_15 = "001Hs00000Xy9Zq"
ACCOUNT_18 = id18(ACCOUNT_15)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connector", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def requests_seen(sandboxes: SandboxPair) -> int:
    return int(sandboxes.salesforce.stats()["total"]) + int(sandboxes.stripe.stats()["total"])


def store_rows(db_url: str) -> tuple[list[object], list[object], list[object]]:
    """What an admin command could have changed: links, runs, conflicts."""
    store = StateStore.open(db_url)
    try:
        return (list(store.links.iter(BA)), store.runs.recent(limit=100), store.conflicts.list(None))
    finally:
        store.close()


def assert_refused(result: subprocess.CompletedProcess[str], argument: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert argument in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert "recorded as failed" not in result.stderr


def open_conflict(db_url: str) -> int:
    store = StateStore.open(db_url)
    try:
        return store.conflicts.open(
            "customer_linked_elsewhere", billing_account=BA, account_id=ACCOUNT_18,
            customer_id="cus_Gone000000001",
        ).id
    finally:
        store.close()


@pytest.mark.parametrize(
    "value",
    ["", "cus_ with space", "cus_\x1b[31mred", "cus_" + "x" * 300],
    ids=["empty", "space", "control", "too-long"],
)
def test_conflicts_resolve_refuses_an_empty_or_malformed_link_and_keeps_the_conflict_open(
    sandboxes: SandboxPair, cli_env: dict[str, str], db_url: str, value: str
) -> None:
    conflict_id = open_conflict(db_url)
    before = store_rows(db_url)

    result = cli("conflicts", "resolve", str(conflict_id), "--link", value, env=cli_env)

    assert_refused(result, "--link")
    assert store_rows(db_url) == before
    assert [c.status for c in before[2]] == ["open"]
    assert requests_seen(sandboxes) == 0


@pytest.mark.parametrize("number", ["99999999999999999999", "0"])
def test_conflicts_resolve_refuses_a_number_that_cannot_name_a_conflict(
    sandboxes: SandboxPair, cli_env: dict[str, str], db_url: str, number: str
) -> None:
    open_conflict(db_url)
    before = store_rows(db_url)

    result = cli("conflicts", "resolve", "--ignore", "--", number, env=cli_env)

    assert_refused(result, "CONFLICT_ID")
    assert store_rows(db_url) == before


@pytest.mark.parametrize(
    ("account", "customer", "argument"),
    [
        ("not-an-id", "cus_X", "ACCOUNT"),
        ("001Hs00000Xy9Z", "cus_X", "ACCOUNT"),  # 14 characters: one lost when copying
        ("801000000000001AAA", "cus_X", "ACCOUNT"),  # an Order id where an Account belongs
        (ACCOUNT_18, "", "CUSTOMER"),  # xref link ACC "$UNSET"
        (ACCOUNT_18, "cus X", "CUSTOMER"),
    ],
    ids=["not-an-id", "short", "order-id", "empty-customer", "space-in-customer"],
)
def test_xref_link_refuses_malformed_ids_and_changes_nothing(
    sandboxes: SandboxPair, cli_env: dict[str, str], db_url: str,
    account: str, customer: str, argument: str,
) -> None:
    spare = sandboxes.stripe.load({"customers": [{"name": "Spare"}]})[0]
    before = store_rows(db_url)

    result = cli("xref", "link", account, customer.replace("cus_X", spare), env=cli_env)
    # The customer offered with the bad id can still be linked to a real account afterwards.
    then = cli("xref", "link", ACCOUNT_18, spare, env=cli_env)

    assert_refused(result, argument)
    assert requests_seen(sandboxes) == 1  # only the second command's customer lookup
    assert then.returncode == 0, then.stderr
    links = store_rows(db_url)[0]
    assert [(lk.account_id, lk.customer_id) for lk in links] == [(ACCOUNT_18, spare)]  # type: ignore[attr-defined]
    assert before[0] == []


def test_xref_link_with_the_15_character_id_hits_the_already_linked_guard(
    sandboxes: SandboxPair, cli_env: dict[str, str], db_url: str
) -> None:
    first, second = sandboxes.stripe.load({"customers": [{"name": "First"}, {"name": "Second"}]})
    linked = cli("xref", "link", ACCOUNT_18, first, env=cli_env)

    refused = cli("xref", "link", ACCOUNT_15, second, env=cli_env)
    after_refusal = store_rows(db_url)[0]
    moved = cli("xref", "link", ACCOUNT_15, second, "--force", env=cli_env)
    shown = cli("xref", "show", ACCOUNT_15, env=cli_env)

    assert linked.returncode == 0, linked.stderr
    assert refused.returncode == 2 and "--force" in refused.stderr, refused.stderr
    assert [(lk.account_id, lk.customer_id) for lk in after_refusal] == [(ACCOUNT_18, first)]  # type: ignore[attr-defined]
    assert moved.returncode == 0, moved.stderr
    assert f"{ACCOUNT_18} linked to {second}" in moved.stdout
    links = store_rows(db_url)[0]
    assert [(lk.account_id, lk.customer_id) for lk in links] == [(ACCOUNT_18, second)]  # type: ignore[attr-defined]
    assert shown.returncode == 0 and second in shown.stdout, shown.stderr


def test_xref_show_refuses_a_malformed_account_id(
    sandboxes: SandboxPair, cli_env: dict[str, str]
) -> None:
    result = cli("xref", "show", "not-an-id", env=cli_env)

    assert_refused(result, "ACCOUNT")
