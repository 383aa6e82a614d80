"""The cursor invariant: the incremental cursor moves to a time T only when every change stamped
before T was read by a completed run. T is Salesforce's clock when the run began reading (a
resumed backfill: when its first attempt began), never the newest row some query returned.

Both scenarios from issue 12, on SQLite and PostgreSQL; time moves by the sandbox's clock, and
edits happen mid-run from the engine's own progress callback (no sleeping, no timing)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from connector.app import open_pipeline
from connector.config import Config, SecretSource
from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

ACME, INITECH, MULTI = "001000000000A01AAA", "001000000000A02AAA", "001000000000M01AAA"


def names(sandboxes: SandboxPair) -> dict[str, str]:
    return {c["metadata"]["salesforce_account_id"]: c.get("name") for c in sandboxes.stripe.customers()}


def run(cfg: Config, secrets: SecretSource, mode: str = "sync", *, on_progress: Any = None,
        stop: threading.Event | None = None, **kwargs: Any) -> RunReport:
    with open_pipeline(cfg, secrets, on_progress=on_progress, stop=stop) as p:
        return p.engine.run(mode, **kwargs)  # type: ignore[arg-type]


def add_accounts(sandboxes: SandboxPair, n: int) -> list[str]:
    sf = sandboxes.salesforce
    ids = []
    for i in range(n):
        acc = sf.create("Account", {"Name": f"Bulk {i:04d}", "BillingCountry": "Germany"})
        order = sf.create("Order", {"AccountId": acc, "Status": "Draft", "EffectiveDate": "2026-04-01"})
        sf.update("Order", order, {"Status": "Activated"})
        ids.append(acc)
    return ids


def test_renames_made_while_a_backfill_was_interrupted_reach_billing_after_it_resumes(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource
) -> None:
    ids = add_accounts(sandboxes, 260)  # two pages of 200
    cfg = make_config(salesforce={"page_size": 200},
                      billing={"accounts": [{"id": "default", "api_base": sandboxes.stripe.url,
                                             "max_requests_per_second": 1000}]})
    stop = threading.Event()

    def kill_in_page_two(done: int, total: int | None) -> None:
        if done >= 230:
            stop.set()

    first = run(cfg, secrets, "backfill", on_progress=kill_in_page_two, stop=stop)
    assert first.status == "interrupted"
    done = [a for a in ids if a in names(sandboxes)]
    assert 200 <= len(done) < len(ids) + 3
    # While the backfill is down: accounts it had done are renamed; an hour later, one it had
    # not reached yet changes too (the newest row the resumed backfill will read).
    renamed = done[:20]
    for a in renamed:
        sandboxes.salesforce.update("Account", a, {"Name": f"Renamed {a}"})
    sandboxes.salesforce.advance_clock(3600)
    sandboxes.salesforce.update("Account", ids[-1], {"Phone": "+49 30 1234567"})

    resumed = run(cfg, secrets, "backfill")
    syncs = [run(cfg, secrets) for _ in range(2)]

    assert resumed.status == "succeeded" and all(s.exit_code == 0 for s in syncs)
    now = names(sandboxes)
    assert len(now) == len(ids) + 3
    lost = [a for a in renamed if now[a] != f"Renamed {a}"]
    assert not lost, f"{len(lost)} renames lost"


def test_a_record_edited_late_in_the_retry_pass_does_not_move_the_cursor_past_an_earlier_edit(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource
) -> None:
    cfg = make_config()
    run(cfg, secrets, "backfill")
    customers = {c["metadata"]["salesforce_account_id"]: c["id"] for c in sandboxes.stripe.customers()}
    # Initech's next updates are refused: it goes on the retry list and stays there.
    sandboxes.stripe.inject_fault(method="POST", path=f"/v1/customers/{customers[INITECH]}$", status=400,
                                  count=2, body={"error": {"type": "invalid_request_error", "message": "refused"}})
    sandboxes.salesforce.update("Account", INITECH, {"Phone": "+49 30 1111111"})
    sandboxes.salesforce.advance_clock(600)
    failing = run(cfg, secrets)
    assert failing.failed == 1
    # A sync later, Initech's change is behind the cursor: only the retry pass reads it again.
    sandboxes.salesforce.advance_clock(600)
    sandboxes.salesforce.update("Account", MULTI, {"Phone": "+33 1 23 45 67 89"})
    run(cfg, secrets)
    sandboxes.salesforce.clear_faults()
    sandboxes.stripe.clear_faults()
    sandboxes.salesforce.advance_clock(600)
    sandboxes.salesforce.update("Account", MULTI, {"Phone": "+33 1 23 45 67 00"})
    edited = threading.Event()

    def edit_while_running(done: int, total: int | None) -> None:
        # The main pass has read its page: Acme is renamed early, Initech (on the retry list)
        # is edited an hour later, before the retry pass reads it.
        if not edited.is_set():
            edited.set()
            sandboxes.salesforce.update("Account", ACME, {"Name": "Acme Renamed Early"})
            sandboxes.salesforce.advance_clock(3600)
            sandboxes.salesforce.update("Account", INITECH, {"Name": "Initech Edited Late"})

    long_sync = run(cfg, secrets, on_progress=edit_while_running, retry_all=True)
    assert edited.is_set() and long_sync.exit_code == 0
    assert long_sync.orders_read == 3  # Multi's two orders in the main pass, Initech's in the retry pass
    sandboxes.salesforce.advance_clock(600)
    after = run(cfg, secrets)

    assert after.exit_code == 0
    assert names(sandboxes)[ACME] == "Acme Renamed Early"
    assert names(sandboxes)[INITECH] == "Initech Edited Late"
