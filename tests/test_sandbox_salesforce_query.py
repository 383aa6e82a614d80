"""The Salesforce sandbox answers SOQL like a real org, driven by the unmodified simple-salesforce.

Records shaped as REST shapes them, paging with query locators, query vs queryAll, every
supported operator, ORDER BY and LIMIT, and refusals with Salesforce's error bodies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from connector.salesforce import loopback_session
from connector.sandbox.salesforce import SalesforceSandbox
from connector.sandbox.sample import GLOBEX_DE, GLOBEX_HOLDINGS, STARK_ORDER, load_sample

GLOBEX_DE_ORDER = "801000000000001AAA"  # Globex Deutschland's first order, billed to Katrin Vogel
CLOCK = datetime(2026, 1, 5, 3, 41, 5, tzinfo=UTC)

A1, A2, A3, A4 = (
    "001000000000001AAA",
    "001000000000002AAA",
    "001000000000003AAA",
    "001000000000004AAA",
)
O1, O2, O3 = "801000000000001AAA", "801000000000002AAA", "801000000000003AAA"
Q1 = "a0X000000000001EAA"


def small_org() -> dict[str, list[dict[str, Any]]]:
    return {
        "Account": [
            {"Id": A1, "Name": "Alpha", "BillingCountry": "Germany", "Phone": "1"},
            {"Id": A2, "Name": "beta", "BillingCountry": "DE"},
            {"Id": A3, "Name": "Gamma 100%", "ParentId": A1},
            {"Id": A4, "Name": "Delta_x", "BillingCountry": "France", "ParentId": A1},
        ],
        "Order": [
            {
                "Id": O1,
                "AccountId": A1,
                "Status": "Activated",
                "EffectiveDate": "2026-01-01",
                "TotalAmount": 100,
            },
            {
                "Id": O2,
                "AccountId": A2,
                "Status": "Draft",
                "EffectiveDate": "2026-02-01",
                "TotalAmount": 250.5,
            },
            {
                "Id": O3,
                "AccountId": A3,
                "Status": "Activated",
                "EffectiveDate": "2026-03-01",
                "SBQQ__Quote__c": Q1,
            },
        ],
        "SBQQ__Quote__c": [{"Id": Q1, "SBQQ__Account__c": A3, "SBQQ__Primary__c": True}],
    }


@pytest.fixture
def org() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox(small_org(), clock_start=CLOCK) as sb:
        yield sb


@pytest.fixture
def sample_org() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox(load_sample()["salesforce"], clock_start=CLOCK) as sb:
        yield sb


def client(sb: SalesforceSandbox) -> Salesforce:
    return Salesforce(
        instance_url=sb.url,
        session_id=sb.access_token,
        session=loopback_session(sb.url),
        version="62.0",
    )


@pytest.fixture
def sf(org: SalesforceSandbox) -> Salesforce:
    return client(org)


def ids(result: dict[str, Any]) -> set[str]:
    return {r["Id"] for r in result["records"]}


# --- shape ------------------------------------------------------------------------------------


def test_records_carry_attributes_and_fields_in_select_order_with_canonical_names(
    sf: Salesforce,
) -> None:
    result = sf.query(f"select billingcountry, NAME, id from account where id = '{A1}'")

    assert result["totalSize"] == 1 and result["done"] is True and "nextRecordsUrl" not in result
    [rec] = result["records"]
    assert list(rec) == ["attributes", "BillingCountry", "Name", "Id"]
    assert rec["attributes"] == {
        "type": "Account",
        "url": f"/services/data/v62.0/sobjects/Account/{A1}",
    }
    assert rec["Name"] == "Alpha" and rec["BillingCountry"] == "Germany"


def test_an_empty_result_is_the_bare_envelope(sf: Salesforce) -> None:
    assert dict(sf.query("SELECT Id FROM Account WHERE Name = 'nobody'")) == {
        "totalSize": 0,
        "done": True,
        "records": [],
    }


def test_parent_relationships_nest_two_levels_and_empty_lookups_are_null(
    sample_org: SalesforceSandbox,
) -> None:
    sf = client(sample_org)
    soql = (
        "SELECT Id, Account.Name, Account.Parent.Name, BillToContact.Email, "
        "SBQQ__Quote__r.SBQQ__PrimaryContact__r.Email FROM Order WHERE Id IN ('{}', '{}') ORDER BY Id"
    )
    de, stark = sf.query(soql.format(GLOBEX_DE_ORDER, STARK_ORDER))["records"]

    assert de["Account"] == {
        "attributes": {
            "type": "Account",
            "url": f"/services/data/v62.0/sobjects/Account/{GLOBEX_DE}",
        },
        "Name": "Globex Deutschland GmbH",
        "Parent": {
            "attributes": {
                "type": "Account",
                "url": f"/services/data/v62.0/sobjects/Account/{GLOBEX_HOLDINGS}",
            },
            "Name": "Globex Holdings",
        },
    }
    assert de["BillToContact"]["Email"] == "katrin.vogel@globex.example"
    assert de["SBQQ__Quote__r"] is None  # the key is there, the lookup is empty
    assert stark["Account"]["Parent"] is None
    assert stark["BillToContact"] is None
    assert stark["SBQQ__Quote__r"]["attributes"]["type"] == "SBQQ__Quote__c"
    assert (
        stark["SBQQ__Quote__r"]["SBQQ__PrimaryContact__r"]["Email"] == "pepper.potts@stark.example"
    )
    assert list(stark) == ["attributes", "Id", "Account", "BillToContact", "SBQQ__Quote__r"]


def test_datetimes_are_in_rest_form_and_booleans_are_json(sf: Salesforce) -> None:
    [rec] = sf.query(
        f"SELECT SystemModstamp, IsDeleted, ActivatedDate, EffectiveDate FROM Order WHERE Id = '{O1}'"
    )["records"]

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000\+0000", rec["SystemModstamp"])
    assert rec["IsDeleted"] is False
    assert rec["ActivatedDate"] == rec["SystemModstamp"]  # activated when it was created
    assert rec["EffectiveDate"] == "2026-01-01"


# --- paging -----------------------------------------------------------------------------------


@pytest.fixture
def big_org() -> Iterator[SalesforceSandbox]:
    data = {"Account": [{"Name": f"Account {i:04d}"} for i in range(450)]}
    with SalesforceSandbox(data, clock_start=CLOCK) as sb:
        yield sb


def test_pages_follow_the_batch_size_with_a_query_locator_path(big_org: SalesforceSandbox) -> None:
    sf = client(big_org)
    headers = {"Sforce-Query-Options": "batchSize=200"}

    first = sf.query("SELECT Id, Name FROM Account ORDER BY Name", headers=headers)
    assert (first["totalSize"], first["done"], len(first["records"])) == (450, False, 200)
    assert re.fullmatch(
        r"/services/data/v62\.0/query/01g[A-Za-z0-9]{15}-200", first["nextRecordsUrl"]
    )
    second = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True, headers=headers)
    assert (second["totalSize"], second["done"], len(second["records"])) == (450, False, 200)
    assert second["nextRecordsUrl"].endswith("-400")
    third = sf.query_more(second["nextRecordsUrl"], identifier_is_url=True, headers=headers)
    assert (third["done"], len(third["records"])) == (True, 50) and "nextRecordsUrl" not in third

    names = [r["Name"] for page in (first, second, third) for r in page["records"]]
    assert names == [f"Account {i:04d}" for i in range(450)]


def test_query_all_follows_every_page_and_a_locator_id_also_works(
    big_org: SalesforceSandbox,
) -> None:
    sf = client(big_org)
    headers = {"Sforce-Query-Options": "batchSize=200"}

    assert len(sf.query_all("SELECT Id FROM Account", headers=headers)["records"]) == 450
    first = sf.query("SELECT Id FROM Account", headers=headers)
    locator = first["nextRecordsUrl"].rsplit("/", 1)[1]
    assert len(sf.query_more(locator, headers=headers)["records"]) == 200  # .../query/{locator}


def test_batch_size_is_clamped_to_salesforce_range_and_defaults_to_2000() -> None:
    with SalesforceSandbox({"Account": [{"Name": f"A{i}"} for i in range(2050)]}) as sb:
        sf = client(sb)
        assert len(sf.query("SELECT Id FROM Account")["records"]) == 2000
        small = sf.query("SELECT Id FROM Account", headers={"Sforce-Query-Options": "batchSize=50"})
        assert len(small["records"]) == 200


def test_unknown_used_up_or_expired_locators_are_refused(big_org: SalesforceSandbox) -> None:
    sf = client(big_org)
    headers = {"Sforce-Query-Options": "batchSize=200"}
    first = sf.query("SELECT Id FROM Account", headers=headers)

    with pytest.raises(SalesforceMalformedRequest) as bogus:
        sf.query_more("/services/data/v62.0/query/01gXXXXXXXXXXXXXXX-200", identifier_is_url=True)
    assert bogus.value.content == [
        {"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}
    ]

    big_org.expire_query_locators()
    with pytest.raises(SalesforceMalformedRequest) as expired:
        sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert expired.value.content[0]["errorCode"] == "INVALID_QUERY_LOCATOR"

    again = sf.query("SELECT Id FROM Account", headers=headers)
    url = again["nextRecordsUrl"]
    while not again["done"]:
        again = sf.query_more(again["nextRecordsUrl"], identifier_is_url=True, headers=headers)
    with pytest.raises(SalesforceMalformedRequest):  # a cursor read to its end is closed
        sf.query_more(url, identifier_is_url=True)


# --- query vs queryAll ------------------------------------------------------------------------


def test_deleted_rows_only_come_back_through_query_all(
    org: SalesforceSandbox, sf: Salesforce
) -> None:
    org.delete("Account", A2)

    assert A2 not in ids(sf.query("SELECT Id FROM Account"))
    assert sf.query("SELECT Id FROM Account WHERE IsDeleted = true")["totalSize"] == 0
    everything = sf.query("SELECT Id, IsDeleted FROM Account", include_deleted=True)
    assert ids(everything) == {A1, A2, A3, A4}
    assert {r["Id"]: r["IsDeleted"] for r in everything["records"]}[A2] is True
    assert ids(sf.query("SELECT Id FROM Account WHERE IsDeleted = true", include_deleted=True)) == {
        A2
    }


def test_query_all_pages_through_query_locators_too() -> None:
    with SalesforceSandbox({"Account": [{"Name": f"A{i}"} for i in range(300)]}) as sb:
        for rec in sb.records("Account")[:10]:
            sb.delete("Account", rec["Id"])
        sf = client(sb)
        first = sf.query(
            "SELECT Id FROM Account",
            include_deleted=True,
            headers={"Sforce-Query-Options": "batchSize=200"},
        )
        assert first["totalSize"] == 300 and "/query/" in first["nextRecordsUrl"]
        rest = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
        assert len(first["records"]) + len(rest["records"]) == 300


# --- operators --------------------------------------------------------------------------------

OPERATOR_CASES = [
    ("Name = 'ALPHA'", {A1}),
    ("Name != 'alpha'", {A2, A3, A4}),
    ("BillingCountry != 'Germany'", {A2, A3, A4}),  # SOQL: != also matches null
    ("BillingCountry = null", {A3}),
    ("BillingCountry != null", {A1, A2, A4}),
    ("Name < 'c'", {A1, A2}),
    ("Name <= 'BETA'", {A1, A2}),
    ("Name > 'delta'", {A3, A4}),
    ("Name >= 'Gamma 100%'", {A3}),
    ("BillingCountry IN ('germany', 'FR', 'DE')", {A1, A2}),
    ("BillingCountry NOT IN ('Germany', 'DE')", {A3, A4}),
    ("Name LIKE 'a%'", {A1}),
    ("Name LIKE '%100\\%'", {A3}),
    ("Name LIKE 'Delt__x'", {A4}),
    ("Name LIKE 'Delta\\_%'", {A4}),
    ("Name = 'Alpha' OR Name = 'beta'", {A1, A2}),
    (f"ParentId = '{A1}' AND BillingCountry = 'France'", {A4}),
    ("NOT Name = 'Alpha'", {A2, A3, A4}),
    ("NOT (Name = 'Alpha' OR Name = 'beta')", {A3, A4}),
    ("(Name = 'Alpha' OR Name = 'beta') AND Phone != null", {A1}),
    ("Parent.Name = 'alpha'", {A3, A4}),
    ("Parent.Name = null", {A1, A2}),
    (f"Id = '{A1[:15]}'", {A1}),
    ("IsDeleted = false", {A1, A2, A3, A4}),
    ("IsDeleted = TRUE", set()),
]


@pytest.mark.parametrize(("where", "expected"), OPERATOR_CASES, ids=[c[0] for c in OPERATOR_CASES])
def test_where_operators_select_the_right_accounts(
    sf: Salesforce, where: str, expected: set[str]
) -> None:
    assert ids(sf.query(f"SELECT Id FROM Account WHERE {where}")) == expected


ORDER_CASES = [
    ("TotalAmount > 100", {O2}),
    ("TotalAmount >= 100", {O1, O2}),
    ("TotalAmount = null", {O3}),
    ("TotalAmount < 250.5", {O1}),
    ("EffectiveDate >= 2026-02-01", {O2, O3}),
    ("EffectiveDate < 2026-02-01", {O1}),
    ("StatusCode = 'Activated'", {O1, O3}),
    ("Account.Parent.Name = 'Alpha'", {O3}),
    ("SBQQ__Quote__r.SBQQ__Primary__c = true", {O3}),
    ("SBQQ__Quote__r.SBQQ__Account__r.Name LIKE 'gamma%'", {O3}),
]


@pytest.mark.parametrize(("where", "expected"), ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_where_on_numbers_dates_and_relationship_paths(
    sf: Salesforce, where: str, expected: set[str]
) -> None:
    assert ids(sf.query(f"SELECT Id FROM Order WHERE {where}")) == expected


@pytest.mark.parametrize("literal", ["{z}", "{ms}", "{plus_one}", "{compact_plus_one}"])
def test_datetime_literals_in_every_written_form_compare_by_instant(
    org: SalesforceSandbox, sf: Salesforce, literal: str
) -> None:
    stamp = org.get("Account", A3)["SystemModstamp"]  # e.g. 2026-01-05T03:41:07.000+0000
    day, time_ = stamp[:10], stamp[11:19]
    hour = int(time_[:2]) + 1
    forms = {
        "z": f"{day}T{time_}Z",
        "ms": stamp,
        "plus_one": f"{day}T{hour:02d}{time_[2:]}+01:00",
        "compact_plus_one": f"{day}T{hour:02d}{time_[2:]}.000+0100",
    }
    lit = literal.format(**forms)

    assert ids(sf.query(f"SELECT Id FROM Account WHERE SystemModstamp >= {lit}")) == {A3, A4}
    assert ids(sf.query(f"SELECT Id FROM Account WHERE SystemModstamp = {lit}")) == {A3}
    assert ids(sf.query(f"SELECT Id FROM Order WHERE Account.SystemModstamp >= {lit}")) == {O3}


def test_order_by_several_fields_with_nulls_first_and_last(sf: Salesforce) -> None:
    def names(soql: str) -> list[str]:
        return [r["Name"] for r in sf.query(soql)["records"]]

    assert names("SELECT Name FROM Account ORDER BY BillingCountry, Name") == [
        "Gamma 100%",
        "beta",
        "Delta_x",
        "Alpha",
    ]
    assert names("SELECT Name FROM Account ORDER BY BillingCountry NULLS LAST") == [
        "beta",
        "Delta_x",
        "Alpha",
        "Gamma 100%",
    ]
    assert names("SELECT Name FROM Account ORDER BY BillingCountry DESC") == [
        "Alpha",
        "Delta_x",
        "beta",
        "Gamma 100%",
    ]
    assert names("SELECT Name FROM Account ORDER BY BillingCountry DESC NULLS FIRST") == [
        "Gamma 100%",
        "Alpha",
        "Delta_x",
        "beta",
    ]
    assert names("SELECT Name FROM Account ORDER BY Parent.Name DESC NULLS LAST, Name ASC") == [
        "Delta_x",
        "Gamma 100%",
        "Alpha",
        "beta",
    ]
    assert names("SELECT Name FROM Account ORDER BY Name DESC LIMIT 2") == ["Gamma 100%", "Delta_x"]


def test_limit_caps_total_size(sf: Salesforce) -> None:
    result = sf.query("SELECT Id FROM Account ORDER BY Name LIMIT 3")
    assert result["totalSize"] == 3 and len(result["records"]) == 3
    assert sf.query("SELECT Id FROM Account LIMIT 0")["totalSize"] == 0


# --- refusals ---------------------------------------------------------------------------------

REFUSED = [
    ("SELECT COUNT() FROM Account", "MALFORMED_QUERY"),
    ("SELECT Id, (SELECT Id FROM Contacts) FROM Account", "MALFORMED_QUERY"),
    ("SELECT AccountId, COUNT(Id) FROM Order GROUP BY AccountId", "MALFORMED_QUERY"),
    ("SELECT Id FROM Order GROUP BY AccountId", "MALFORMED_QUERY"),
    ("SELECT FIELDS(ALL) FROM Account LIMIT 200", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account WHERE CreatedDate = TODAY", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account WHERE CreatedDate = LAST_N_DAYS:3", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account WHERE Id IN (SELECT AccountId FROM Order)", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account OFFSET 5", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account WITH SECURITY_ENFORCED", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account FOR UPDATE", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account a", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account WHERE Name = :name", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account WHERE Name = 'a' AND Name = 'b' OR Name = 'c'", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account WHERE Name INCLUDES ('a')", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account WHERE CALENDAR_YEAR(CreatedDate) = 2026", "MALFORMED_QUERY"),
    ("SELECT Id, Name FROM Account WHERE", "MALFORMED_QUERY"),
    ("SELECT Id, Id FROM Account", "MALFORMED_QUERY"),
    ("invalid", "MALFORMED_QUERY"),
    ("SELECT Nmae FROM Account", "INVALID_FIELD"),
    ("SELECT Id FROM Account WHERE Nmae = 'x'", "INVALID_FIELD"),
    ("SELECT Acount.Name FROM Order", "INVALID_FIELD"),
    ("SELECT Account FROM Order", "INVALID_FIELD"),
    ("SELECT Id FROM Account ORDER BY Foo__c", "INVALID_FIELD"),
    ("SELECT Id FROM Account WHERE Name = 5", "INVALID_FIELD"),
    ("SELECT Id FROM Account WHERE CreatedDate > '2026-01-01'", "INVALID_FIELD"),
    ("SELECT Id FROM Account WHERE Id = 'abc'", "INVALID_QUERY_FILTER_OPERATOR"),
    (
        "SELECT Id FROM Order WHERE AccountId IN ('001000000000001AAA', 'nope')",
        "INVALID_QUERY_FILTER_OPERATOR",
    ),
    ("SELECT Id FROM Acount", "INVALID_TYPE"),
    ("SELECT Id FROM Opportunity", "INVALID_TYPE"),
]


@pytest.mark.parametrize(("soql", "code"), REFUSED, ids=[r[0] for r in REFUSED])
def test_unsupported_or_wrong_soql_is_refused_with_salesforce_error_body(
    sf: Salesforce, soql: str, code: str
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.query(soql)

    assert err.value.status == 400
    [body] = err.value.content
    assert set(body) == {"message", "errorCode"} and body["errorCode"] == code
    assert isinstance(body["message"], str) and body["message"]


def test_unknown_field_message_has_the_caret_block(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.query("SELECT Id, Nmae FROM Account")

    assert err.value.content == [
        {
            "errorCode": "INVALID_FIELD",
            "message": "\nSELECT Id, Nmae FROM Account\n           ^\nERROR at Row:1:Column:12\n"
            "No such column 'Nmae' on entity 'Account'. If you are attempting to use a custom field, be "
            "sure to append the '__c' after the custom field name. Please reference your WSDL or the "
            "describe call for the appropriate names.",
        }
    ]


def test_unknown_object_and_unexpected_token_messages(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as obj:
        sf.query("SELECT Id FROM Acount")
    assert obj.value.content[0]["message"].startswith(
        "\nSELECT Id FROM Acount\n               ^\nERROR at Row:1:Column:16\nsObject type 'Acount' is not supported."
    )
    with pytest.raises(SalesforceMalformedRequest) as tok:
        sf.query("SELECT Id FROM Account WHERE Name = 'a' AND Name = 'b' OR Name = 'c'")
    assert tok.value.content[0]["message"].endswith(
        "ERROR at Row:1:Column:56\nunexpected token: 'OR'"
    )


def test_a_missing_q_parameter_is_refused(org: SalesforceSandbox) -> None:
    session = loopback_session(org.url)
    resp = session.get(
        f"{org.url}/services/data/v62.0/query/",
        headers={"Authorization": f"Bearer {org.access_token}"},
    )
    assert resp.status_code == 400 and resp.json()[0]["errorCode"] == "MALFORMED_QUERY"


# --- Composite -------------------------------------------------------------------------------


def composite(sf: Salesforce, subs: list[dict[str, Any]]) -> Any:
    return sf.restful(
        "composite", method="POST", json={"allOrNone": False, "compositeRequest": subs}
    )


def query_sub(ref: str, soql: str) -> dict[str, Any]:
    from urllib.parse import urlencode

    return {"method": "GET", "url": "/services/data/v62.0/query/?" + urlencode({"q": soql}), "referenceId": ref}


def test_a_composite_request_answers_each_subrequest_alone_and_counts_as_one_call(
    org: SalesforceSandbox, sf: Salesforce
) -> None:
    used = org.api_calls_used
    answer = composite(
        sf,
        [
            query_sub("orders", "SELECT Id FROM Order WHERE Status = 'Activated'"),
            query_sub("broken", "SELECT Id FROM Order WHERE NoSuchField__c = 1"),
            {"method": "GET", "url": "/services/data/v62.0/sobjects/Account/describe", "referenceId": "d"},
        ],
    )
    subs = {s["referenceId"]: s for s in answer["compositeResponse"]}
    assert subs["orders"]["httpStatusCode"] == 200 and ids(subs["orders"]["body"]) == {O1, O3}
    assert subs["broken"]["httpStatusCode"] == 400
    assert subs["broken"]["body"][0]["errorCode"] == "INVALID_FIELD"
    assert subs["d"]["httpStatusCode"] == 200 and subs["d"]["body"]["name"] == "Account"
    assert org.api_calls_used - used == 1


def test_a_composite_request_takes_at_most_five_queries(org: SalesforceSandbox, sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        composite(sf, [query_sub(f"q{i}", "SELECT Id FROM Account") for i in range(6)])
    assert caught.value.content[0]["errorCode"] == "LIMIT_EXCEEDED"
