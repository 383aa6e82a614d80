"""An update that needs two calls and gets only the first one through (Chargebee: the customer
fields with `POST /customers/{id}`, the billing address with `update_billing_info`).

End to end on the Chargebee sandbox with a fault on update_billing_info: the link records what
Chargebee holds (the applied fields, the old address), the record is reported failed (retried)
or refused (with Chargebee's reason for the admin), the next run sends exactly the rest in one
call, and the run after it sends nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from billing_targets import TargetUnderTest
from fault_readback import read_store

from connector.billing.chargebee import customer_id_for
from connector.config import Config, SecretSource
from connector.engine import RunReport
from connector.mapping import payload_hash
from connector.sandbox.run import SANDBOX_ORG_ID, SandboxPair

ACME = "001000000000A01AAA"
BILLING_INFO = r"/update_billing_info$"

pytestmark = pytest.mark.parametrize("target", ["chargebee"], indirect=True)


def write_requests(target: TargetUnderTest) -> list[dict[str, Any]]:
    return [e for e in target.server.exchanges if e["method"] == "POST"]  # type: ignore[union-attr]


def change_acme(sandboxes: SandboxPair) -> None:
    sandboxes.salesforce.update(
        "Account", ACME, {"Phone": "+1 217 555 0199", "BillingCity": "Chicago"}
    )


def test_a_failed_address_call_links_what_was_applied_and_the_next_run_sends_only_the_rest(
    sandboxes: SandboxPair,
    target: TargetUnderTest,
    target_run: Callable[..., RunReport],
    target_config: Callable[..., Config],
    target_secrets: SecretSource,
    db_url: str,
) -> None:
    assert target_run("backfill").exit_code == 0
    before = read_store(db_url).links[ACME]
    cid = before.customer_id
    change_acme(sandboxes)
    target.server.inject_fault(status=500, method="POST", path=BILLING_INFO, count=1)

    first = target_run("sync")

    held = target.server.get_customer(cid)
    assert held is not None
    assert held["phone"] == "+12175550199"  # the first call was applied
    assert held["billing_address"]["city"] == "Springfield"  # the second was not
    assert first.failed == 1 and first.exit_code == 1
    view = read_store(db_url)
    link = view.links[ACME]
    assert link.customer_id == cid and link.status == "active"
    # The link claims what Chargebee holds: the new phone, the old address.
    assert link.payload["phone"] == "+12175550199"
    assert link.payload["billing_address"] == before.payload["billing_address"]
    assert link.payload_hash == payload_hash(link.payload)
    outcome = view.outcome(first.run_id, ACME)
    assert outcome.outcome == "failed" and "billing_address" in (outcome.error_message or "")
    assert ACME in view.retries

    target.server.exchanges.clear()  # type: ignore[union-attr]
    second = target_run("retry", retry_all=True)

    assert second.exit_code == 0 and second.updated == 1
    [sent] = write_requests(target)
    assert sent["path"].endswith(f"/customers/{cid}/update_billing_info")
    assert {k for k, _ in sent["form"]} >= {"billing_address[city]"}
    assert not [k for k, _ in sent["form"] if not k.startswith("billing_address[")]
    held = target.server.get_customer(cid)
    assert held is not None and held["billing_address"]["city"] == "Chicago"
    assert held["phone"] == "+12175550199"
    assert not read_store(db_url).retries

    target.server.exchanges.clear()  # type: ignore[union-attr]
    writes = target.writes
    third = target_run("backfill")

    assert third.exit_code == 0 and third.updated == third.created == 0
    assert write_requests(target) == [] and target.writes == writes
    assert target.by_account(target_config(), target_secrets)[ACME][0].id == cid


def test_a_refused_address_is_reported_refused_with_chargebees_reason(
    sandboxes: SandboxPair,
    target: TargetUnderTest,
    target_run: Callable[..., RunReport],
    db_url: str,
) -> None:
    assert target_run("backfill").exit_code == 0
    cid = read_store(db_url).links[ACME].customer_id
    change_acme(sandboxes)
    body = {
        "message": "billing_address[zip] : invalid zip code",
        "type": "invalid_request",
        "api_error_code": "param_wrong_value",
        "param": "billing_address[zip]",
        "error_code": "param_wrong_value",
        "error_msg": "billing_address[zip] : invalid zip code",
        "error_param": "billing_address[zip]",
        "http_status_code": 400,
    }
    target.server.inject_fault(status=400, body=body, method="POST", path=BILLING_INFO, count=1)

    report = target_run("sync")

    assert report.refused == 1 and report.failed == 0 and report.exit_code == 1
    view = read_store(db_url)
    outcome = view.outcome(report.run_id, ACME)
    assert outcome.outcome == "refused" and outcome.error_code == "param_wrong_value"
    assert "invalid zip code" in (outcome.error_message or "")
    assert view.links[ACME].payload["phone"] == "+12175550199"
    assert target.server.get_customer(cid)["billing_address"]["city"] == "Springfield"  # type: ignore[index]
    # Retried (the rest is never forgotten), and sent once the refusal is gone.
    assert ACME in view.retries
    again = target_run("retry", retry_all=True)
    assert again.exit_code == 0
    assert target.server.get_customer(cid)["billing_address"]["city"] == "Chicago"  # type: ignore[index]


def test_a_create_that_adopted_its_customer_and_stopped_half_way_links_the_id(
    target: TargetUnderTest,
    target_run: Callable[..., RunReport],
    target_config: Callable[..., Config],
    target_secrets: SecretSource,
    db_url: str,
) -> None:
    # An earlier create made the customer and its answer was lost with the store that knew
    # (restored from a backup): the create finds its deterministic id taken by a customer that
    # names the same account, adopts it, and brings it up to date in two calls.
    cid = customer_id_for(SANDBOX_ORG_ID, ACME)
    target.server.load(  # type: ignore[union-attr]
        {
            "customers": [
                {
                    "id": cid,
                    "company": "Acme (old)",
                    "billing_address": {"city": "Old Town", "country": "US"},
                    "meta_data": {
                        "salesforce_account_id": ACME,
                        "salesforce_org_id": SANDBOX_ORG_ID,
                    },
                }
            ]
        }
    )
    target.server.inject_fault(status=500, method="POST", path=BILLING_INFO, count=1)

    first = target_run("backfill")

    assert first.failed == 1 and first.created == 2
    link = read_store(db_url).links[ACME]
    assert link.customer_id == cid  # linked, though the record failed: never created twice
    assert "billing_address" not in link.payload  # not claimed: Chargebee still has Old Town
    assert target.server.get_customer(cid)["company"] == "Acme Corp"  # type: ignore[index]
    assert target.server.get_customer(cid)["billing_address"]["city"] == "Old Town"  # type: ignore[index]
    second = target_run("retry", retry_all=True)
    assert second.exit_code == 0 and second.created == 0
    [customer] = target.by_account(target_config(), target_secrets)[ACME]
    assert customer.id == cid and customer.payload["billing_address"]["city"] == "Springfield"
