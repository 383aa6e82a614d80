"""Evaluating a mapping on simple-salesforce Order records gives the Stripe payload we expect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connector.mapping import CustomerMapping, load_mapping, load_mappings

MAPPINGS = Path(__file__).parent.parent / "mappings"


def rec(type_: str, **fields: Any) -> dict[str, Any]:
    """A record as simple-salesforce returns it, with its `attributes`."""
    return {
        "attributes": {"type": type_, "url": f"/services/data/v62.0/sobjects/{type_}/x"},
        **fields,
    }


ACCOUNT = rec(
    "Account",
    Id="001000000000001AAA",
    Name="  Acme Corporation ",
    Description="Makes anvils.",
    Phone="+1 (415) 555-0100 ext. 12",
    BillingStreet="1 Market St\r\nSuite 300\nAttn: Billing",
    BillingCity="San Francisco",
    BillingState="CA",
    BillingPostalCode="94105",
    BillingCountry="United States",
    ShippingStreet="9 Dock Rd",
    ShippingCity="Oakland",
    ShippingState="CA",
    ShippingPostalCode="94607",
    ShippingCountry="USA",
    ParentId="001000000000000AAA",
    Parent=rec("Account", Name="Acme Holdings", Parent=None),
    Region__c=None,
    Rating="Hot",
    AnnualRevenue=1250000.0,
    NumberOfEmployees=42,
    IsPartner=True,
)


def order(**overrides: Any) -> dict[str, Any]:
    base = rec(
        "Order",
        Id="801000000000001AAA",
        AccountId="001000000000001AAA",
        OrderNumber="00000100",
        Account=ACCOUNT,
        BillToContact=rec("Contact", Email="Billing@Acme.example "),
        SBQQ__Quote__r=rec(
            "SBQQ__Quote__c", SBQQ__PrimaryContact__r=rec("Contact", Email="cpq@acme.example")
        ),
    )
    base.update(overrides)
    return base


def mapping(tmp_path: Path, fields: str) -> CustomerMapping:
    file = tmp_path / "customer.yaml"
    file.write_text("target: customer\nfields:\n" + fields, encoding="utf-8")
    return load_mapping(file)


def test_shipped_mapping_builds_stripe_defaults() -> None:
    payload = load_mappings(MAPPINGS).evaluate(order())
    assert payload == {
        "name": "Acme Corporation",
        "description": "Makes anvils.",
        "email": "billing@acme.example",
        "phone": "+14155550100",
        "address": {
            "line1": "1 Market St",
            "line2": "Suite 300, Attn: Billing",
            "city": "San Francisco",
            "state": "CA",
            "postal_code": "94105",
            "country": "US",
        },
        "shipping": {
            "name": "Acme Corporation",
            "address": {
                "line1": "9 Dock Rd",
                "line2": "",
                "city": "Oakland",
                "state": "CA",
                "postal_code": "94607",
                "country": "US",
            },
        },
    }


def test_shipped_mapping_falls_back_to_quote_contact_and_clears_empty_fields() -> None:
    account = {**ACCOUNT, "Description": None, "Phone": "", "BillingCountry": "Atlantis"}
    account.update({k: None for k in ACCOUNT if k.startswith("Shipping")})
    payload = load_mappings(MAPPINGS).evaluate(order(Account=account, BillToContact=None))
    assert payload["email"] == "cpq@acme.example"
    assert payload["description"] == ""
    assert payload["phone"] == ""
    assert payload["address"]["country"] == ""
    # No shipping address at all: Stripe needs name and address together, so shipping is unset.
    assert payload["shipping"] == ""


def test_soql_fields_are_relative_to_order() -> None:
    fields = load_mappings(MAPPINGS).soql_fields()
    assert "Account.Name" in fields
    assert "BillToContact.Email" in fields
    assert "SBQQ__Quote__r.SBQQ__PrimaryContact__r.Email" in fields
    assert "AccountId" in fields
    assert fields == sorted(set(fields))


def test_null_lookups_on_the_way_give_empty(tmp_path: Path) -> None:
    m = mapping(
        tmp_path,
        "  metadata.grandparent: {from: Account.Parent.Parent.Name}\n"
        "  metadata.quote_contact: {from: Order.SBQQ__Quote__r.SBQQ__PrimaryContact__r.Email}\n",
    )
    payload = m.evaluate(order(SBQQ__Quote__r=None))
    assert payload == {"metadata": {"grandparent": "", "quote_contact": ""}}
    # A record without the relationship key at all behaves the same.
    bare = {k: v for k, v in order().items() if k != "SBQQ__Quote__r"}
    assert m.evaluate(bare)["metadata"]["quote_contact"] == ""


def test_two_level_path_and_first_non_empty_source(tmp_path: Path) -> None:
    m = mapping(
        tmp_path,
        "  metadata.parent: {from: Account.Parent.Name}\n"
        "  metadata.contact: {from: [Order.BillToContact.Email, Order.SBQQ__Quote__r.SBQQ__PrimaryContact__r.Email]}\n",
    )
    assert m.evaluate(order())["metadata"] == {
        "parent": "Acme Holdings",
        "contact": "Billing@Acme.example",
    }
    blank_contact = rec("Contact", Email="   ")
    assert (
        m.evaluate(order(BillToContact=blank_contact))["metadata"]["contact"] == "cpq@acme.example"
    )
    assert sorted(m.sources()) == [
        "Account.Parent.Name",
        "Order.BillToContact.Email",
        "Order.SBQQ__Quote__r.SBQQ__PrimaryContact__r.Email",
    ]


def test_default_when_empty_and_static_value(tmp_path: Path) -> None:
    m = mapping(
        tmp_path,
        '  metadata.region: {from: Account.Region__c, default: "unknown"}\n'
        '  description: {value: "Synced from Salesforce"}\n'
        "  preferred_locales: {value: [en, fr-FR]}\n",
    )
    payload = m.evaluate(order())
    assert payload == {
        "metadata": {"region": "unknown"},
        "description": "Synced from Salesforce",
        "preferred_locales": ["en", "fr-FR"],
    }
    account = {**ACCOUNT, "Region__c": "EMEA"}
    assert m.evaluate(order(Account=account))["metadata"]["region"] == "EMEA"


def test_non_text_salesforce_values_become_text(tmp_path: Path) -> None:
    m = mapping(
        tmp_path,
        "  metadata.revenue: {from: Account.AnnualRevenue}\n"
        "  metadata.employees: {from: Account.NumberOfEmployees}\n"
        "  metadata.partner: {from: Account.IsPartner}\n"
        "  metadata.address: {from: Account.BillingAddress}\n",
    )
    account = {**ACCOUNT, "BillingAddress": {"city": "SF", "street": "1 Market"}}
    assert m.evaluate(order(Account=account))["metadata"] == {
        "revenue": "1250000.0",
        "employees": "42",
        "partner": "true",
        "address": "",  # compound fields are not text; describe check flags them
    }


def test_source_names_match_case_insensitively(tmp_path: Path) -> None:
    m = mapping(tmp_path, "  name: {from: Account.name}\n")
    assert m.evaluate(order()) == {"name": "Acme Corporation"}


@pytest.mark.parametrize(
    ("transforms", "source", "expected"),
    [
        ("[trim]", "  a b  ", "a b"),
        ("[lower]", "MiXeD", "mixed"),
        ("[upper]", "MiXeD", "MIXED"),
        ("[{truncate: 3}]", "abcdef", "abc"),
        ("[{truncate: 4}]", "ab  cdef", "ab"),
        ('[{replace: {old: "&", new: "and"}}]', "R&D", "RandD"),
        ("[{lookup: {map: {Hot: vip, Warm: std}, default: other}}]", "Hot", "vip"),
        ("[{lookup: {map: {Hot: vip, Warm: std}, default: other}}]", "Cold", "other"),
        ("[{lookup: {map: {Hot: vip}}}]", "Cold", "Cold"),
        ("[country_code]", "Deutschland", "DE"),
        ("[country_code]", "gbr", "GB"),
        ("[country_code]", "U.K.", "GB"),
        ("[country_code]", "Narnia", ""),
        ("[phone]", "(415) 555-0100", "4155550100"),
        ("[phone]", "+44 20 7946 0958", "+442079460958"),
        ("[phone]", "+1 415 555 0100 x204", "+14155550100"),
        ("[phone]", "+123 4567 8901 2345 6789 01", ""),
        ("[{line: 2}]", "a\n\n b \nc", "b"),
        ("[{line: 4}]", "a\nb", ""),
        ("[{lines_from: 2}]", "a\nb\nc", "b, c"),
        ("[trim, lower, {truncate: 2}]", "  HELLO ", "he"),
    ],
)
def test_each_transform(tmp_path: Path, transforms: str, source: str, expected: str) -> None:
    m = mapping(tmp_path, f"  metadata.out: {{from: Account.Rating, transforms: {transforms}}}\n")
    account = {**ACCOUNT, "Rating": source}
    assert m.evaluate(order(Account=account))["metadata"]["out"] == expected


def test_join_and_template_read_other_sources(tmp_path: Path) -> None:
    m = mapping(
        tmp_path,
        '  metadata.place: {from: Account.BillingCity, transforms: [{join: {sources: [Account.BillingState, Account.Region__c], separator: ", "}}]}\n'
        '  metadata.label: {transforms: [{template: "{Account.BillingCity}, {Account.BillingState} ({{HQ}})"}]}\n'
        '  metadata.empty: {transforms: [{template: "{Account.Region__c} / {Account.Region__c}"}]}\n'
        '  metadata.own: {from: Account.Rating, transforms: [{template: "rating {value}"}]}\n',
    )
    assert m.evaluate(order())["metadata"] == {
        "place": "San Francisco, CA",
        "label": "San Francisco, CA ({HQ})",
        "empty": "",
        "own": "rating Hot",
    }
    assert "Account.BillingState" in m.soql_fields()
    assert "Account.Region__c" in m.soql_fields()


def test_link_resolves_account_id_to_customer_id(tmp_path: Path) -> None:
    m = mapping(
        tmp_path, "  metadata.parent_customer: {from: Account.ParentId, transforms: [link]}\n"
    )
    asked: list[str] = []

    def link(account_id: str) -> str | None:
        asked.append(account_id)
        return {"001000000000000AAA": "cus_parent"}.get(account_id)

    assert m.evaluate(order(), link=link) == {"metadata": {"parent_customer": "cus_parent"}}
    assert asked == ["001000000000000AAA"]
    # Not linked yet, or no parent: unset; the resolver is not asked about an empty id.
    assert m.evaluate(order())["metadata"]["parent_customer"] == ""
    no_parent = {**ACCOUNT, "ParentId": None}
    assert m.evaluate(order(Account=no_parent), link=link)["metadata"]["parent_customer"] == ""
    assert asked == ["001000000000000AAA"]
    assert "Account.ParentId" in m.soql_fields()


def test_values_are_limited_so_stripe_never_refuses(tmp_path: Path) -> None:
    m = mapping(
        tmp_path,
        "  name: {from: Account.Description}\n"
        "  metadata.notes: {from: Account.Description}\n"
        "  phone: {from: Account.Phone}\n"
        "  email: {from: Account.Phone}\n"
        "  tax_exempt: {from: Account.Rating}\n"
        "  address.country: {from: Account.BillingCountry}\n",
    )
    account = {
        **ACCOUNT,
        "Description": "  " + "x" * 600 + "\x00",
        "Phone": "+1 415 555 0100 and then some more text",
        "Rating": "Exempt",
        "BillingCountry": "France",
    }
    payload = m.evaluate(order(Account=account))
    assert payload["name"] == "x" * 256
    assert payload["metadata"]["notes"] == "x" * 500
    assert (
        payload["phone"] == ""
    )  # over 20 characters without the phone transform: unset, never cut
    assert payload["email"] == ""  # not an email address
    assert payload["tax_exempt"] == ""  # not one of Stripe's values (they are lower case)
    assert payload["address"]["country"] == "FR"  # country targets always get a code or ""


def test_shipping_without_name_is_unset_as_a_whole(tmp_path: Path) -> None:
    m = mapping(
        tmp_path,
        "  shipping.name: {from: Order.BillToContact.Name}\n  shipping.address.city: {from: Account.ShippingCity}\n",
    )
    assert m.evaluate(order()) == {"shipping": ""}
    contact = rec("Contact", Name="Dock Manager")
    assert m.evaluate(order(BillToContact=contact)) == {
        "shipping": {"name": "Dock Manager", "address": {"city": "Oakland"}}
    }
