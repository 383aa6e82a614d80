"""Chargebee's published description of the customer API, as `mappings check` needs it.

`specs/chargebee_customers.v1.openapi.json` is a byte-for-byte copy of the shared contract
(`shared/chargebee-openapi/customers.v1.openapi.json`; a test keeps them equal). The v1
description and the v2 API the SDK speaks agree on customer fields and limits; the v2 additions
the connector relies on live in the target and the sandbox. `customer_schema()` says which
customer fields a mapping may set, their types and `maxLength`, and why the others cannot be
mapped; it is registered for ("chargebee", "customer") in `connector.billing.TARGET_KINDS`.
Data only: nothing here talks to Chargebee.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from connector.billing.schema import CustomFields, Format, TargetField, TargetSchema
from connector.openapi import OpenApi, packaged

SPEC_FILE = "chargebee_customers.v1.openapi.json"
SYSTEM = "chargebee"
OBJECT = "customer"

CREATE = "/customers"
UPDATE = "/customers/{customer-id}"
UPDATE_BILLING_INFO = "/customers/{customer-id}/update_billing_info"

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


# Custom fields: the create and update bodies take additional properties (`additionalProperties:
# true`) and Chargebee names custom fields `cf_...` (see ../shared/chargebee-openapi/README.md);
# the description gives them no type or length, since each site defines its own. Mappings set
# text, so a custom field is taken as text; 250 characters is a conservative limit of our own
# (the longest text the description allows a customer field, `company`), and a name is `cf_`
# followed by lower-case letters, digits and underscores, 50 characters at most, as the API
# names that Chargebee generates look.
CUSTOM_FIELDS = CustomFields(
    prefix="cf_",
    pattern=r"cf_[a-z0-9][a-z0-9_]*",
    max_name=50,
    max_length=250,
    rule="'cf_' and lower-case letters, digits or '_', at most 50 characters",
    where="Chargebee: Settings > Configure Chargebee > Custom Fields",
)


def takes_custom_fields() -> bool:
    """Whether both the create and the update body accept properties they do not list."""
    return all(
        request_schema(path).get("additionalProperties") is True for path in (CREATE, UPDATE)
    )


@cache
def spec() -> dict[str, Any]:
    return packaged("connector.billing", "specs", SPEC_FILE)


CHARGEBEE = OpenApi(spec)


def request_schema(path: str) -> dict[str, Any]:
    """The form-body schema of a POST operation, e.g. CREATE."""
    return CHARGEBEE.request_schema(path, "post")


def _leaf(path: str, node: Mapping[str, Any]) -> TargetField | str:
    kind = node.get("type")
    if kind == "string" and "enum" in node:
        return TargetField(path, "enum", None, tuple(node["enum"]))
    if kind == "string":
        return TargetField(path, "string", node.get("maxLength"), (), _format(path, node))
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
def customer_schema() -> TargetSchema:
    """Customer fields a mapping may set: on create, and afterwards by one of the two calls.

    A create parameter that neither `POST /customers/{id}` nor `update_billing_info` (for the
    billing address) can change again is refused: the connector updates customers too, and a
    create-only field would silently stop following Salesforce.
    """
    create = request_schema(CREATE)["properties"]
    update = request_schema(UPDATE)["properties"]
    billing = request_schema(UPDATE_BILLING_INFO)["properties"]
    leaves: dict[str, TargetField] = {}
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
                got = _leaf(path, sub_node)
                if isinstance(got, str):
                    refused[path] = got
                else:
                    leaves[path] = got
        elif node.get("type") == "object":
            refused[name] = "it is an object this connector does not map"
        elif name not in update:
            refused[name] = "Chargebee accepts it only when a customer is created"
        else:
            got = _leaf(name, node)
            if isinstance(got, str):
                refused[name] = got
            else:
                leaves[name] = got
    return TargetSchema(
        system=SYSTEM,
        object=OBJECT,
        label="Chargebee",
        leaves=leaves,
        objects=frozenset(objects),
        refused=refused,
        custom=CUSTOM_FIELDS if takes_custom_fields() else None,
    )
