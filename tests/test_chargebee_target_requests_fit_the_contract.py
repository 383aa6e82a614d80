"""Every request the Chargebee target sends (creates, adoption, both kinds of update, batched
reads) and every answer it reads fit Chargebee's published description, as the sandbox saw them
on the wire. The checks are the sandbox contract test's own."""

from __future__ import annotations

from typing import Any

import pytest
from test_sandbox_chargebee_contract import document  # noqa: F401  (the description, a fixture)
from test_sandbox_chargebee_contract import test_every_answer_fits_the_description as answers_fit
from test_sandbox_chargebee_contract import (
    test_every_query_and_header_is_one_the_api_takes as queries_and_headers_fit,
)
from test_sandbox_chargebee_contract import (
    test_every_request_body_fits_the_description as bodies_fit,
)

from connector.billing.base import idempotency_key
from connector.billing.chargebee import ChargebeeSettings, ChargebeeTarget, customer_id_for
from connector.config import SecretSource
from connector.sandbox.chargebee import ChargebeeSandbox
from connector.sandbox.run import SANDBOX_CHARGEBEE_KEY

ORG = "00D000000000001AAA"


@pytest.fixture(scope="module")
def exchanges() -> list[dict[str, Any]]:
    with ChargebeeSandbox(business_entities=["eu", "us"], customer_sharing=True) as sb:
        target = ChargebeeTarget(
            ChargebeeSettings(
                name="cb",
                site="x",
                api_base=sb.url,
                business_entity_id="eu",
                customer_sharing=True,
                requests_per_minute=6000,
                salesforce_org_id=ORG,
            ),
            SecretSource({"CHARGEBEE_API_KEY": SANDBOX_CHARGEBEE_KEY}),
        )
        ids = []
        for i in range(3):
            acc = f"001000000000A0{i}AAA"
            ids.append(
                target.create_customer(
                    {
                        "company": f"Acme {i}",
                        "email": f"a{i}@acme.test",
                        "first_name": "Ada",
                        "phone": "+1 415 555 0100",
                        "billing_address": {
                            "line1": "1 Main St",
                            "city": "Springfield",
                            "country": "US",
                            "state": "IL",
                        },
                        "meta_data": {
                            "salesforce_account_id": acc,
                            "salesforce_org_id": ORG,
                            "tier": "gold",
                        },
                        "cf_region": "NA",
                    },
                    idempotency_key=idempotency_key("create", acc),
                )
            )
        sb.load(
            {
                "customers": [
                    {
                        "id": customer_id_for(ORG, "001000000000B01AAA"),
                        "business_entity_id": "us",
                        "meta_data": {"salesforce_account_id": "001000000000B01AAA"},
                    }
                ]
            }
        )
        target.create_customer(
            {
                "company": "Adopted",
                "meta_data": {
                    "salesforce_account_id": "001000000000B01AAA",
                    "salesforce_org_id": ORG,
                },
            },
            idempotency_key=idempotency_key("adopt"),
        )
        target.update_customer(
            ids[0],
            {
                "company": "Acme Group",
                "phone": "",
                "meta_data": {"tier": ""},
                "billing_address": {"city": "Chicago", "line1": ""},
            },
            idempotency_key=idempotency_key("update", ids[0]),
        )
        target.fetch_customers([*ids, "missing"])
        target.fetch_customer(ids[1])
        target.find_by_salesforce_account("001000000000A02AAA")
        return list(sb.exchanges)


def test_target_session_used_every_operation(exchanges: list[dict[str, Any]]) -> None:
    ops = {
        (
            e["method"],
            e["path"].rsplit("/", 1)[-1]
            if "update_billing_info" in e["path"]
            else e["path"].count("/"),
        )
        for e in exchanges
    }
    assert {
        ("POST", 3),
        ("POST", 4),
        ("POST", "update_billing_info"),
        ("GET", 3),
        ("GET", 4),
    } <= ops
    assert any(e["response"].get("api_error_code") == "duplicate_entry" for e in exchanges)


def test_target_requests_fit_the_description(
    document: dict[str, Any], exchanges: list[dict[str, Any]]
) -> None:
    bodies_fit(document, exchanges)
    queries_and_headers_fit(document, exchanges)


def test_answers_the_target_read_fit_the_description(
    document: dict[str, Any], exchanges: list[dict[str, Any]]
) -> None:
    answers_fit(document, exchanges)
