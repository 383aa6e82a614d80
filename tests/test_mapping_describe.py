"""With Salesforce's describe, check finds missing fields and relationships and warns on formulas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connector.mapping import check_mappings

MAPPINGS = Path(__file__).parent.parent / "mappings"


def f(name: str, type_: str = "string", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": type_,
        "calculated": False,
        "relationshipName": None,
        "referenceTo": [],
        **extra,
    }


def ref(name: str, relationship: str, *to: str) -> dict[str, Any]:
    return f(name, "reference", relationshipName=relationship, referenceTo=list(to))


ADDRESS = [
    f(f"{kind}{part}")
    for kind in ("Billing", "Shipping")
    for part in ("Street", "City", "State", "PostalCode", "Country")
]

DESCRIBE: dict[str, dict[str, Any]] = {
    "Order": {
        "fields": [
            f("Id", "id"),
            ref("AccountId", "Account", "Account"),
            ref("BillToContactId", "BillToContact", "Contact"),
            ref("SBQQ__Quote__c", "SBQQ__Quote__r", "SBQQ__Quote__c"),
            ref("OwnerId", "Owner", "User", "Group"),
            f("Description", "textarea"),
        ]
    },
    "Account": {
        "fields": [
            f("Id", "id"),
            f("Name"),
            f("Description", "textarea"),
            f("Phone", "phone"),
            *ADDRESS,
            f("BillingAddress", "address"),
            ref("ParentId", "Parent", "Account"),
            f("Tier__c", "string", calculated=True),
            f("Region__c"),
        ]
    },
    "Contact": {
        "fields": [
            f("Id", "id"),
            f("Email", "email"),
            f("Name"),
            ref("AccountId", "Account", "Account"),
        ]
    },
    "SBQQ__Quote__c": {
        "fields": [
            f("Id", "id"),
            ref("SBQQ__PrimaryContact__c", "SBQQ__PrimaryContact__r", "Contact"),
        ]
    },
    "User": {"fields": [f("Id", "id"), f("Name"), f("Email", "email")]},
}


def describe(sobject: str) -> dict[str, Any]:
    if sobject not in DESCRIBE:
        raise LookupError(f"sObject type '{sobject}' is not supported")
    return DESCRIBE[sobject]


def test_shipped_mapping_passes_against_a_standard_org() -> None:
    assert check_mappings(MAPPINGS, describe=describe) == []


def test_describe_problems_name_the_source_position(tmp_path: Path) -> None:
    (tmp_path / "customer.yaml").write_text(
        "target: customer\n"
        "fields:\n"
        "  name: {from: Account.Nmae}\n"
        "  description: {from: Order.BillToContact.Title}\n"
        "  metadata.tier: {from: Account.Tier__c}\n"
        "  metadata.owner: {from: Order.Owner.Email}\n"
        "  metadata.partner: {from: Account.Partner__r.Name}\n"
        "  metadata.addr: {from: Account.BillingAddress}\n"
        "  metadata.parent: {from: Account.Name, transforms: [link]}\n"
        "  metadata.parent_ok: {from: [Account.ParentId, Order.BillToContact.AccountId], transforms: [link]}\n"
        "  metadata.where: {transforms: [{join: {sources: [Account.BillingCity, Account.Cty]}}]}\n"
        "  metadata.quote: {from: Order.SBQQ__Quote__r.Opportunity__r.Name}\n",
        encoding="utf-8",
    )
    problems = check_mappings(tmp_path, describe=describe)
    file = tmp_path / "customer.yaml"
    got = [(p.severity, str(p).replace(f"{file}:", "")) for p in problems]
    assert got == [
        (
            "error",
            "3:16: source 'Account.Nmae': Account has no field 'Nmae', or the integration user cannot read it",
        ),
        (
            "error",
            "4:23: source 'Order.BillToContact.Title': Contact has no field 'Title', or the integration user cannot read it",
        ),
        (
            "warning",
            "5:25: source 'Account.Tier__c': Account.Tier__c is a formula field; a change in its result does not "
            "move SystemModstamp, so the connector sees it only when the record changes otherwise",
        ),
        (
            "warning",
            "6:26: source 'Order.Owner.Email': Owner can point to User, Group; only fields that all of them have can be read through it",
        ),
        (
            "error",
            "7:28: source 'Account.Partner__r.Name': Account has no relationship 'Partner__r'",
        ),
        (
            "error",
            "8:25: source 'Account.BillingAddress': BillingAddress is a compound address field; map its parts (e.g. BillingCity)",
        ),
        (
            "error",
            "9:27: source 'Account.Name': link needs an Account id (a lookup to Account), not a string field",
        ),
        (
            "error",
            "11:72: source 'Account.Cty': Account has no field 'Cty', or the integration user cannot read it",
        ),
        (
            "error",
            "12:26: source 'Order.SBQQ__Quote__r.Opportunity__r.Name': SBQQ__Quote__c has no relationship 'Opportunity__r'",
        ),
    ]


def test_describe_failure_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "customer.yaml").write_text(
        "target: customer\nfields:\n  name: {from: Account.Name}\n", encoding="utf-8"
    )

    def broken(sobject: str) -> dict[str, Any]:
        raise ConnectionError("org unreachable")

    problems = check_mappings(tmp_path, describe=broken)
    assert [p.message for p in problems] == [
        "source 'Account.Name': cannot describe Order: org unreachable"
    ]
