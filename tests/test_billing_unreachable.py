"""A billing account nobody answers for (a closed port): the run stops with exit 3 naming the
billing account and its URL, marks no record failed, leaves the cursor where it was, and does
not tell the admin to write to Stripe's support. (How many records in a row it takes before the
engine stops is the engine's choice; the adapter's fail-fast is in test_billing_port_contract.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fault_readback import closed_port_url, read_store

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair


def test_an_unreachable_billing_account_stops_the_run_with_exit_3_and_changes_nothing(
    sandboxes: SandboxPair,
    run_sync: Callable[..., RunReport],
    make_config: Callable[..., Any],
    db_url: str,
) -> None:
    url = closed_port_url()
    cfg = make_config(
        billing={"accounts": [{"name": "default", "api_base": url, "max_network_retries": 0}]}
    )

    report = run_sync("sync", config=cfg)

    assert report.exit_code == 3 and report.status == "failed"
    assert report.error is not None and "'default'" in report.error and url in report.error
    assert "support" not in report.error.lower()
    assert report.failed == 0 and report.created == 0
    view = read_store(db_url)
    assert view.cursor is None  # nothing read counts as applied
    assert not any(o.outcome == "failed" for o in view.outcomes.get(report.run_id, []))
    assert not view.links
