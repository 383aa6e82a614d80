"""The unmodified chargebee SDK v3 creates, reads, updates and lists customers on the sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator

import chargebee
import pytest
from chargebee import Chargebee

from connector.sandbox.chargebee import ChargebeeSandbox


@pytest.fixture(scope="module")
def server() -> Iterator[ChargebeeSandbox]:
    # Over plain http the SDK needs this class setting besides protocol="http".
    Chargebee.verify_ca_certs = False
    with ChargebeeSandbox() as sb:
        yield sb


@pytest.fixture
def sandbox(server: ChargebeeSandbox) -> ChargebeeSandbox:
    server.reset()
    server.configure_entities(["default-entity"])
    return server


@pytest.fixture
def cb(sandbox: ChargebeeSandbox) -> Chargebee:
    return Chargebee("test_customers", **sandbox.sdk_options())


def test_sdk_reaches_the_sandbox_over_http_on_loopback(
    sandbox: ChargebeeSandbox, cb: Chargebee
) -> None:
    cb.Customer.create({"id": "cust-1"})
    assert cb.env.api_endpoint == f"{sandbox.url}/api/v2"
    assert sandbox.requests == {"POST /api/v2/customers": 1}


def test_create_keeps_fields_meta_data_and_billing_address(
    sandbox: ChargebeeSandbox, cb: Chargebee
) -> None:
    got = cb.Customer.create(
        {
            "id": "sf-001A",
            "first_name": "Ada",
            "last_name": "Byron",
            "email": "ada@acme.test",
            "phone": "+44 20 7946 0000",
            "company": "Acme Ltd",
            "meta_data": json.dumps({"salesforce_account_id": "001A", "tier": "gold"}),
            "billing_address": {
                "line1": "1 Main St",
                "city": "London",
                "zip": "N1 9GU",
                "country": "GB",
            },
            "cf_region": "EMEA",
        }
    ).customer
    assert (got.id, got.company, got.meta_data) == (
        "sf-001A",
        "Acme Ltd",
        {"salesforce_account_id": "001A", "tier": "gold"},
    )
    assert got.billing_address.city == "London" and got.billing_address.country == "GB"
    assert got.raw_data["cf_region"] == "EMEA" and got.business_entity_id == "default-entity"
    assert cb.Customer.retrieve("sf-001A").customer.raw_data == sandbox.get_customer("sf-001A")


def test_create_without_id_gets_a_generated_one(cb: Chargebee) -> None:
    a, b = (
        cb.Customer.create({"company": "A"}).customer,
        cb.Customer.create({"company": "B"}).customer,
    )
    assert a.id and b.id and a.id != b.id


def test_update_sets_named_fields_clears_empty_ones_and_leaves_the_rest(
    sandbox: ChargebeeSandbox, cb: Chargebee
) -> None:
    cb.Customer.create(
        {
            "id": "c1",
            "company": "Acme",
            "email": "a@acme.test",
            "phone": "123",
            "billing_address": {"city": "Paris", "country": "FR"},
        }
    )
    got = cb.Customer.update("c1", {"company": "Acme SA", "phone": ""}).customer
    assert (got.company, got.email, got.phone) == ("Acme SA", "a@acme.test", None)
    assert got.billing_address.city == "Paris"
    assert sandbox.operations["update"] == 1


def test_update_replaces_meta_data_as_a_whole(cb: Chargebee) -> None:
    cb.Customer.create({"id": "c1", "meta_data": json.dumps({"a": "1", "b": "2"})})
    assert cb.Customer.update("c1", {"meta_data": json.dumps({"b": "3"})}).customer.meta_data == {
        "b": "3"
    }


def test_update_does_not_take_a_billing_address(cb: Chargebee) -> None:
    cb.Customer.create({"id": "c1"})
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.update("c1", {"billing_address": {"city": "Rome"}})  # type: ignore[typeddict-unknown-key]
    assert err.value.param == "billing_address"


def test_update_billing_info_replaces_the_billing_address(cb: Chargebee) -> None:
    cb.Customer.create(
        {
            "id": "c1",
            "company": "Acme",
            "billing_address": {"line1": "1 Rue", "city": "Paris", "country": "FR"},
        }
    )
    got = cb.Customer.update_billing_info(
        "c1", {"billing_address": {"city": "Lyon", "country": "FR"}}
    ).customer
    assert got.billing_address.city == "Lyon" and got.billing_address.line1 is None
    assert got.company == "Acme"


def test_every_write_moves_resource_version_forward(cb: Chargebee) -> None:
    v1 = cb.Customer.create({"id": "c1"}).customer.resource_version
    v2 = cb.Customer.update("c1", {"company": "x"}).customer.resource_version
    v3 = cb.Customer.update_billing_info(
        "c1", {"billing_address": {"city": "Oslo"}}
    ).customer.resource_version
    assert v1 < v2 < v3


def test_list_pages_with_offset_newest_first(cb: Chargebee) -> None:
    made = [cb.Customer.create({"id": f"c{i}"}).customer.id for i in range(5)]
    seen, offset, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"offset": offset} if offset else {})}
        page = cb.Customer.list(params)  # type: ignore[arg-type]
        seen += [e.customer.id for e in page.list]
        pages += 1
        offset = page.next_offset
        if not offset:
            break
    assert seen == list(reversed(made)) and pages == 3


def test_list_filters_by_id_email_and_entity(sandbox: ChargebeeSandbox, cb: Chargebee) -> None:
    sandbox.configure_entities(["eu", "us"])
    cb.Customer.create(
        {"id": "a", "email": "a@x.test"}, headers={"chargebee-business-entity-id": "eu"}
    )
    cb.Customer.create(
        {"id": "b", "email": "b@x.test"}, headers={"chargebee-business-entity-id": "us"}
    )
    cb.Customer.create(
        {"id": "c", "email": "b@x.test"}, headers={"chargebee-business-entity-id": "us"}
    )

    def ids(params: dict[str, object]) -> list[str]:
        return sorted(e.customer.id for e in cb.Customer.list(params).list)  # type: ignore[arg-type]

    assert ids({"id": {"is": "b"}}) == ["b"]
    assert ids({"id": {"in": ["a", "c", "zz"]}}) == ["a", "c"]
    assert ids({"email": {"is": "b@x.test"}}) == ["b", "c"]
    assert ids({"business_entity_id": {"is": "eu"}}) == ["a"]
    assert ids({"email": {"is": "b@x.test"}, "id": {"is": "c"}}) == ["c"]


def test_list_refuses_an_unknown_filter_and_a_bad_limit(cb: Chargebee) -> None:
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.list({"company": {"is": "x"}})
    assert err.value.param == "company[is]"
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.list({"limit": 101})
    assert err.value.param == "limit"


def test_missing_customer_is_resource_not_found(cb: Chargebee) -> None:
    for call in (
        lambda: cb.Customer.retrieve("nobody"),
        lambda: cb.Customer.update("nobody", {"company": "x"}),
        lambda: cb.Customer.update_billing_info("nobody", {"billing_address": {"city": "x"}}),
    ):
        with pytest.raises(chargebee.InvalidRequestError) as err:
            call()
        assert (err.value.http_status_code, err.value.api_error_code) == (404, "resource_not_found")
