"""Stripe's published description of the customer API, as shipped with the connector.

`specs/stripe_customers.openapi.json` is a byte-for-byte copy of the shared contract
(`shared/stripe-openapi/customers.openapi.json`; a test keeps them equal). The mapping checker
reads parameter types and `maxLength` from it; the contract tests check requests and answers
against it. It is data: nothing here talks to Stripe. Reading and checking against a
description is `connector.openapi`'s (shared with the sandbox, which loads its own copy); this
module says which description and binds its names.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from connector.openapi import OpenApi, ParamError, ParamProblem, packaged, request_schema_ref

SPEC_FILE = "stripe_customers.openapi.json"


@cache
def spec() -> dict[str, Any]:
    return packaged("connector.billing", "specs", SPEC_FILE)


STRIPE = OpenApi(spec)

resolve = STRIPE.resolve
request_schema = STRIPE.request_schema
query_parameters = STRIPE.query_parameters
query_schema = STRIPE.query_schema
response_schema = STRIPE.response_schema
coerce_params = STRIPE.coerce_params
json_schema = STRIPE.json_schema
response_schema_ref = STRIPE.response_schema_ref
schema_problems = STRIPE.schema_problems
response_problems = STRIPE.response_problems

__all__ = [
    "STRIPE",
    "ParamError",
    "ParamProblem",
    "coerce_params",
    "create_params_schema",
    "json_schema",
    "query_parameters",
    "query_schema",
    "request_schema",
    "request_schema_ref",
    "resolve",
    "response_problems",
    "response_schema",
    "response_schema_ref",
    "schema_problems",
    "spec",
    "update_params_schema",
]


def create_params_schema() -> dict[str, Any]:
    """Schema of POST /v1/customers: every parameter a customer accepts, with limits."""
    return request_schema("/v1/customers", "post")


def update_params_schema() -> dict[str, Any]:
    """Schema of POST /v1/customers/{customer}."""
    return request_schema("/v1/customers/{customer}", "post")
