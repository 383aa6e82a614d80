"""Tests and the demo set up and inspect the Stripe sandbox through Python and `/_sandbox/`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import stripe

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
    return stripe.StripeClient("sk_test_control", base_addresses={"api": sandbox.url}, max_network_retries=0)


def test_loaded_customers_are_served_by_the_api(sandbox: StripeSandbox, client: stripe.StripeClient) -> None:
    ids = sandbox.load({"customers": [
        {"id": "cus_Loaded00000001", "name": "Loaded", "email": "l@acme.test", "metadata": {"sf_account_id": "001L"}, "created": 1_700_000_000},
        {"name": "Generated id", "address": {"country": "DE"}},
    ]})
    assert ids[0] == "cus_Loaded00000001" and ids[1].startswith("cus_")
    got = client.v1.customers.retrieve("cus_Loaded00000001")
    assert got.name == "Loaded" and got.created == 1_700_000_000 and got.livemode is False
    assert client.v1.customers.retrieve(ids[1]).address.country == "DE"
    found = client.v1.customers.search(params={"query": "metadata['sf_account_id']:'001L'"})
    assert [c.id for c in found.data] == ["cus_Loaded00000001"]
    assert sandbox.write_count == 0


def test_load_refuses_what_the_api_would_refuse(sandbox: StripeSandbox) -> None:
    with pytest.raises(ValueError, match="name"):
        sandbox.load({"customers": [{"name": "x" * 300}]})
    with pytest.raises(ValueError, match="nickname"):
        sandbox.load({"customers": [{"nickname": "x"}]})


def test_customers_and_get_customer_return_api_objects(sandbox: StripeSandbox, client: stripe.StripeClient) -> None:
    a = client.v1.customers.create(params={"name": "A"})
    b = client.v1.customers.create(params={"name": "B"})
    assert [c["id"] for c in sandbox.customers()] == [a.id, b.id]
    assert sandbox.get_customer(a.id) == a.to_dict()
    assert sandbox.get_customer("cus_missing") is None


def test_dashboard_edit_is_seen_by_the_api_but_not_counted(sandbox: StripeSandbox, client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"name": "A", "metadata": {"a": "1", "b": "2"}})
    edited = sandbox.edit_customer(cus.id, {"name": "Edited in dashboard", "metadata": {"b": "", "c": "3"}, "phone": None})
    assert edited["name"] == "Edited in dashboard" and edited["metadata"] == {"a": "1", "c": "3"}
    fetched = client.v1.customers.retrieve(cus.id)
    assert fetched.name == "Edited in dashboard" and fetched.metadata.to_dict() == {"a": "1", "c": "3"}
    assert sandbox.write_count == 1


def test_dashboard_edit_of_unknown_or_invalid(sandbox: StripeSandbox, client: stripe.StripeClient) -> None:
    with pytest.raises(KeyError):
        sandbox.edit_customer("cus_missing", {"name": "x"})
    cus = client.v1.customers.create(params={"name": "A"})
    with pytest.raises(ValueError, match="phone"):
        sandbox.edit_customer(cus.id, {"phone": "1" * 21})


def test_dashboard_delete(sandbox: StripeSandbox, client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"name": "A"})
    assert sandbox.delete_customer(cus.id) == {"id": cus.id, "object": "customer", "deleted": True}
    assert sandbox.customers() == []
    assert sandbox.customers(include_deleted=True) == [{"id": cus.id, "object": "customer", "deleted": True}]
    assert sandbox.get_customer(cus.id) == {"id": cus.id, "object": "customer", "deleted": True}
    assert client.v1.customers.retrieve(cus.id).to_dict() == {"id": cus.id, "object": "customer", "deleted": True}
    assert sandbox.stats()["deletes"] == 0  # an API delete is what the counter watches
    with pytest.raises(KeyError):
        sandbox.delete_customer(cus.id)


def test_reset_forgets_everything(sandbox: StripeSandbox, client: stripe.StripeClient) -> None:
    client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "k"})
    sandbox.reset()
    assert sandbox.customers(include_deleted=True) == [] and sandbox.write_count == 0
    client.v1.customers.create(params={"name": "B"}, options={"idempotency_key": "k"})  # key forgotten too
    assert [c["name"] for c in sandbox.customers()] == ["B"]


def test_control_api_over_http(sandbox: StripeSandbox) -> None:
    url = sandbox.url
    loaded = requests.post(f"{url}/_sandbox/load", json={"customers": [{"id": "cus_Http0000000001", "name": "H", "metadata": {"k": "v"}}]}, timeout=5)
    assert loaded.json() == {"ok": True, "ids": ["cus_Http0000000001"]}
    listed = requests.get(f"{url}/_sandbox/customers", timeout=5).json()["data"]
    assert [c["name"] for c in listed] == ["H"]
    edited = requests.post(f"{url}/_sandbox/customers/cus_Http0000000001/edit", json={"email": "h@acme.test"}, timeout=5)
    assert edited.status_code == 200 and edited.json()["email"] == "h@acme.test"
    bad = requests.post(f"{url}/_sandbox/customers/cus_Http0000000001/edit", json={"tax_exempt": "maybe"}, timeout=5)
    assert bad.status_code == 400
    deleted = requests.post(f"{url}/_sandbox/customers/cus_Http0000000001/delete", timeout=5)
    assert deleted.json() == {"id": "cus_Http0000000001", "object": "customer", "deleted": True}
    assert requests.post(f"{url}/_sandbox/customers/cus_Http0000000001/delete", timeout=5).status_code == 404
    assert requests.get(f"{url}/_sandbox/customers", timeout=5).json()["data"] == []
    assert len(requests.get(f"{url}/_sandbox/customers?include_deleted=true", timeout=5).json()["data"]) == 1
    assert requests.post(f"{url}/_sandbox/load", json={"customers": [{"name": "x" * 300}]}, timeout=5).status_code == 400
    assert requests.post(f"{url}/_sandbox/reset", timeout=5).json() == {"ok": True}
    assert requests.get(f"{url}/_sandbox/customers?include_deleted=true", timeout=5).json()["data"] == []
    stats = requests.get(f"{url}/_sandbox/stats", timeout=5).json()
    assert stats["kind"] == "stripe" and stats["write_count"] == 0


def test_control_calls_need_no_key_and_are_not_counted(sandbox: StripeSandbox) -> None:
    requests.get(f"{sandbox.url}/_sandbox/customers", timeout=5)
    assert sandbox.stats()["total"] == 0
