"""Stripe's customer object as mappings see it: which paths can be mapped, their types and
limits, and Stripe's own rules about them, read from Stripe's published OpenAPI description.

Registered for `mappings check` under ("stripe", "customer"); the mapping compiler applies these
rules without knowing they are Stripe's. Data only: nothing here talks to Stripe.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from connector.billing.schema import Format, TargetField, TargetSchema, Together
from connector.billing.stripe_schema import create_params_schema, resolve, update_params_schema

# Parameters a mapping must not set, and why (they exist in Stripe's create schema).
NOT_MAPPABLE: Mapping[str, str] = {
    "expand": "a request option, not a customer field",
    "source": "payment details never come from Salesforce",
    "payment_method": "payment details never come from Salesforce",
    "invoice_settings.default_payment_method": "payment details never come from Salesforce",
    "test_clock": "test clocks are set by hand in test mode",
    "tax_id_data": "tax ids are separate objects that can only be added on create",
}

# Stripe refuses a malformed email and a phone over 20 characters; a country is an ISO code.
_FORMATS: Mapping[str, Format] = {"email": "email", "phone": "phone"}

SHIPPING = Together(
    object="shipping",
    groups=("shipping.name", "shipping.address"),
    missing={
        "shipping.address": (
            "shipping.address needs shipping.name too: Stripe requires a name with a shipping address"
        ),
        "shipping.name": (
            "shipping.name needs shipping.address fields too: Stripe requires an address with a "
            "shipping name"
        ),
    },
)


def _format(path: str) -> Format:
    if path.endswith("address.country"):
        return "country"
    return _FORMATS.get(path, "text")


def _object_variant(node: Any) -> Any:
    """Stripe writes "object or '' to unset" as anyOf; the object (or typed) variant is the shape."""
    node = resolve(node)
    for variant in node.get("anyOf", ()):
        variant = resolve(variant)
        if variant.get("enum") != [""]:
            return variant
    return node


def _walk_schema(
    node: Any,
    prefix: str,
    leaves: dict[str, TargetField],
    objects: set[str],
    refused: dict[str, str],
) -> None:
    for name, child in resolve(node).get("properties", {}).items():
        path = f"{prefix}{name}"
        shape = _object_variant(child)
        kind = shape.get("type")
        if path in NOT_MAPPABLE:
            refused[path] = NOT_MAPPABLE[path]
        elif "additionalProperties" in shape:
            objects.add(path)  # metadata: keys are free, checked by the target's tag rules
        elif kind == "object" or "properties" in shape:
            objects.add(path)
            _walk_schema(shape, f"{path}.", leaves, objects, refused)
        elif kind == "string" and "enum" in shape:
            leaves[path] = TargetField(path, "enum", None, tuple(shape["enum"]))
        elif kind == "string":
            leaves[path] = TargetField(path, "string", shape.get("maxLength"), (), _format(path))
        elif kind == "array" and resolve(shape.get("items", {})).get("type") == "string":
            item = resolve(shape["items"])
            leaves[path] = TargetField(path, "string_list", item.get("maxLength"))
        else:
            refused[path] = (
                f"it is {'an' if str(kind)[:1] in 'aeiou' else 'a'} {kind or 'complex value'}; mappings set text fields"
            )


@cache
def customer_schema() -> TargetSchema:
    leaves: dict[str, TargetField] = {}
    objects: set[str] = set()
    refused: dict[str, str] = {}
    _walk_schema(create_params_schema(), "", leaves, objects, refused)
    update_leaves: dict[str, TargetField] = {}
    _walk_schema(update_params_schema(), "", update_leaves, set(), {})
    for path in list(leaves):
        if path not in update_leaves:
            # The connector updates customers too; a create-only parameter would be lost.
            refused[path] = "Stripe accepts it only when a customer is created"
            del leaves[path]
    return TargetSchema(
        system="stripe",
        object="customer",
        label="Stripe",
        leaves=leaves,
        objects=frozenset(objects),
        refused=refused,
        together=(SHIPPING,),
        # Stripe's form encoding reads brackets in a metadata key as nesting.
        tag_key_forbidden="[]",
    )
