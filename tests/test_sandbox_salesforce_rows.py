"""sObject rows, sObject Collections, describe, limits and sessions on the Salesforce sandbox,
through the unmodified simple-salesforce client, with Salesforce's own status codes and bodies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connector.salesforce import loopback_session
from connector.sandbox.salesforce import SalesforceSandbox

CLOCK = datetime(2026, 1, 5, 3, 41, 5, tzinfo=UTC)
ACME, GLOBEX, GONE = "001000000000001AAA", "001000000000002AAA", "001000000000003AAA"
JANE = "003000000000001AAA"
ORDER = "801000000000001AAA"


def org_data() -> dict[str, list[dict[str, Any]]]:
    return {
        "Account": [
            {"Id": ACME, "Name": "Acme", "BillingCountry": "US"},
            {"Id": GLOBEX, "Name": "Globex"},
            {"Id": GONE, "Name": "Gone Ltd"},
        ],
        "Contact": [
            {
                "Id": JANE,
                "AccountId": ACME,
                "FirstName": "Jane",
                "LastName": "Doe",
                "Email": "jane@acme.example",
            }
        ],
        "Order": [
            {"Id": ORDER, "AccountId": ACME, "Status": "Draft", "EffectiveDate": "2026-01-01"}
        ],
    }


@pytest.fixture
def org() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox(org_data(), clock_start=CLOCK) as sb:
        sb.delete("Account", GONE)
        yield sb


@pytest.fixture
def sf(org: SalesforceSandbox) -> Salesforce:
    return Salesforce(
        instance_url=org.url,
        session_id=org.access_token,
        session=loopback_session(org.url),
        version="62.0",
    )


# --- single rows ------------------------------------------------------------------------------


def test_create_answers_201_with_the_new_id_and_get_returns_every_field(
    org: SalesforceSandbox, sf: Salesforce
) -> None:
    created = sf.Account.create({"Name": "Initech", "BillingCountry": "Germany"})

    assert list(created) == ["id", "success", "errors"]
    assert created["success"] is True and created["errors"] == []
    assert created["id"].startswith("001") and len(created["id"]) == 18
    rec = sf.Account.get(created["id"])
    described = [f["name"] for f in sf.Account.describe()["fields"]]
    assert list(rec) == ["attributes", *described]
    assert rec["attributes"] == {
        "type": "Account",
        "url": f"/services/data/v62.0/sobjects/Account/{created['id']}",
    }
    assert rec["Name"] == "Initech" and rec["IsDeleted"] is False and rec["Region__c"] == "EMEA"
    assert rec["CreatedDate"] == rec["SystemModstamp"] == rec["LastModifiedDate"]
    assert org.get("Account", created["id"])["Name"] == "Initech"


def test_update_answers_204_and_moves_system_modstamp(
    org: SalesforceSandbox, sf: Salesforce
) -> None:
    before = org.get("Account", ACME)["SystemModstamp"]

    assert sf.Account.update(ACME, {"Phone": "+1 555 0100"}) == 204

    after = org.get("Account", ACME)
    assert after["Phone"] == "+1 555 0100"
    assert after["SystemModstamp"] > before and after["LastModifiedDate"] == after["SystemModstamp"]


def test_activating_an_order_sets_status_code_and_activated_date(
    org: SalesforceSandbox, sf: Salesforce
) -> None:
    assert (
        org.get("Order", ORDER)["StatusCode"] == "Draft"
        and org.get("Order", ORDER)["ActivatedDate"] is None
    )

    sf.Order.update(ORDER, {"Status": "Activated"})

    rec = sf.Order.get(ORDER)
    assert rec["StatusCode"] == "Activated" and rec["ActivatedDate"] == rec["SystemModstamp"]


def test_delete_answers_204_and_a_deleted_row_is_404_entity_is_deleted(
    org: SalesforceSandbox, sf: Salesforce
) -> None:
    assert sf.Account.delete(GLOBEX) == 204

    with pytest.raises(SalesforceResourceNotFound) as err:
        sf.Account.get(GLOBEX)
    assert err.value.content == [
        {"message": "entity is deleted", "errorCode": "ENTITY_IS_DELETED", "fields": []}
    ]
    assert org.get("Account", GLOBEX)["IsDeleted"] is True
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.delete(GLOBEX)


def test_unknown_rows_and_objects_are_404_not_found(sf: Salesforce) -> None:
    for call in (
        lambda: sf.Account.get("001000000000999AAA"),
        lambda: sf.Opportunity.get("006000000000001AAA"),
        lambda: sf.Opportunity.describe(),
    ):
        with pytest.raises(SalesforceResourceNotFound) as err:
            call()
        assert err.value.content == [
            {"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}
        ]


@pytest.mark.parametrize(
    ("body", "code", "fields"),
    [
        ({"Name": "X", "Nmae": "typo"}, "INVALID_FIELD", []),
        (
            {"Name": "X", "SystemModstamp": "2026-01-01T00:00:00.000+0000"},
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            ["SystemModstamp"],
        ),
        ({"Name": "X", "Region__c": "EMEA"}, "INVALID_FIELD_FOR_INSERT_UPDATE", ["Region__c"]),
        ({"BillingCountry": "US"}, "REQUIRED_FIELD_MISSING", ["Name"]),
        ({"Name": "X" * 256}, "STRING_TOO_LONG", ["Name"]),
        ({"Name": "X", "ParentId": "not-an-id"}, "MALFORMED_ID", ["ParentId"]),
        (
            {"Name": "X", "ParentId": "001000000000999AAA"},
            "INVALID_CROSS_REFERENCE_KEY",
            ["ParentId"],
        ),
    ],
)
def test_create_refuses_bad_bodies_with_400(
    sf: Salesforce, body: dict[str, Any], code: str, fields: list[str]
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Account.create(body)

    assert err.value.status == 400
    [error] = err.value.content
    assert error["errorCode"] == code and error["fields"] == fields


def test_update_refuses_an_unknown_field_and_changes_nothing(
    org: SalesforceSandbox, sf: Salesforce
) -> None:
    before = org.get("Account", ACME)
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Account.update(ACME, {"Name": "New", "Foo__c": 1})
    assert err.value.content == [
        {
            "message": "No such column 'Foo__c' on sobject of type Account",
            "errorCode": "INVALID_FIELD",
            "fields": [],
        }
    ]
    assert org.get("Account", ACME) == before


def test_contact_email_is_validated(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Contact.update(JANE, {"Email": "not an email"})
    assert err.value.content[0]["errorCode"] == "INVALID_EMAIL_ADDRESS"


# --- sObject Collections ------------------------------------------------------------------------


def _item(rid: str, **fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Account"}, "id": rid, **fields}


def test_collection_update_answers_per_record_in_request_order(
    org: SalesforceSandbox, sf: Salesforce
) -> None:
    records = [
        _item(ACME, Stripe_Customer_Id__c="cus_A"),
        _item("001bad", Name="x"),
        _item("001000000000999AAA", Name="x"),
        _item(GONE, Name="x"),
        _item(GLOBEX, Nope__c="x"),
        {"attributes": {"type": "Account"}, "Name": "no id"},
        _item(GLOBEX, Stripe_Customer_Id__c="cus_G"),
    ]
    results = sf.restful(
        "composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records}
    )

    assert results[0] == {"id": ACME, "success": True, "errors": []}
    assert results[1] == {
        "success": False,
        "errors": [
            {
                "statusCode": "MALFORMED_ID",
                "message": "Account ID: id value of incorrect type: 001bad",
                "fields": ["Id"],
            }
        ],
    }
    assert [r["errors"][0]["statusCode"] for r in results[2:6]] == [
        "INVALID_CROSS_REFERENCE_KEY",
        "ENTITY_IS_DELETED",
        "INVALID_FIELD",
        "MISSING_ARGUMENT",
    ]
    assert all("id" not in r and r["success"] is False for r in results[1:6])
    assert results[6] == {"id": GLOBEX, "success": True, "errors": []}
    assert org.get("Account", ACME)["Stripe_Customer_Id__c"] == "cus_A"
    assert org.get("Account", GLOBEX)["Stripe_Customer_Id__c"] == "cus_G"


def test_collection_update_all_or_none_rolls_back_every_record(
    org: SalesforceSandbox, sf: Salesforce
) -> None:
    before = org.get("Account", ACME)
    records = [_item(ACME, Stripe_Customer_Id__c="cus_A"), _item("001000000000999AAA", Name="x")]

    results = sf.restful(
        "composite/sobjects", method="PATCH", json={"allOrNone": True, "records": records}
    )

    assert results[0] == {
        "id": ACME,
        "success": False,
        "errors": [
            {
                "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
                "fields": [],
            }
        ],
    }
    assert results[1]["success"] is False and "id" not in results[1]
    assert org.get("Account", ACME) == before


def test_collections_take_at_most_200_records(sf: Salesforce) -> None:
    records = [_item(ACME, Description=str(i)) for i in range(201)]
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.restful(
            "composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records}
        )
    assert err.value.content == [
        {
            "message": "record limit reached. cannot submit more than 200 records into this call",
            "errorCode": "EXCEEDED_ID_LIMIT",
        }
    ]
    ok = sf.restful(
        "composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records[:200]}
    )
    assert len(ok) == 200 and all(r["success"] for r in ok)


def test_collection_create_and_delete(org: SalesforceSandbox, sf: Salesforce) -> None:
    created = sf.restful(
        "composite/sobjects",
        method="POST",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Account"}, "Name": "One"},
                {"attributes": {"type": "Contact"}, "FirstName": "No last name"},
            ],
        },
    )
    assert created[0]["success"] is True and created[0]["id"].startswith("001")
    assert (
        created[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING" and "id" not in created[1]
    )

    deleted = sf.restful(
        "composite/sobjects",
        method="DELETE",
        params={"ids": f"{created[0]['id']},001RM000003oLrB000"},
    )
    assert deleted[0] == {"id": created[0]["id"], "success": True, "errors": []}
    assert deleted[1]["success"] is False and "id" not in deleted[1]
    assert org.get("Account", created[0]["id"])["IsDeleted"] is True


# --- describe -----------------------------------------------------------------------------------


def test_account_describe_lists_fields_with_realistic_metadata(sf: Salesforce) -> None:
    d = sf.Account.describe()
    fields = {f["name"]: f for f in d["fields"]}

    assert d["name"] == "Account" and d["keyPrefix"] == "001" and d["mergeable"] is True
    assert d["urls"]["rowTemplate"] == "/services/data/v62.0/sobjects/Account/{ID}"
    assert {
        k: fields["Id"][k] for k in ("type", "length", "nillable", "updateable", "soapType")
    } == {"type": "id", "length": 18, "nillable": False, "updateable": False, "soapType": "tns:ID"}
    assert (fields["Name"]["type"], fields["Name"]["length"], fields["Name"]["nillable"]) == (
        "string",
        255,
        False,
    )
    assert (fields["BillingCity"]["length"], fields["BillingCity"]["nillable"]) == (40, True)
    assert fields["ParentId"]["type"] == "reference"
    assert (
        fields["ParentId"]["referenceTo"] == ["Account"]
        and fields["ParentId"]["relationshipName"] == "Parent"
    )
    assert fields["Name"]["referenceTo"] == [] and fields["Name"]["relationshipName"] is None
    assert (
        fields["SystemModstamp"]["type"] == "datetime"
        and fields["SystemModstamp"]["updateable"] is False
    )
    assert fields["SystemModstamp"]["soapType"] == "xsd:dateTime"
    assert (
        fields["IsDeleted"]["type"] == "boolean"
        and fields["IsDeleted"]["soapType"] == "xsd:boolean"
    )
    stripe = fields["Stripe_Customer_Id__c"]
    assert (
        stripe["type"],
        stripe["length"],
        stripe["custom"],
        stripe["updateable"],
        stripe["calculated"],
    ) == ("string", 255, True, True, False)
    region = fields["Region__c"]
    assert (
        region["calculated"] is True
        and region["updateable"] is False
        and region["calculatedFormula"]
    )
    children = {
        (c["childSObject"], c["field"], c["relationshipName"]) for c in d["childRelationships"]
    }
    assert {
        ("Account", "ParentId", "ChildAccounts"),
        ("Contact", "AccountId", "Contacts"),
        ("Order", "AccountId", "Orders"),
    } <= children


def test_order_and_quote_describe_carry_the_cpq_relationships(sf: Salesforce) -> None:
    order = {f["name"]: f for f in sf.Order.describe()["fields"]}
    quote = {f["name"]: f for f in sf.SBQQ__Quote__c.describe()["fields"]}

    assert (
        order["SBQQ__Quote__c"]["relationshipName"] == "SBQQ__Quote__r"
        and order["SBQQ__Quote__c"]["custom"]
    )
    assert order["BillToContactId"]["referenceTo"] == ["Contact"]
    assert order["StatusCode"]["type"] == "picklist" and not order["StatusCode"]["updateable"]
    assert {v["value"] for v in order["StatusCode"]["picklistValues"]} == {"Draft", "Activated"}
    assert (order["Name"]["type"], order["Name"]["length"]) == ("string", 80)
    assert order["EffectiveDate"]["type"] == "date" and order["TotalAmount"]["type"] == "currency"
    assert quote["SBQQ__PrimaryContact__c"]["relationshipName"] == "SBQQ__PrimaryContact__r"
    assert quote["SBQQ__Account__c"]["referenceTo"] == ["Account"]


def test_global_describe_lists_the_objects(sf: Salesforce) -> None:
    d = sf.describe()
    assert d["encoding"] == "UTF-8" and d["maxBatchSize"] == 200
    assert {(o["name"], o["keyPrefix"]) for o in d["sobjects"]} == {
        ("Account", "001"),
        ("Contact", "003"),
        ("Order", "801"),
        ("SBQQ__Quote__c", "a0X"),
        ("Stripe_Account__c", "a0S"),  # the record an order's Stripe account lookup names
    }


def test_a_custom_stripe_id_field_name_is_used_everywhere() -> None:
    with SalesforceSandbox(
        {"Account": [{"Id": ACME, "Name": "A", "Billing_Id__c": "cus_1"}]},
        stripe_id_field="Billing_Id__c",
    ) as sb:
        sf = Salesforce(
            instance_url=sb.url,
            session_id=sb.access_token,
            session=loopback_session(sb.url),
            version="62.0",
        )
        assert "Billing_Id__c" in {f["name"] for f in sf.Account.describe()["fields"]}
        assert (
            sf.query("SELECT Billing_Id__c FROM Account")["records"][0]["Billing_Id__c"] == "cus_1"
        )
        with pytest.raises(SalesforceMalformedRequest):
            sf.query("SELECT Stripe_Customer_Id__c FROM Account")


# --- limits, versions, sessions -------------------------------------------------------------------


def test_every_answer_reports_api_usage_and_limits_agree(
    org: SalesforceSandbox, sf: Salesforce
) -> None:
    sf.query("SELECT Id FROM Account")
    assert sf.api_usage["api-usage"].used == 1 and sf.api_usage["api-usage"].total == 15000
    account = sf.Account  # each SFType keeps its own copy of the header
    account.get(ACME)
    assert account.api_usage["api-usage"].used == 2

    limits = sf.limits()
    assert limits["DailyApiRequests"] == {"Max": 15000, "Remaining": 15000 - 3}
    assert org.api_calls_used == 3


def test_over_the_daily_allowance_requests_are_refused_with_403(
    org: SalesforceSandbox, sf: Salesforce
) -> None:
    org.set_daily_limit(2)
    sf.query("SELECT Id FROM Account")
    sf.query("SELECT Id FROM Account")

    with pytest.raises(SalesforceRefusedRequest) as err:
        sf.query("SELECT Id FROM Account")
    assert err.value.status == 403
    assert err.value.content == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert org.api_calls_used == 2
    org.reset_api_usage()
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 2


def test_version_list_needs_no_session_and_is_not_counted(org: SalesforceSandbox) -> None:
    resp = loopback_session(org.url).get("https://login.salesforce.com/services/data/")

    assert resp.status_code == 200 and "Sforce-Limit-Info" not in resp.headers
    assert {"label": "Winter '25", "url": "/services/data/v62.0", "version": "62.0"} in resp.json()
    assert resp.json()[-1]["version"] == "62.0"
    assert org.api_calls_used == 0


def test_a_version_newer_than_the_org_is_not_found(org: SalesforceSandbox) -> None:
    sf = Salesforce(
        instance_url=org.url,
        session_id=org.access_token,
        session=loopback_session(org.url),
        version="99.0",
    )
    with pytest.raises(SalesforceResourceNotFound):
        sf.query("SELECT Id FROM Account")


def test_an_expired_or_unknown_token_is_401_invalid_session_id(
    org: SalesforceSandbox, sf: Salesforce
) -> None:
    sf.query("SELECT Id FROM Account")
    org.expire_sessions()

    with pytest.raises(SalesforceExpiredSession) as err:
        sf.query("SELECT Id FROM Account")
    assert err.value.status == 401
    assert err.value.content == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]
    fresh = org.issue_token()
    sf2 = Salesforce(
        instance_url=org.url, session_id=fresh, session=loopback_session(org.url), version="62.0"
    )
    assert sf2.query("SELECT Id FROM Account")["totalSize"] == 2
    org.accept_token(org.access_token)
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 2
    stranger = Salesforce(
        instance_url=org.url, session_id="nope", session=loopback_session(org.url), version="62.0"
    )
    with pytest.raises(SalesforceExpiredSession):
        stranger.query("SELECT Id FROM Account")


def test_unknown_paths_methods_and_rate_limits_answer_in_salesforce_list_form(
    org: SalesforceSandbox, sf: Salesforce
) -> None:
    with pytest.raises(SalesforceResourceNotFound) as missing:
        sf.restful("nothing/here")
    assert missing.value.content[0]["errorCode"] == "NOT_FOUND"

    with pytest.raises(SalesforceGeneralError) as method:
        sf.restful("limits", method="POST")
    assert (
        method.value.status == 405 and method.value.content[0]["errorCode"] == "METHOD_NOT_ALLOWED"
    )

    org.set_rate_limit(0.001)
    sf.query("SELECT Id FROM Account")  # the bucket holds one request
    with pytest.raises(SalesforceRefusedRequest) as limited:
        sf.query("SELECT Id FROM Account")
    assert limited.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_a_blank_text_value_is_stored_as_null(org: SalesforceSandbox, sf: Salesforce) -> None:
    sf.Account.update(ACME, {"BillingCountry": "", "Phone": "  +1 555  "})

    rec = sf.Account.get(ACME)
    assert rec["BillingCountry"] is None and rec["Region__c"] is None
    assert rec["Phone"] == "  +1 555  "  # the API keeps surrounding whitespace
