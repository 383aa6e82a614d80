"""Stripe's published description of the customer API, as shipped with the connector.

`specs/stripe_customers.openapi.json` is a byte-for-byte copy of the shared contract
(`shared/stripe-openapi/customers.openapi.json`; a test keeps them equal). The mapping checker
reads parameter types and `maxLength` from it; the sandbox validates requests and answers
against it. It is data: nothing here talks to Stripe.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SPEC_FILE = "stripe_customers.openapi.json"


@cache
def spec() -> dict[str, Any]:
    text = resources.files("connector.billing").joinpath("specs", SPEC_FILE).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def resolve(node: Any) -> Any:
    """Follow a local `$ref` (one level; call again on children as you descend)."""
    while isinstance(node, dict) and "$ref" in node:
        ref: str = node["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = spec()
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def request_schema(path: str, method: str) -> dict[str, Any]:
    """The form-body schema of an operation, e.g. ("/v1/customers", "post")."""
    op = spec()["paths"][path][method.lower()]
    body = op.get("requestBody", {}).get("content", {}).get("application/x-www-form-urlencoded", {})
    return dict(resolve(body.get("schema", {"type": "object", "properties": {}})))


def query_parameters(path: str, method: str) -> list[dict[str, Any]]:
    """The query parameters of an operation (list, search, retrieve)."""
    op = spec()["paths"][path][method.lower()]
    return [resolve(p) for p in op.get("parameters", []) if resolve(p).get("in") == "query"]


def response_schema(path: str, method: str, status: str = "200") -> dict[str, Any]:
    op = spec()["paths"][path][method.lower()]
    responses = op["responses"]
    entry = responses.get(status) or responses["default"]
    return dict(resolve(entry["content"]["application/json"]["schema"]))


def create_params_schema() -> dict[str, Any]:
    """Schema of POST /v1/customers: every parameter a customer accepts, with limits."""
    return request_schema("/v1/customers", "post")


def update_params_schema() -> dict[str, Any]:
    """Schema of POST /v1/customers/{customer}."""
    return request_schema("/v1/customers/{customer}", "post")
