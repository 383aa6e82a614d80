"""The Stripe sandbox keeps customers the way Stripe does, driven by the unmodified StripeClient."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import stripe

from connector.sandbox.stripe import StripeSandbox


@pytest.fixture(scope="module")
def server() -> Iterator[StripeSandbox]:
    with StripeSandbox() as sb:
        yield sb


@pytest.fixture
def sandbox(server: StripeSandbox) -> StripeSandbox:
    # one server per module (stopping one takes half a second), a fresh account per test
    server.reset()
    server.search_delay = 0.0
    return server


@pytest.fixture
def client(sandbox: StripeSandbox) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_customers", base_addresses={"api": sandbox.url}, max_network_retries=0)


def test_create_returns_a_full_test_mode_customer(client: stripe.StripeClient) -> None:
    before = int(time.time())
    cus = client.v1.customers.create(params={"name": "Acme GmbH", "email": "billing@acme.test"})
    assert re.fullmatch(r"cus_[A-Za-z0-9]{14}", cus.id)
    body = cus.to_dict()
    assert body["object"] == "customer"
    assert body["livemode"] is False
    assert before <= body["created"] <= int(time.time())
    assert body["name"] == "Acme GmbH" and body["email"] == "billing@acme.test"
    assert body["tax_exempt"] == "none"
    assert body["metadata"] == {} and body["preferred_locales"] == []
    assert body["address"] is None and body["shipping"] is None and body["phone"] is None
    assert body["balance"] == 0 and body["delinquent"] is False and body["next_invoice_sequence"] == 1
    assert body["invoice_settings"]["footer"] is None
    for key in ("currency", "default_source", "discount", "description", "test_clock"):
        assert body[key] is None
    assert re.fullmatch(r"[A-Z0-9]{3,12}", body["invoice_prefix"])


def test_nested_params_are_read_from_the_form_body(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={
        "address": {"line1": "1 Main St", "city": "Springfield", "country": "US"},
        "shipping": {"name": "Dock 4", "address": {"line1": "2 Side St", "postal_code": "12345"}},
        "metadata": {"sf_account_id": "001xx", "tier": "gold"},
        "preferred_locales": ["de", "en"],
        "invoice_settings": {"footer": "Thanks", "custom_fields": [{"name": "PO", "value": "42"}]},
        "balance": -500,
    })
    assert cus.address.to_dict() == {
        "city": "Springfield", "country": "US", "line1": "1 Main St", "line2": None, "postal_code": None, "state": None,
    }
    assert cus.shipping.name == "Dock 4" and cus.shipping.address.postal_code == "12345"
    assert cus.metadata.to_dict() == {"sf_account_id": "001xx", "tier": "gold"}
    assert cus.preferred_locales == ["de", "en"]
    assert cus.invoice_settings.footer == "Thanks"
    assert cus.invoice_settings.custom_fields[0].to_dict() == {"name": "PO", "value": "42"}
    assert cus.balance == -500


def test_retrieve_answers_what_create_answered(client: stripe.StripeClient) -> None:
    created = client.v1.customers.create(params={"name": "A", "metadata": {"k": "v"}})
    fetched = client.v1.customers.retrieve(created.id)
    assert fetched.to_dict() == created.to_dict()


def test_update_merges_metadata_key_by_key(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"metadata": {"a": "1", "b": "2"}})
    updated = client.v1.customers.update(cus.id, params={"metadata": {"b": "20", "c": "3"}})
    assert updated.metadata.to_dict() == {"a": "1", "b": "20", "c": "3"}


def test_empty_string_unsets_a_metadata_key(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"metadata": {"a": "1", "b": "2"}})
    updated = client.v1.customers.update(cus.id, params={"metadata": {"a": ""}})
    assert updated.metadata.to_dict() == {"b": "2"}


def test_empty_metadata_clears_all_keys(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"metadata": {"a": "1", "b": "2"}})
    updated = client.v1.customers.update(cus.id, params={"metadata": ""})
    assert updated.metadata.to_dict() == {}


def test_empty_address_clears_the_address(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"address": {"line1": "x"}, "shipping": {"name": "n", "address": {"city": "c"}}})
    updated = client.v1.customers.update(cus.id, params={"address": "", "shipping": ""})
    assert updated.address is None and updated.shipping is None


def test_empty_string_unsets_scalar_fields(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"name": "N", "email": "e@x.test", "phone": "+1555", "description": "d", "tax_exempt": "exempt"})
    updated = client.v1.customers.update(cus.id, params={"name": "", "email": "", "phone": "", "description": "", "tax_exempt": ""})
    body = updated.to_dict()
    assert [body[k] for k in ("name", "email", "phone", "description")] == [None] * 4
    assert body["tax_exempt"] == "none"


def test_update_leaves_fields_not_sent_alone(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"name": "N", "email": "e@x.test", "address": {"line1": "1"}})
    updated = client.v1.customers.update(cus.id, params={"phone": "+1"})
    assert updated.name == "N" and updated.email == "e@x.test" and updated.address.line1 == "1"


def test_address_hash_replaces_the_whole_address(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"address": {"line1": "1", "city": "Old"}})
    updated = client.v1.customers.update(cus.id, params={"address": {"line1": "2"}})
    assert updated.address.line1 == "2" and updated.address.city is None


def test_metadata_value_is_stored_as_given(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"metadata": {"k": "  spaced  "}, "name": " Name "})
    assert cus.metadata["k"] == "  spaced  " and cus.name == " Name "


def test_list_pages_newest_first_with_cursors(client: stripe.StripeClient) -> None:
    ids = [client.v1.customers.create(params={"name": f"c{i}"}).id for i in range(7)]
    newest_first = list(reversed(ids))
    page1 = client.v1.customers.list(params={"limit": 3})
    assert [c.id for c in page1.data] == newest_first[:3] and page1.has_more is True
    assert page1.url == "/v1/customers" and page1.object == "list"
    page2 = client.v1.customers.list(params={"limit": 3, "starting_after": page1.data[-1].id})
    assert [c.id for c in page2.data] == newest_first[3:6] and page2.has_more is True
    page3 = client.v1.customers.list(params={"limit": 3, "starting_after": page2.data[-1].id})
    assert [c.id for c in page3.data] == newest_first[6:] and page3.has_more is False
    back = client.v1.customers.list(params={"limit": 2, "ending_before": page2.data[0].id})
    assert [c.id for c in back.data] == newest_first[1:3] and back.has_more is True
    assert [c.id for c in client.v1.customers.list(params={"limit": 100}).auto_paging_iter()] == newest_first


def test_list_default_limit_is_ten(client: stripe.StripeClient) -> None:
    for i in range(12):
        client.v1.customers.create(params={"name": f"c{i}"})
    page = client.v1.customers.list()
    assert len(page.data) == 10 and page.has_more is True


def test_list_filters_by_email_case_sensitively(client: stripe.StripeClient) -> None:
    a = client.v1.customers.create(params={"email": "ops@acme.test"})
    client.v1.customers.create(params={"email": "OPS@acme.test"})
    client.v1.customers.create(params={"email": "other@acme.test"})
    found = client.v1.customers.list(params={"email": "ops@acme.test"})
    assert [c.id for c in found.data] == [a.id]


def test_list_filters_by_created_range(client: stripe.StripeClient, sandbox: StripeSandbox) -> None:
    sandbox.load({"customers": [{"id": "cus_old0000000000", "created": 1_000}, {"id": "cus_new0000000000", "created": 2_000}]})
    found = client.v1.customers.list(params={"created": {"gt": 1_500}})
    assert [c.id for c in found.data] == ["cus_new0000000000"]
    exact = client.v1.customers.list(params={"created": 1_000})
    assert [c.id for c in exact.data] == ["cus_old0000000000"]


def test_search_finds_by_metadata(client: stripe.StripeClient) -> None:
    a = client.v1.customers.create(params={"metadata": {"sf_account_id": "001A"}})
    client.v1.customers.create(params={"metadata": {"sf_account_id": "001B"}})
    result = client.v1.customers.search(params={"query": "metadata['sf_account_id']:'001A'"})
    assert result.object == "search_result" and result.url == "/v1/customers/search"
    assert [c.id for c in result.data] == [a.id] and result.has_more is False and result.next_page is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("email:'ann@acme.test'", {"ann"}),
        ('email:"ANN@acme.test"', {"ann"}),
        ("name:'Bob Builder'", {"bob"}),
        ("name~'build'", {"bob"}),
        ("email:'ann@acme.test' OR name:'Bob Builder'", {"ann", "bob"}),
        ("metadata['team']:'red' AND name:'Ann'", {"ann"}),
        ("metadata['team']:'red' name:'Ann'", {"ann"}),
        ("metadata['team']:'red'", {"ann", "bob"}),
        ("-metadata['team']:'red'", {"cid"}),
        ("metadata['team']:null", {"cid"}),
        ("phone:'+15550100'", {"cid"}),
    ],
)
def test_search_query_language(client: stripe.StripeClient, query: str, expected: set[str]) -> None:
    ids = {
        "ann": client.v1.customers.create(params={"name": "Ann", "email": "ann@acme.test", "metadata": {"team": "red"}}).id,
        "bob": client.v1.customers.create(params={"name": "Bob Builder", "email": "bob@acme.test", "metadata": {"team": "red"}}).id,
        "cid": client.v1.customers.create(params={"name": "Cid", "phone": "+15550100"}).id,
    }
    result = client.v1.customers.search(params={"query": query})
    assert {c.id for c in result.data} == {ids[k] for k in expected}


def test_search_pages_with_next_page(client: stripe.StripeClient) -> None:
    ids = {client.v1.customers.create(params={"metadata": {"batch": "1"}}).id for _ in range(5)}
    first = client.v1.customers.search(params={"query": "metadata['batch']:'1'", "limit": 2})
    assert len(first.data) == 2 and first.has_more is True and first.next_page
    second = client.v1.customers.search(params={"query": "metadata['batch']:'1'", "limit": 2, "page": first.next_page})
    assert len(second.data) == 2 and second.has_more is True
    seen = {c.id for c in client.v1.customers.search(params={"query": "metadata['batch']:'1'", "limit": 2}).auto_paging_iter()}
    assert seen == ids
    total = client.v1.customers.search(params={"query": "metadata['batch']:'1'", "expand": ["total_count"]})
    assert total.total_count == 5


class _HandClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hand_clock(sandbox: StripeSandbox) -> Iterator[_HandClock]:
    clock = _HandClock()
    sandbox.clock = clock
    yield clock
    sandbox.clock = time.monotonic


def test_search_lags_behind_writes_when_configured(
    sandbox: StripeSandbox, client: stripe.StripeClient, hand_clock: _HandClock
) -> None:
    sandbox.search_delay = 60.0  # Stripe: "usually about a minute"
    cus = client.v1.customers.create(params={"email": "late@acme.test"})
    assert client.v1.customers.search(params={"query": "email:'late@acme.test'"}).data == []
    assert client.v1.customers.retrieve(cus.id).email == "late@acme.test"  # retrieve is not lagging
    hand_clock.now += 59.0
    assert client.v1.customers.search(params={"query": "email:'late@acme.test'"}).data == []
    hand_clock.now += 1.0
    assert [c.id for c in client.v1.customers.search(params={"query": "email:'late@acme.test'"}).data] == [cus.id]


def test_search_shows_the_old_values_until_the_index_catches_up(
    sandbox: StripeSandbox, client: stripe.StripeClient, hand_clock: _HandClock
) -> None:
    cus = client.v1.customers.create(params={"email": "old@acme.test"})
    sandbox.search_delay = 60.0
    client.v1.customers.update(cus.id, params={"email": "new@acme.test"})
    assert [c.email for c in client.v1.customers.search(params={"query": "email:'old@acme.test'"}).data] == ["old@acme.test"]
    hand_clock.now += 60.0
    assert client.v1.customers.search(params={"query": "email:'old@acme.test'"}).data == []
    assert [c.id for c in client.v1.customers.search(params={"query": "email:'new@acme.test'"}).data] == [cus.id]


def test_deleted_customer_retrieves_as_a_stub(client: stripe.StripeClient, sandbox: StripeSandbox) -> None:
    cus = client.v1.customers.create(params={"name": "Gone"})
    deleted = client.v1.customers.delete(cus.id)
    assert deleted.to_dict() == {"id": cus.id, "object": "customer", "deleted": True}
    assert client.v1.customers.retrieve(cus.id).to_dict() == {"id": cus.id, "object": "customer", "deleted": True}
    assert sandbox.stats()["deletes"] == 1


def test_deleted_customer_cannot_be_updated(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"name": "Gone"})
    client.v1.customers.delete(cus.id)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.update(cus.id, params={"name": "Back"})
    assert err.value.http_status == 404 and err.value.code == "resource_missing" and err.value.param == "id"


def test_deleted_customers_leave_list_and_search(client: stripe.StripeClient) -> None:
    keep = client.v1.customers.create(params={"email": "k@acme.test"})
    gone = client.v1.customers.create(params={"email": "k@acme.test"})
    client.v1.customers.delete(gone.id)
    assert [c.id for c in client.v1.customers.list().data] == [keep.id]
    assert [c.id for c in client.v1.customers.search(params={"query": "email:'k@acme.test'"}).data] == [keep.id]


def test_write_count_counts_successful_creates_and_updates_only(client: stripe.StripeClient, sandbox: StripeSandbox) -> None:
    cus = client.v1.customers.create(params={"name": "A"})
    client.v1.customers.update(cus.id, params={"name": "B"})
    client.v1.customers.retrieve(cus.id)
    client.v1.customers.list()
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.create(params={"name": "x" * 300})
    assert sandbox.write_count == 2
    assert sandbox.stats()["operations"]["create"] == 2
