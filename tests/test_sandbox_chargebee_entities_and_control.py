"""Business entities (with and without customer sharing), idempotency, errors, limits and the
`/_sandbox/` control API of the Chargebee sandbox, driven through the unmodified SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator

import chargebee
import pytest
import requests
from chargebee import Chargebee

from connector.sandbox.chargebee import ChargebeeSandbox

ENTITY = "chargebee-business-entity-id"
KEY = "chargebee-idempotency-key"


@pytest.fixture(scope="module")
def server() -> Iterator[ChargebeeSandbox]:
    Chargebee.verify_ca_certs = False
    with ChargebeeSandbox() as sb:
        yield sb


@pytest.fixture
def sandbox(server: ChargebeeSandbox) -> Iterator[ChargebeeSandbox]:
    server.reset()
    server.configure_entities(["eu", "us"])
    yield server
    server.clear_faults()
    server.set_rate_limit(None)


@pytest.fixture
def cb(sandbox: ChargebeeSandbox) -> Chargebee:
    return Chargebee("test_entities", **sandbox.sdk_options())


# --- business entities ---------------------------------------------------------------------


def test_create_goes_to_the_header_entity_or_the_default(
    sandbox: ChargebeeSandbox, cb: Chargebee
) -> None:
    assert (
        cb.Customer.create({"id": "a"}, headers={ENTITY: "us"}).customer.business_entity_id == "us"
    )
    assert cb.Customer.create({"id": "b"}).customer.business_entity_id == "eu"
    assert (
        cb.Customer.create({"id": "c", "business_entity_id": "us"}).customer.business_entity_id
        == "us"
    )
    assert [c["id"] for c in sandbox.customers("us")] == ["a", "c"]


def test_header_and_body_entity_must_agree(cb: Chargebee) -> None:
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.create({"id": "a", "business_entity_id": "us"}, headers={ENTITY: "eu"})
    assert err.value.param == "business_entity_id"


def test_unknown_entity_is_refused(cb: Chargebee) -> None:
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.create({"id": "a"}, headers={ENTITY: "apac"})
    assert err.value.http_status_code == 400 and "apac" in str(err.value)


def test_without_sharing_another_entity_cannot_see_the_customer(cb: Chargebee) -> None:
    cb.Customer.create({"id": "a", "company": "Acme"}, headers={ENTITY: "eu"})
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.retrieve("a", headers={ENTITY: "us"})
    assert err.value.api_error_code == "resource_not_found"
    with pytest.raises(chargebee.InvalidRequestError):
        cb.Customer.update("a", {"company": "x"}, headers={ENTITY: "us"})
    assert cb.Customer.list({"id": {"is": "a"}}, headers={ENTITY: "us"}).list == []
    assert cb.Customer.retrieve("a", headers={ENTITY: "eu"}).customer.company == "Acme"
    assert cb.Customer.retrieve("a").customer.company == "Acme"  # no header: the whole site


def test_with_sharing_every_entity_uses_the_primary_customer(
    sandbox: ChargebeeSandbox, cb: Chargebee
) -> None:
    sandbox.configure_entities(["eu", "us"], customer_sharing=True)
    cb.Customer.create({"id": "a", "company": "Acme"}, headers={ENTITY: "eu"})
    got = cb.Customer.update("a", {"company": "Acme Group"}, headers={ENTITY: "us"}).customer
    assert (got.company, got.business_entity_id) == ("Acme Group", "eu")
    assert [
        e.customer.id for e in cb.Customer.list({"id": {"is": "a"}}, headers={ENTITY: "us"}).list
    ] == ["a"]


def test_a_taken_id_is_refused_site_wide(cb: Chargebee) -> None:
    cb.Customer.create({"id": "a"}, headers={ENTITY: "eu"})
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.create({"id": "a"}, headers={ENTITY: "us"})
    e = err.value
    assert (e.http_status_code, e.api_error_code, e.param, e.error_code) == (
        400,
        "duplicate_entry",
        "id",
        "param_not_unique",
    )
    assert e.json_obj["message"] == "id : The value a is already present."


# --- idempotency -----------------------------------------------------------------------------


def test_same_key_and_request_replay_the_first_answer(
    sandbox: ChargebeeSandbox, cb: Chargebee
) -> None:
    first = cb.Customer.create({"id": "a", "company": "Acme"}, headers={KEY: "k-1"})
    again = cb.Customer.create({"id": "a", "company": "Acme"}, headers={KEY: "k-1"})
    assert (first.is_idempotency_replayed, again.is_idempotency_replayed) == (False, True)
    assert again.customer.raw_data == first.customer.raw_data
    assert sandbox.write_count == 1 and sandbox.operations["replay"] == 1


def test_a_write_whose_answer_was_lost_is_replayed_not_repeated(
    sandbox: ChargebeeSandbox, cb: Chargebee
) -> None:
    sandbox.inject_fault(drop="after", method="POST")
    with pytest.raises(Exception):  # noqa: B017 - the SDK raises httpx's error as is
        cb.Customer.create({"id": "a"}, headers={KEY: "k-lost"})
    assert cb.Customer.create({"id": "a"}, headers={KEY: "k-lost"}).is_idempotency_replayed
    assert len(sandbox.customers()) == 1


def test_a_key_reused_for_another_request_is_refused(cb: Chargebee) -> None:
    cb.Customer.create({"id": "a"}, headers={KEY: "k-1"})
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.create({"id": "b"}, headers={KEY: "k-1"})
    assert err.value.error_code == "idempotency_key_reused"


def test_a_key_longer_than_100_characters_is_refused(cb: Chargebee) -> None:
    with pytest.raises(chargebee.InvalidRequestError):
        cb.Customer.create({"id": "a"}, headers={KEY: "k" * 101})
    assert cb.Customer.create({"id": "a"}, headers={KEY: "k" * 100}).customer.id == "a"


def test_an_expired_key_runs_the_request_again(sandbox: ChargebeeSandbox, cb: Chargebee) -> None:
    cb.Customer.create({"id": "a"}, headers={KEY: "k-1"})
    assert sandbox.expire_idempotency_keys() == 1
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.create({"id": "a"}, headers={KEY: "k-1"})
    assert err.value.api_error_code == "duplicate_entry"


# --- auth, errors and limits -------------------------------------------------------------------


def test_basic_auth_with_the_api_key_as_user(sandbox: ChargebeeSandbox) -> None:
    assert (
        requests.get(
            f"{sandbox.url}/api/v2/customers", auth=("test_key", ""), timeout=5
        ).status_code
        == 200
    )
    for auth in [None, ("live_key", "")]:
        resp = requests.get(f"{sandbox.url}/api/v2/customers", auth=auth, timeout=5)
        body = resp.json()
        assert resp.status_code == 401 and body["api_error_code"] == "api_authentication_failed"
        assert body["http_status_code"] == 401


def test_configured_keys_are_the_only_ones_accepted() -> None:
    with ChargebeeSandbox(api_keys={"test_only"}) as sb:
        assert (
            requests.get(
                f"{sb.url}/api/v2/customers", auth=("test_only", ""), timeout=5
            ).status_code
            == 200
        )
        assert (
            requests.get(
                f"{sb.url}/api/v2/customers", auth=("test_other", ""), timeout=5
            ).status_code
            == 401
        )


def test_errors_carry_chargebees_fields(cb: Chargebee) -> None:
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.create({"id": "a", "email": "x" * 61 + "@acme.test"})
    body = err.value.json_obj
    assert set(body) >= {
        "message",
        "type",
        "api_error_code",
        "error_code",
        "param",
        "http_status_code",
    }
    assert (body["param"], body["type"], body["http_status_code"]) == (
        "email",
        "invalid_request",
        400,
    )


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"company": "c" * 251}, "company"),
        ({"phone": "1" * 51}, "phone"),
        ({"first_name": "f" * 151}, "first_name"),
        ({"email": "not-an-email"}, "email"),
        ({"billing_address": {"country": "Germany"}}, "billing_address[country]"),
        ({"meta_data": "{not json"}, "meta_data"),
        ({"nickname": "x"}, "nickname"),
        ({"id": "a" * 51}, "id"),
    ],
)
def test_invalid_parameters_are_refused_and_nothing_is_created(
    sandbox: ChargebeeSandbox, cb: Chargebee, params: dict[str, object], param: str
) -> None:
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.create(params)  # type: ignore[arg-type]
    assert err.value.param == param
    assert sandbox.customers() == []


def test_rate_limit_answers_429_api_request_limit_exceeded(
    sandbox: ChargebeeSandbox, cb: Chargebee
) -> None:
    sandbox.set_rate_limit(0.001)
    cb.Customer.list()
    with pytest.raises(chargebee.OperationFailedError) as err:
        cb.Customer.list()
    assert (err.value.http_status_code, err.value.api_error_code) == (
        429,
        "api_request_limit_exceeded",
    )
    assert sandbox.rate_limited == 1


# --- control API -----------------------------------------------------------------------------


def test_control_api_loads_entities_and_customers_and_reads_them_back(
    sandbox: ChargebeeSandbox, cb: Chargebee
) -> None:
    resp = requests.post(
        f"{sandbox.url}/_sandbox/load",
        json={
            "business_entities": ["acme-us", "acme-de"],
            "customer_sharing": True,
            "customers": [
                {
                    "id": "loaded",
                    "company": "Loaded",
                    "meta_data": {"k": "v"},
                    "business_entity_id": "acme-de",
                    "billing_address": {"city": "Berlin", "country": "DE"},
                }
            ],
        },
        timeout=5,
    )
    assert resp.json() == {"ids": ["loaded"]}
    got = cb.Customer.retrieve("loaded", headers={ENTITY: "acme-us"}).customer
    assert (got.company, got.meta_data, got.business_entity_id) == ("Loaded", {"k": "v"}, "acme-de")
    listed = requests.get(
        f"{sandbox.url}/_sandbox/customers", params={"business_entity_id": "acme-de"}, timeout=5
    ).json()
    assert [c["id"] for c in listed["customers"]] == ["loaded"]
    assert sandbox.write_count == 0
    stats = requests.get(f"{sandbox.url}/_sandbox/stats", timeout=5).json()
    assert (
        stats["business_entities"] == ["acme-us", "acme-de"] and stats["customer_sharing"] is True
    )


def test_control_api_refuses_what_the_api_would(sandbox: ChargebeeSandbox) -> None:
    resp = requests.post(
        f"{sandbox.url}/_sandbox/load", json={"customers": [{"company": "c" * 251}]}, timeout=5
    )
    assert resp.status_code == 400 and "company" in resp.json()["error"]


def test_web_app_edit_is_seen_but_not_counted(sandbox: ChargebeeSandbox, cb: Chargebee) -> None:
    cb.Customer.create(
        {
            "id": "a",
            "meta_data": json.dumps({"k": "v"}),
            "billing_address": {"city": "Rome", "country": "IT"},
        }
    )
    resp = requests.post(
        f"{sandbox.url}/_sandbox/customers/a/edit",
        json={"company": "Edited", "billing_address": {"zip": "00100"}},
        timeout=5,
    )
    assert resp.status_code == 200
    got = cb.Customer.retrieve("a").customer
    assert (got.company, got.billing_address.city, got.billing_address.zip) == (
        "Edited",
        "Rome",
        "00100",
    )
    assert sandbox.write_count == 1


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("rate_limit", 429, "api_request_limit_exceeded"),
        ("lock_timeout", 429, "lock_timeout"),
        ("internal_error", 500, "internal_error"),
        ("temporary_error", 503, "internal_temporary_error"),
    ],
)
def test_control_api_injects_faults_in_chargebees_shape(
    sandbox: ChargebeeSandbox, cb: Chargebee, kind: str, status: int, code: str
) -> None:
    requests.post(
        f"{sandbox.url}/_sandbox/faults",
        json={"kind": kind, "count": 1, "path": "/customers"},
        timeout=5,
    )
    with pytest.raises(chargebee.APIError) as err:
        cb.Customer.list()
    assert (err.value.http_status_code, err.value.api_error_code) == (status, code)
    assert cb.Customer.list().list == []  # one fault, then normal answers


def test_control_api_sets_latency_and_rate_limit(sandbox: ChargebeeSandbox) -> None:
    requests.post(f"{sandbox.url}/_sandbox/rate_limit", json={"per_second": 0.001}, timeout=5)
    requests.post(f"{sandbox.url}/_sandbox/latency", json={"seconds": 0}, timeout=5)
    statuses = [
        requests.get(f"{sandbox.url}/api/v2/customers", auth=("test_k", ""), timeout=5).status_code
        for _ in range(2)
    ]
    assert statuses == [200, 429]
    requests.post(f"{sandbox.url}/_sandbox/rate_limit", json={"per_second": None}, timeout=5)
    assert (
        requests.get(f"{sandbox.url}/api/v2/customers", auth=("test_k", ""), timeout=5).status_code
        == 200
    )


def test_control_api_deletes_a_customer_as_the_web_app_does(
    sandbox: ChargebeeSandbox, cb: Chargebee
) -> None:
    cb.Customer.create({"id": "a"})
    assert (
        requests.post(f"{sandbox.url}/_sandbox/customers/a/delete", timeout=5).json()["deleted"]
        is True
    )
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.retrieve("a")
    assert err.value.api_error_code == "resource_not_found"
    assert cb.Customer.list().list == []
    listed = cb.Customer.list({"include_deleted": True}).list
    assert [(e.customer.id, e.customer.deleted) for e in listed] == [("a", True)]
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.create({"id": "a"})
    assert err.value.api_error_code == "duplicate_entry"
    assert requests.post(f"{sandbox.url}/_sandbox/customers/a/delete", timeout=5).status_code == 404


def test_start_chargebee_sandbox_loads_a_data_set() -> None:
    from connector.sandbox.run import SANDBOX_CHARGEBEE_KEY, start_chargebee_sandbox

    sb = start_chargebee_sandbox(
        {
            "business_entities": ["eu", "us"],
            "customer_sharing": True,
            "customers": [{"id": "x", "company": "X", "business_entity_id": "us"}],
        }
    )
    try:
        cb = Chargebee(SANDBOX_CHARGEBEE_KEY, **sb.sdk_options())
        assert cb.Customer.retrieve("x", headers={ENTITY: "eu"}).customer.company == "X"
    finally:
        sb.stop()
