"""On the sandboxes: a re-check evaluates no record read as it was when its link was written,
and still updates every customer whose Salesforce fields changed, including one whose earlier
update failed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import BILLED

from connector.engine import RunReport
from connector.mapping import CustomerMapping
from connector.sandbox.run import SandboxPair
from connector.sandbox.stripe import api_error_body

ACME = "001000000000A01AAA"


@pytest.fixture
def evaluations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    original = CustomerMapping.evaluate

    def counted(self: CustomerMapping, record: Any, **kw: Any) -> dict[str, Any]:
        seen.append(str(record.get("AccountId")))
        return original(self, record, **kw)

    monkeypatch.setattr(CustomerMapping, "evaluate", counted)
    return seen


def test_a_recheck_evaluates_only_changed_records_and_a_failed_update_is_evaluated_again(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], evaluations: list[str]
) -> None:
    run_sync("backfill")
    assert set(evaluations) == BILLED
    sandboxes.salesforce.advance_clock(3600)

    evaluations.clear()
    report = run_sync("recheck")
    assert report.unchanged == len(BILLED) and report.billing_calls == 0
    assert evaluations == []  # the connector's own write-backs change nothing the mapping reads

    # A changed name: evaluated and updated; the others still not evaluated.
    sandboxes.salesforce.update("Account", ACME, {"Name": "Acme Renamed"})
    sandboxes.salesforce.advance_clock(3600)
    fault = sandboxes.stripe.inject_fault(
        status=400, body=api_error_body(), method="POST", path=r"^/v1/customers/cus_", count=1
    )
    evaluations.clear()
    failed = run_sync("recheck")
    assert fault.hits == 1 and failed.failed == 1
    assert evaluations == [ACME]

    # The failed update stored no digest: the next re-check evaluates it again and updates it.
    evaluations.clear()
    again = run_sync("recheck")
    assert again.updated == 1 and again.billing_calls == 1 and evaluations == [ACME]
    names = {
        c["metadata"]["salesforce_account_id"]: c["name"] for c in sandboxes.stripe.customers()
    }
    assert names[ACME] == "Acme Renamed"

    evaluations.clear()
    settled = run_sync("recheck")
    assert settled.unchanged == len(BILLED) and settled.billing_calls == 0 and evaluations == []


def test_a_changed_mapping_evaluates_every_record(
    sandboxes: SandboxPair,
    run_sync: Callable[..., RunReport],
    make_config: Callable[..., Any],
    evaluations: list[str],
    tmp_path: Any,
) -> None:
    from test_mapping_change_and_preview import mapping_copy

    run_sync("backfill", config=make_config(mappings_dir=mapping_copy(tmp_path / "a")))
    sandboxes.salesforce.advance_clock(3600)
    state = "  address.state:\n    from: Account.BillingState\n    transforms: [trim]\n"
    changed = mapping_copy(
        tmp_path / "b",
        replace=(state, state.replace("[trim]", "[trim, {lookup: {map: {IL: Illinois}}}]")),
    )
    evaluations.clear()

    report = run_sync("recheck", config=make_config(mappings_dir=changed))

    assert set(evaluations) == BILLED
    assert report.updated == 1 and report.billing_calls == 1
