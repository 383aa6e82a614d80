"""Idempotency keys behave as Stripe's do: replayed, refused on misuse, kept only for executed requests."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
import stripe

from connector.sandbox.stripe import StripeSandbox

AUTH = {"Authorization": "Bearer sk_test_idem"}


@pytest.fixture(scope="module")
def server() -> Iterator[StripeSandbox]:
    with StripeSandbox() as sb:
        yield sb


@pytest.fixture
def sandbox(server: StripeSandbox) -> Iterator[StripeSandbox]:
    server.reset()
    server.clear_faults()
    server.idempotency_window = 24 * 3600.0
    yield server
    server.clear_faults()


def make_client(sandbox: StripeSandbox, retries: int = 0) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_idem", base_addresses={"api": sandbox.url}, max_network_retries=retries)


@pytest.fixture
def client(sandbox: StripeSandbox) -> stripe.StripeClient:
    return make_client(sandbox)


def test_same_key_same_params_replays_the_first_answer(client: stripe.StripeClient, sandbox: StripeSandbox) -> None:
    first = client.v1.customers.create(params={"name": "Acme"}, options={"idempotency_key": "order-1"})
    again = client.v1.customers.create(params={"name": "Acme"}, options={"idempotency_key": "order-1"})
    assert again.to_dict() == first.to_dict()
    assert first.last_response is not None and again.last_response is not None
    assert "Idempotent-Replayed" not in first.last_response.headers
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert again.last_response.headers["Original-Request"] == first.last_response.headers["Request-Id"]
    assert again.last_response.headers["Request-Id"] != first.last_response.headers["Request-Id"]
    assert len(sandbox.customers()) == 1 and sandbox.write_count == 1
    assert sandbox.stats()["idempotent_replays"] == 1


def test_same_key_other_params_is_an_idempotency_error(client: stripe.StripeClient, sandbox: StripeSandbox) -> None:
    client.v1.customers.create(params={"name": "Acme"}, options={"idempotency_key": "order-2"})
    with pytest.raises(stripe.IdempotencyError) as err:
        client.v1.customers.create(params={"name": "Other"}, options={"idempotency_key": "order-2"})
    assert err.value.http_status == 400
    assert err.value.json_body is not None and err.value.json_body["error"]["type"] == "idempotency_error"
    assert len(sandbox.customers()) == 1


def test_params_compare_by_value_not_by_order(sandbox: StripeSandbox) -> None:
    headers = {**AUTH, "Idempotency-Key": "order-3"}
    a = requests.post(f"{sandbox.url}/v1/customers", data=[("name", "A"), ("email", "a@x.test")], headers=headers, timeout=5)
    b = requests.post(f"{sandbox.url}/v1/customers", data=[("email", "a@x.test"), ("name", "A")], headers=headers, timeout=5)
    assert a.status_code == b.status_code == 200 and a.json() == b.json()
    assert b.headers["Idempotent-Replayed"] == "true"


def test_same_key_on_another_endpoint_is_an_idempotency_error(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"name": "Acme"}, options={"idempotency_key": "order-4"})
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.update(cus.id, params={"name": "Acme"}, options={"idempotency_key": "order-4"})


def test_keys_longer_than_255_characters_are_refused(client: stripe.StripeClient, sandbox: StripeSandbox) -> None:
    client.v1.customers.create(params={"name": "ok"}, options={"idempotency_key": "k" * 255})
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.create(params={"name": "too long"}, options={"idempotency_key": "k" * 256})
    assert err.value.http_status == 400
    assert [c["name"] for c in sandbox.customers()] == ["ok"]


def test_a_request_refused_by_validation_is_not_stored(client: stripe.StripeClient, sandbox: StripeSandbox) -> None:
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.create(params={"name": "x" * 300}, options={"idempotency_key": "order-5"})
    fixed = client.v1.customers.create(params={"name": "fixed"}, options={"idempotency_key": "order-5"})
    assert fixed.last_response is not None and "Idempotent-Replayed" not in fixed.last_response.headers
    assert [c["name"] for c in sandbox.customers()] == ["fixed"]


def test_an_injected_500_is_not_stored(client: stripe.StripeClient, sandbox: StripeSandbox) -> None:
    sandbox.inject_fault(status=500, method="POST")
    with pytest.raises(stripe.APIError) as err:
        client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "order-6"})
    assert err.value.http_status == 500
    assert err.value.json_body is not None and err.value.json_body["error"]["type"] == "api_error"
    again = client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "order-6"})
    assert again.last_response is not None and "Idempotent-Replayed" not in again.last_response.headers
    assert len(sandbox.customers()) == 1


def test_an_executed_error_is_replayed_with_its_status(client: stripe.StripeClient) -> None:
    for attempt in range(2):
        with pytest.raises(stripe.InvalidRequestError) as err:
            client.v1.customers.update("cus_00000000000000", params={"name": "x"}, options={"idempotency_key": "order-7"})
        assert err.value.http_status == 404
        replayed = (err.value.headers or {}).get("Idempotent-Replayed")
        assert replayed == ("true" if attempt else None)


def test_write_applied_then_connection_dropped_is_replayed_on_retry(sandbox: StripeSandbox) -> None:
    # The crash-recovery case: Stripe did the write, the answer never arrived, the client retries.
    sandbox.inject_fault(drop="after", method="POST", path=r"^/v1/customers$")
    client = make_client(sandbox, retries=2)
    cus = client.v1.customers.create(params={"name": "Once"})  # stripe-python adds a key itself
    assert cus.last_response is not None and cus.last_response.headers["Idempotent-Replayed"] == "true"
    assert [c["id"] for c in sandbox.customers()] == [cus.id]
    assert sandbox.write_count == 1


def test_dropped_before_apply_leaves_nothing_behind(sandbox: StripeSandbox, client: stripe.StripeClient) -> None:
    sandbox.inject_fault(drop="before", method="POST")
    with pytest.raises(stripe.APIConnectionError):
        client.v1.customers.create(params={"name": "Never"}, options={"idempotency_key": "order-8"})
    assert sandbox.customers() == []
    cus = client.v1.customers.create(params={"name": "Never"}, options={"idempotency_key": "order-8"})
    assert cus.last_response is not None and "Idempotent-Replayed" not in cus.last_response.headers


def test_expired_keys_execute_again(client: stripe.StripeClient, sandbox: StripeSandbox) -> None:
    client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "order-9"})
    assert sandbox.expire_idempotency_keys() == 1
    client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "order-9"})
    assert len(sandbox.customers()) == 2


@pytest.fixture
def hand_clock(sandbox: StripeSandbox) -> Iterator[list[float]]:
    """The sandbox's clock, moved by the test (no test waits for real time)."""
    now = [1000.0]
    sandbox.clock = lambda: now[0]
    yield now
    sandbox.clock = time.monotonic


