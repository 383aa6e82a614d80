"""The Stripe sandbox refuses what Stripe refuses, checked against the OpenAPI description."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import stripe

from connector.billing import stripe_schema
from connector.sandbox.stripe import StripeSandbox


@pytest.fixture(scope="module")
def server() -> Iterator[StripeSandbox]:
    with StripeSandbox() as sb:
        yield sb


@pytest.fixture
def sandbox(server: StripeSandbox) -> StripeSandbox:
    server.reset()
    return server


@pytest.fixture
def client(sandbox: StripeSandbox) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_validation", base_addresses={"api": sandbox.url}, max_network_retries=0)


def refused(call: Any) -> dict[str, Any]:
    with pytest.raises(stripe.InvalidRequestError) as err:
        call()
    assert err.value.http_status == 400
    body = err.value.json_body
    assert body is not None
    error: dict[str, Any] = body["error"]
    assert error["type"] == "invalid_request_error"
    return error


def test_unknown_parameter(client: stripe.StripeClient, sandbox: StripeSandbox) -> None:
    error = refused(lambda: client.v1.customers.create(params={"nickname": "x"}))  # type: ignore[typeddict-unknown-key]
    assert error == {
        "code": "parameter_unknown", "doc_url": "https://stripe.com/docs/error-codes/parameter-unknown",
        "message": "Received unknown parameter: nickname", "param": "nickname", "type": "invalid_request_error",
    }
    assert sandbox.customers() == [] and sandbox.write_count == 0


def test_unknown_nested_parameter(client: stripe.StripeClient) -> None:
    error = refused(lambda: client.v1.customers.create(params={"address": {"street": "x"}}))  # type: ignore[typeddict-unknown-key]
    assert error["code"] == "parameter_unknown" and error["param"] == "address[street]"
    assert error["message"] == "Received unknown parameter: address[street]"


def test_parameter_only_valid_on_update_is_unknown_on_create(client: stripe.StripeClient) -> None:
    error = refused(lambda: client.v1.customers.create(params={"trial_end": "now"}))  # type: ignore[typeddict-unknown-key]
    assert error["code"] == "parameter_unknown" and error["param"] == "trial_end"


def test_unknown_query_parameter_on_list(client: stripe.StripeClient) -> None:
    error = refused(lambda: client.v1.customers.list(params={"name": "x"}))  # type: ignore[typeddict-unknown-key]
    assert error["code"] == "parameter_unknown" and error["param"] == "name"


@pytest.mark.parametrize(("param", "limit"), [("name", 256), ("phone", 20), ("email", 512), ("description", 5000)])
def test_value_over_max_length(client: stripe.StripeClient, param: str, limit: int) -> None:
    schema_limit = stripe_schema.create_params_schema()["properties"][param]["maxLength"]
    assert schema_limit == limit
    client.v1.customers.create(params={param: "a" * limit})  # type: ignore[misc]
    error = refused(lambda: client.v1.customers.create(params={param: "a" * (limit + 1)}))  # type: ignore[misc]
    assert error["param"] == param
    # Stripe's wording, long values shortened: "Invalid string: aaaaaaaaaa...aaaaaaaaaa; must be ..."
    assert error["message"].startswith("Invalid string: aaaaaaaaaa")
    assert error["message"].endswith(f"; must be at most {limit} characters")
    assert "code" not in error  # Stripe's published error-code list has no code for this


def test_nested_value_over_max_length(client: stripe.StripeClient) -> None:
    error = refused(lambda: client.v1.customers.create(params={"invoice_settings": {"custom_fields": [{"name": "n" * 31, "value": "v"}]}}))
    assert error["param"] == "invoice_settings[custom_fields][0][name]"
    assert error["message"].endswith("must be at most 30 characters")


def test_wrong_enum_value(client: stripe.StripeClient) -> None:
    error = refused(lambda: client.v1.customers.create(params={"tax_exempt": "sometimes"}))  # type: ignore[typeddict-item]
    assert error["param"] == "tax_exempt"
    assert error["message"] == "Invalid tax_exempt: must be one of exempt, none, or reverse"


def test_integer_that_is_not_one(sandbox: StripeSandbox) -> None:
    resp = requests.post(f"{sandbox.url}/v1/customers", data={"balance": "ten"}, headers={"Authorization": "Bearer sk_test_x"}, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "parameter_invalid_integer"
    assert resp.json()["error"]["param"] == "balance"


def test_metadata_limits(client: stripe.StripeClient) -> None:
    key = "k" * 41
    error = refused(lambda: client.v1.customers.create(params={"metadata": {key: "v"}}))
    assert error["param"] == f"metadata[{key}]" and "40 characters" in error["message"]
    error = refused(lambda: client.v1.customers.create(params={"metadata": {"k": "v" * 501}}))
    assert error["param"] == "metadata[k]" and "500 characters" in error["message"]
    client.v1.customers.create(params={"metadata": {"k" * 40: "v" * 500}})
    error = refused(lambda: client.v1.customers.create(params={"metadata": {f"k{i}": "v" for i in range(51)}}))
    assert error["param"] == "metadata" and "50 keys" in error["message"]
    client.v1.customers.create(params={"metadata": {f"k{i}": "v" for i in range(50)}})


def test_metadata_key_count_counts_what_the_update_leaves(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"metadata": {f"k{i}": "v" for i in range(50)}})
    error = refused(lambda: client.v1.customers.update(cus.id, params={"metadata": {"one_more": "v"}}))
    assert error["param"] == "metadata"
    swapped = client.v1.customers.update(cus.id, params={"metadata": {"k0": "", "one_more": "v"}})
    assert len(swapped.metadata.to_dict()) == 50


def test_shipping_requires_name_and_address(client: stripe.StripeClient) -> None:
    error = refused(lambda: client.v1.customers.create(params={"shipping": {"address": {"line1": "x"}}}))  # type: ignore[typeddict-item]
    assert error["code"] == "parameter_missing" and error["param"] == "shipping[name]"
    assert error["message"] == "Missing required param: shipping[name]."
    error = refused(lambda: client.v1.customers.create(params={"shipping": {"name": "Dock"}}))  # type: ignore[typeddict-item]
    assert error["code"] == "parameter_missing" and error["param"] == "shipping[address]"


def test_limit_out_of_range(client: stripe.StripeClient) -> None:
    assert refused(lambda: client.v1.customers.list(params={"limit": 0}))["param"] == "limit"
    assert refused(lambda: client.v1.customers.list(params={"limit": 101}))["param"] == "limit"
    assert refused(lambda: client.v1.customers.search(params={"query": "name:'x'", "limit": 101}))["param"] == "limit"
    client.v1.customers.list(params={"limit": 100})


def test_unknown_cursor(client: stripe.StripeClient) -> None:
    error = refused(lambda: client.v1.customers.list(params={"starting_after": "cus_00000000000000"}))
    assert error["code"] == "resource_missing" and error["param"] == "starting_after"


@pytest.mark.parametrize(
    "query",
    ["", "name", "name:", "name:'unterminated", "nickname:'x'", "name:'a' AND email:'b' OR phone:'c'", "name~'ab'", "created:'yesterday'", "metadata['k']>'v'"],
)
def test_unparseable_search_query(client: stripe.StripeClient, query: str) -> None:
    error = refused(lambda: client.v1.customers.search(params={"query": query}))
    assert error["param"] == "query"


def test_search_without_query(sandbox: StripeSandbox) -> None:
    resp = requests.get(f"{sandbox.url}/v1/customers/search", headers={"Authorization": "Bearer sk_test_x"}, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["error"] == {
        "code": "parameter_missing", "doc_url": "https://stripe.com/docs/error-codes/parameter-missing",
        "message": "Missing required param: query.", "param": "query", "type": "invalid_request_error",
    }


def test_reference_to_an_object_the_account_does_not_hold(client: stripe.StripeClient) -> None:
    error = refused(lambda: client.v1.customers.create(params={"coupon": "SUMMER"}))
    assert error["code"] == "resource_missing" and error["param"] == "coupon"


def test_invalid_invoice_prefix(client: stripe.StripeClient) -> None:
    assert refused(lambda: client.v1.customers.create(params={"invoice_prefix": "ab"}))["param"] == "invoice_prefix"
    assert client.v1.customers.create(params={"invoice_prefix": "ACME1"}).invoice_prefix == "ACME1"


def test_array_given_as_a_string(sandbox: StripeSandbox) -> None:
    resp = requests.post(f"{sandbox.url}/v1/customers", data={"preferred_locales": "en"}, headers={"Authorization": "Bearer sk_test_x"}, timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "preferred_locales"


def test_hash_and_value_for_the_same_key(sandbox: StripeSandbox) -> None:
    resp = requests.post(
        f"{sandbox.url}/v1/customers", data=[("metadata[a]", "1"), ("metadata", "")],
        headers={"Authorization": "Bearer sk_test_x"}, timeout=5,
    )
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


def test_expand_is_accepted_in_both_encodings(sandbox: StripeSandbox, client: stripe.StripeClient) -> None:
    client.v1.customers.create(params={"name": "x", "expand": ["tax"]})
    resp = requests.get(f"{sandbox.url}/v1/customers?expand[]=data.default_source&limit=1", headers={"Authorization": "Bearer sk_test_x"}, timeout=5)
    assert resp.status_code == 200


def test_refused_requests_change_nothing(client: stripe.StripeClient, sandbox: StripeSandbox) -> None:
    cus = client.v1.customers.create(params={"name": "Keep", "metadata": {"a": "1"}})
    before = sandbox.get_customer(cus.id)
    refused(lambda: client.v1.customers.update(cus.id, params={"name": "Changed", "phone": "1" * 21}))
    assert sandbox.get_customer(cus.id) == before
    assert sandbox.write_count == 1
