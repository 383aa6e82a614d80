"""Chargebee's published description of the customer API, as `mappings check` needs it.

`specs/chargebee_customers.v1.openapi.json` is a byte-for-byte copy of the shared contract
(`shared/chargebee-openapi/customers.v1.openapi.json`; a test keeps them equal). The v1
description and the v2 API the SDK speaks agree on customer fields and limits; the v2 additions
the connector relies on are stated below. `customer_schema()` says which customer fields a
mapping may set, their types and `maxLength`, and why the others cannot be mapped. It is data:
nothing here talks to Chargebee, and nothing here knows the mapping language's types, so the
mapping compiler's schema registry can wrap it without a dependency cycle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

SPEC_FILE = "chargebee_customers.v1.openapi.json"
SYSTEM = "chargebee"
OBJECT = "customer"

CREATE = "/customers"
UPDATE = "/customers/{customer-id}"
UPDATE_BILLING_INFO = "/customers/{customer-id}/update_billing_info"

# Where a mapped field is written after the customer exists.
Call = Literal["update", "update_billing_info"]
# How a value is made acceptable (the port's value formats): free text is cut to its limit; an
# email, phone number or country Chargebee would refuse is left unset instead.
Format = Literal["text", "email", "phone", "country"]

# Parameters a mapping must not set, and why.
NOT_MAPPABLE: Mapping[str, str] = {
    "id": "the connector chooses the customer id (from the Salesforce org and account)",
    "business_entity_id": "the routing rules choose the business entity, not a mapping",
    "card": "payment details never come from Salesforce",
    "payment_method": "payment details never come from Salesforce",
    "payment_intent": "payment details never come from Salesforce",
    "created_from_ip": "it records where a customer signed up, not a Salesforce field",
    "vat_number": (
        "Chargebee changes it only with update_billing_info, which the connector uses for the "
        "billing address alone; set it in Chargebee"
    ),
}


@dataclass(frozen=True, slots=True)
class CustomerField:
    """One settable leaf of a Chargebee customer."""

    path: str  # dotted: "company", "billing_address.city"
    kind: Literal["string", "enum"]
    max_length: int | None = None
    enum: tuple[str, ...] = ()
    format: Format = "text"
    call: Call = "update"


@dataclass(frozen=True, slots=True)
class CustomerSchema:
    """What a mapping may write to a Chargebee customer."""

    leaves: Mapping[str, CustomerField]
    objects: frozenset[str]  # billing_address, meta_data
    refused: Mapping[str, str] = field(default_factory=dict)  # path -> why
    tag_field: str = "meta_data"  # free keys: meta_data.<key>
    custom_field_prefix: str = "cf_"  # custom fields: cf_<name>, defined in Chargebee first


@cache
def spec() -> dict[str, Any]:
    text = (
        resources.files("connector.billing")
        .joinpath("specs", SPEC_FILE)
        .read_text(encoding="utf-8")
    )
    data: dict[str, Any] = json.loads(text)
    return data


def request_schema(path: str) -> dict[str, Any]:
    """The form-body schema of a POST operation, e.g. CREATE."""
    op = spec()["paths"][path]["post"]
    body = op["requestBody"]["content"]["application/x-www-form-urlencoded"]
    schema: dict[str, Any] = body["schema"]
    return schema


def _leaf(path: str, node: Mapping[str, Any], call: Call) -> CustomerField | str:
    kind = node.get("type")
    if kind == "string" and "enum" in node:
        return CustomerField(path, "enum", None, tuple(node["enum"]), call=call)
    if kind == "string":
        return CustomerField(path, "string", node.get("maxLength"), (), _format(path, node), call)
    article = "an" if str(kind)[:1] in "aeiou" else "a"
    return f"it is {article} {kind or 'complex value'}; mappings set text fields"


def _format(path: str, node: Mapping[str, Any]) -> Format:
    if node.get("format") == "email":
        return "email"
    if path.rsplit(".", 1)[-1] == "phone":
        return "phone"
    if path.endswith("country"):
        return "country"  # Chargebee expects the ISO 3166 alpha-2 code
    return "text"


@cache
def customer_schema() -> CustomerSchema:
    """Customer fields a mapping may set: on create, and afterwards by one of the two calls.

    A create parameter that neither `POST /customers/{id}` nor `update_billing_info` (for the
    billing address) can change again is refused: the connector updates customers too, and a
    create-only field would silently stop following Salesforce.
    """
    create = request_schema(CREATE)["properties"]
    update = request_schema(UPDATE)["properties"]
    billing = request_schema(UPDATE_BILLING_INFO)["properties"]
    leaves: dict[str, CustomerField] = {}
    objects = {"meta_data"}
    refused: dict[str, str] = {}
    for name, node in create.items():
        if name in NOT_MAPPABLE:
            refused[name] = NOT_MAPPABLE[name]
        elif name == "meta_data":
            continue
        elif name == "billing_address":
            objects.add(name)
            for sub, sub_node in node["properties"].items():
                path = f"{name}.{sub}"
                if sub not in billing[name]["properties"]:
                    refused[path] = "update_billing_info does not take it"
                    continue
                got = _leaf(path, sub_node, "update_billing_info")
                if isinstance(got, str):
                    refused[path] = got
                else:
                    leaves[path] = got
        elif node.get("type") == "object":
            refused[name] = "it is an object this connector does not map"
        elif name not in update:
            refused[name] = "Chargebee accepts it only when a customer is created"
        else:
            got = _leaf(name, node, "update")
            if isinstance(got, str):
                refused[name] = got
            else:
                leaves[name] = got
    return CustomerSchema(leaves, frozenset(objects), refused)