def test_expiry_spares_younger_keys(client: stripe.StripeClient, sandbox: StripeSandbox, hand_clock: list[float]) -> None:
    client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "old"})
    hand_clock[0] += 3600.0
    client.v1.customers.create(params={"name": "B"}, options={"idempotency_key": "young"})
    assert sandbox.expire_idempotency_keys(older_than=1800.0) == 1
    client.v1.customers.create(params={"name": "B"}, options={"idempotency_key": "young"})
    assert len(sandbox.customers()) == 2


def test_keys_expire_after_the_configured_window(
    client: stripe.StripeClient, sandbox: StripeSandbox, hand_clock: list[float]
) -> None:
    client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "order-10"})
    hand_clock[0] += 24 * 3600.0  # still inside Stripe's 24 hours
    kept = client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "order-10"})
    assert kept.last_response is not None and kept.last_response.headers.get("Idempotent-Replayed") == "true"
    hand_clock[0] += 1.0
    again = client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "order-10"})
    assert again.last_response is not None and "Idempotent-Replayed" not in again.last_response.headers
    assert len(sandbox.customers()) == 2


def test_expiry_through_the_control_api(client: stripe.StripeClient, sandbox: StripeSandbox) -> None:
    client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "order-11"})
    resp = requests.post(f"{sandbox.url}/_sandbox/idempotency/expire", json={}, timeout=5)
    assert resp.json() == {"ok": True, "expired": 1}


def test_get_requests_ignore_the_key(sandbox: StripeSandbox, client: stripe.StripeClient) -> None:
    headers = {**AUTH, "Idempotency-Key": "read-1"}
    assert requests.get(f"{sandbox.url}/v1/customers", headers=headers, timeout=5).json()["data"] == []
    client.v1.customers.create(params={"name": "A"})
    second = requests.get(f"{sandbox.url}/v1/customers", headers=headers, timeout=5)
    assert len(second.json()["data"]) == 1 and "Idempotent-Replayed" not in second.headers
