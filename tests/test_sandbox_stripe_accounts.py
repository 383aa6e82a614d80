"""Several Stripe accounts in one sandbox: account keys, organization keys, Connect, sharing groups.

Every request goes through the real stripe-python `StripeClient` (or, where the client cannot
send what is tested, a raw HTTP request); every answer is checked against Stripe's published
description of the customer API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe

from connector.billing import stripe_schema
from connector.sandbox.stripe import StripeSandbox
from connector.sandbox.stripe_accounts import DEFAULT_ACCOUNT, MISSING_CONTEXT_MESSAGE

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "stripe-openapi" / "customers.openapi.json"
VENDORED = REPO / "connector" / "billing" / "specs" / "stripe_customers.openapi.json"

EU, UK, US = "acct_1GlobexEurope000", "acct_1GlobexUK000000", "acct_1GlobexUS000000"
PLATFORM, CHILD = "acct_1Platform000000", "acct_1Connected00000"
EU_KEY, EU_RESTRICTED, UK_KEY, US_KEY = "sk_test_eu_0001", "rk_test_eu_0002", "sk_test_uk_0003", "sk_test_us_0004"
PLATFORM_KEY = "sk_test_platform_0005"
ORG_KEY = "sk_org_test_globex_0006"
ENDIVE = "2026-09-30.endive"
OLD = "2020-08-27"

DATA: dict[str, Any] = {
    "accounts": [
        {"id": EU, "keys": [EU_KEY, EU_RESTRICTED]},
        {"id": UK, "keys": [UK_KEY]},
        {"id": US, "keys": [US_KEY]},
        {"id": PLATFORM, "keys": [PLATFORM_KEY], "connected": [CHILD]},
    ],
    "organizations": [{"id": "org_1Globex", "keys": [ORG_KEY], "accounts": [EU, UK, US]}],
    "sharing_groups": [[EU, UK]],
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    path = SHARED if SHARED.exists() else VENDORED
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.fixture
def sandbox() -> Iterator[StripeSandbox]:
    with StripeSandbox(data=DATA) as sb:
        yield sb


def client(sandbox: StripeSandbox, key: str, **options: Any) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": sandbox.url}, max_network_retries=0, **options)


def valid(document: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    problems = stripe_schema.response_problems(path, method, status, body, document)
    assert problems == [], problems


def error_of(exc: stripe.StripeError) -> dict[str, Any]:
    assert exc.json_body is not None
    body: dict[str, Any] = exc.json_body
    return body


# --- account keys -------------------------------------------------------------------------------


def test_each_account_key_reaches_its_own_account_only(sandbox: StripeSandbox, document: dict[str, Any]) -> None:
    eu = client(sandbox, EU_KEY).v1.customers.create(params={"name": "EU customer"})
    us = client(sandbox, US_KEY).v1.customers.create(params={"name": "US customer"})
    valid(document, "/v1/customers", "post", 200, eu.to_dict())
    assert [c.id for c in client(sandbox, EU_RESTRICTED).v1.customers.list().data] == [eu.id]  # restricted key, same account
    assert [c.id for c in client(sandbox, US_KEY).v1.customers.list().data] == [us.id]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client(sandbox, US_KEY).v1.customers.retrieve(eu.id)
    assert err.value.http_status == 404 and error_of(err.value)["error"]["code"] == "resource_missing"
    valid(document, "/v1/customers/{customer}", "get", 404, error_of(err.value))
    assert [c["id"] for c in sandbox.customers(account=EU)] == [eu.id]
    assert sandbox.customers() == []  # the default account holds neither
    assert sandbox.stats()["customers_by_account"] == {EU: 1, US: 1}


def test_the_default_account_still_takes_any_test_key(sandbox: StripeSandbox) -> None:
    """The single-account sandbox (SANDBOX_STRIPE_KEY and any other test key) keeps working beside the others."""
    from connector.sandbox.run import SANDBOX_STRIPE_KEY

    made = client(sandbox, SANDBOX_STRIPE_KEY).v1.customers.create(params={"name": "Default"})
    assert [c["id"] for c in sandbox.customers()] == [made.id]
    assert client(sandbox, "sk_test_whatever").v1.customers.retrieve(made.id).name == "Default"
    assert sandbox.customers(account=EU) == []


def test_the_same_idempotency_key_in_two_accounts_makes_two_customers(sandbox: StripeSandbox) -> None:
    """Stripe keeps idempotency keys per account."""
    a = client(sandbox, US_KEY).v1.customers.create(params={"name": "A"}, options={"idempotency_key": "same"})
    b = client(sandbox, EU_KEY).v1.customers.create(params={"name": "A"}, options={"idempotency_key": "same"})
    assert a.id != b.id
    again = client(sandbox, US_KEY).v1.customers.create(params={"name": "A"}, options={"idempotency_key": "same"})
    assert again.id == a.id


# --- organization keys --------------------------------------------------------------------------


def test_organization_key_acts_on_the_account_named_in_stripe_context(sandbox: StripeSandbox) -> None:
    made = client(sandbox, ORG_KEY, stripe_context=US).v1.customers.create(params={"name": "Via org key"})
    assert [c["id"] for c in sandbox.customers(account=US)] == [made.id]
    assert client(sandbox, US_KEY).v1.customers.retrieve(made.id).name == "Via org key"
    assert sandbox.exchanges[-1]["status"] == 200 and sandbox.exchanges[-1]["account"] == US


def test_organization_key_without_stripe_context_is_refused(sandbox: StripeSandbox, document: dict[str, Any]) -> None:
    with pytest.raises(stripe.PermissionError) as err:
        client(sandbox, ORG_KEY).v1.customers.create(params={"name": "Nowhere"})
    body = error_of(err.value)
    assert err.value.http_status == 403
    assert body["error"]["message"] == MISSING_CONTEXT_MESSAGE
    assert body["error"]["type"] == "invalid_request_error"
    valid(document, "/v1/customers", "post", 403, body)
    assert sandbox.stats()["customers"] == 0


def test_organization_key_passed_as_stripe_account_is_refused(sandbox: StripeSandbox) -> None:
    """What the connector did before issue 13: Stripe-Account does not stand in for Stripe-Context."""
    with pytest.raises(stripe.PermissionError):
        client(sandbox, ORG_KEY, stripe_account=US).v1.customers.list()


def test_organization_key_without_stripe_version_is_refused(sandbox: StripeSandbox, document: dict[str, Any]) -> None:
    # stripe-python always pins a version, so the request is sent by hand.
    headers = {"Authorization": f"Bearer {ORG_KEY}", "Stripe-Context": US}
    resp = requests.post(f"{sandbox.url}/v1/customers", data={"name": "x"}, headers=headers, timeout=5)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and "Stripe-Version" in error["message"]
    valid(document, "/v1/customers", "post", 400, resp.json())
    pinned = requests.post(
        f"{sandbox.url}/v1/customers", data={"name": "x"}, headers={**headers, "Stripe-Version": ENDIVE}, timeout=5
    )
    assert pinned.status_code == 200
    assert [c["id"] for c in sandbox.customers(account=US)] == [pinned.json()["id"]]


def test_organization_key_cannot_reach_an_account_outside_its_organization(
    sandbox: StripeSandbox, document: dict[str, Any]
) -> None:
    with pytest.raises(stripe.PermissionError) as err:
        client(sandbox, ORG_KEY, stripe_context=PLATFORM).v1.customers.list()
    body = error_of(err.value)
    assert body["error"]["code"] == "account_invalid"
    assert ORG_KEY not in body["error"]["message"] and PLATFORM in body["error"]["message"]
    valid(document, "/v1/customers", "get", 403, body)


def test_unknown_organization_key_is_an_invalid_key(sandbox: StripeSandbox) -> None:
    with pytest.raises(stripe.AuthenticationError):
        client(sandbox, "sk_org_test_unknown_0000", stripe_context=US).v1.customers.list()


# --- Connect --------------------------------------------------------------------------------------


def test_platform_key_with_stripe_account_acts_on_its_connected_account(sandbox: StripeSandbox) -> None:
    made = client(sandbox, PLATFORM_KEY, stripe_account=CHILD).v1.customers.create(params={"name": "Child's"})
    assert [c["id"] for c in sandbox.customers(account=CHILD)] == [made.id]
    assert sandbox.customers(account=PLATFORM) == []
    assert client(sandbox, PLATFORM_KEY, stripe_context=CHILD).v1.customers.retrieve(made.id).name == "Child's"


def test_stripe_account_naming_an_unconnected_account_is_refused(sandbox: StripeSandbox, document: dict[str, Any]) -> None:
    with pytest.raises(stripe.PermissionError) as err:
        client(sandbox, EU_KEY, stripe_account=US).v1.customers.list()
    body = error_of(err.value)
    assert err.value.http_status == 403 and body["error"]["code"] == "account_invalid"
    valid(document, "/v1/customers", "get", 403, body)


# --- sharing groups -----------------------------------------------------------------------------


def test_customer_made_in_one_account_of_a_group_is_used_from_the_other_by_the_same_id(
    sandbox: StripeSandbox, document: dict[str, Any]
) -> None:
    eu = client(sandbox, EU_KEY)
    uk = client(sandbox, ORG_KEY, stripe_context=UK)
    made = eu.v1.customers.create(params={"name": "Shared", "metadata": {"salesforce_account_id": "001A"}})
    seen = uk.v1.customers.retrieve(made.id)
    valid(document, "/v1/customers/{customer}", "get", 200, seen.to_dict())
    assert seen.id == made.id and seen.name == "Shared"
    assert seen.metadata.to_dict() == {"salesforce_account_id": "001A"}  # shared from endive on
    updated = uk.v1.customers.update(made.id, params={"description": "From the UK", "metadata": {"region": "uk"}})
    valid(document, "/v1/customers/{customer}", "post", 200, updated.to_dict())
    back = eu.v1.customers.retrieve(made.id)
    assert back.description == "From the UK"
    assert back.metadata.to_dict() == {"salesforce_account_id": "001A", "region": "uk"}
    assert [c.id for c in uk.v1.customers.list().data] == [made.id]
    found = uk.v1.customers.search(params={"query": "metadata['salesforce_account_id']:'001A'"})
    assert [c.id for c in found.data] == [made.id]
    assert sandbox.stats()["customers"] == 1  # one customer, not a copy per account


def test_shared_customer_is_missing_from_accounts_outside_the_group(sandbox: StripeSandbox, document: dict[str, Any]) -> None:
    made = client(sandbox, EU_KEY).v1.customers.create(params={"name": "Shared"})
    us = client(sandbox, ORG_KEY, stripe_context=US)
    for call in (lambda: us.v1.customers.retrieve(made.id), lambda: us.v1.customers.update(made.id, params={"name": "x"})):
        with pytest.raises(stripe.InvalidRequestError) as err:
            call()
        assert err.value.http_status == 404 and error_of(err.value)["error"]["code"] == "resource_missing"
    valid(document, "/v1/customers/{customer}", "post", 404, error_of(err.value))
    assert us.v1.customers.list().data == []
    assert client(sandbox, EU_KEY).v1.customers.retrieve(made.id).name == "Shared"


def test_fields_outside_the_shared_set_stay_per_account(sandbox: StripeSandbox) -> None:
    eu = client(sandbox, EU_KEY)
    uk = client(sandbox, UK_KEY)
    made = eu.v1.customers.create(params={"name": "Shared", "balance": 500, "invoice_settings": {"footer": "EU footer"}})
    seen = uk.v1.customers.retrieve(made.id)
    assert seen.balance == 0 and seen.invoice_settings.footer is None  # the UK account's own values
    uk.v1.customers.update(made.id, params={"invoice_settings": {"footer": "UK footer"}, "name": "Renamed"})
    eu_view = eu.v1.customers.retrieve(made.id)
    assert eu_view.invoice_settings.footer == "EU footer" and eu_view.balance == 500
    assert eu_view.name == "Renamed"  # a shared field
    assert uk.v1.customers.retrieve(made.id).invoice_settings.footer == "UK footer"


def test_the_requested_version_decides_which_fields_are_shared(sandbox: StripeSandbox) -> None:
    made = client(sandbox, EU_KEY, stripe_version=ENDIVE).v1.customers.create(params={"name": "Versions"})
    old_uk = client(sandbox, UK_KEY, stripe_version=OLD)
    old_uk.v1.customers.update(made.id, params={"metadata": {"only": "uk"}, "description": "UK only"})
    # Before 2026-09-30.endive metadata and description are per account ...
    eu_endive = client(sandbox, EU_KEY, stripe_version=ENDIVE).v1.customers.retrieve(made.id)
    assert eu_endive.metadata.to_dict() == {} and eu_endive.description is None
    assert old_uk.v1.customers.retrieve(made.id).metadata.to_dict() == {"only": "uk"}
    # ... from it on, a write lands in every account of the group.
    client(sandbox, UK_KEY, stripe_version=ENDIVE).v1.customers.update(made.id, params={"description": "Everyone"})
    assert client(sandbox, EU_KEY, stripe_version=ENDIVE).v1.customers.retrieve(made.id).description == "Everyone"
    # The contact fields are shared at every version.
    old_uk.v1.customers.update(made.id, params={"email": "ap@globex.example"})
    assert client(sandbox, EU_KEY, stripe_version=OLD).v1.customers.retrieve(made.id).email == "ap@globex.example"


def test_a_group_formed_after_customers_exist_shares_them(sandbox: StripeSandbox) -> None:
    us = client(sandbox, US_KEY).v1.customers.create(params={"name": "Made before the group"})
    eu = client(sandbox, EU_KEY)
    with pytest.raises(stripe.InvalidRequestError):
        eu.v1.customers.retrieve(us.id)
    # US joins no group yet; a new account and the US one form one through the control API.
    ok = requests.post(f"{sandbox.url}/_sandbox/accounts", json={"id": "acct_1GlobexJapan00000", "keys": ["sk_test_jp_0007"]}, timeout=5)
    assert ok.json() == {"ok": True}
    ok = requests.post(f"{sandbox.url}/_sandbox/sharing_groups", json={"accounts": [US, "acct_1GlobexJapan00000"]}, timeout=5)
    assert ok.json() == {"ok": True}
    assert client(sandbox, "sk_test_jp_0007").v1.customers.retrieve(us.id).name == "Made before the group"
    with pytest.raises(stripe.InvalidRequestError):
        eu.v1.customers.retrieve(us.id)  # EU is in another group


# --- configuration ------------------------------------------------------------------------------


def test_an_account_belongs_to_one_sharing_group_only(sandbox: StripeSandbox) -> None:
    resp = requests.post(f"{sandbox.url}/_sandbox/sharing_groups", json={"accounts": [EU, US]}, timeout=5)
    assert resp.status_code == 400
    assert f"account {EU} already belongs to a sharing group" in resp.json()["error"]
    assert requests.get(f"{sandbox.url}/_sandbox/accounts", timeout=5).json()["sharing_groups"] == [sorted([EU, UK])]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"accounts": [{"id": "acct_1Ok0000000000", "keys": ["sk_test_ok_1"]}, {"id": "bad id"}]}, "accounts[1]"),
        ({"accounts": [{"id": "acct_1Ok0000000000", "keys": ["pk_test_publishable"]}]}, "account key starts with"),
        ({"accounts": [{"id": "acct_1Ok0000000000", "keys": [EU_KEY]}]}, "already belongs"),
        ({"organizations": [{"id": "org_1X", "keys": ["sk_test_not_org"], "accounts": [EU]}]}, "organization key starts with"),
        ({"organizations": [{"id": "org_1X", "keys": ["sk_org_x_1"], "accounts": ["acct_1Missing00000"]}]}, "unknown account"),
        ({"sharing_groups": [[EU]]}, "at least two"),
        ({"accounts": [{"id": "acct_1Ok0000000000", "rate_limits": {"global": -1}}]}, "rate_limits.global"),
        ({"accounts": [{"id": "acct_1Ok0000000000", "customers": [{"nickname": "x"}]}]}, "accounts[0].customers[0]"),
        ({"acounts": []}, "unknown section"),
    ],
)
def test_bad_configuration_is_refused_naming_the_entry_and_changes_nothing(
    sandbox: StripeSandbox, data: dict[str, Any], message: str
) -> None:
    before = requests.get(f"{sandbox.url}/_sandbox/accounts", timeout=5).json()
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sandbox.load(data)
    assert requests.get(f"{sandbox.url}/_sandbox/accounts", timeout=5).json() == before
    assert sandbox.customers(account=EU) == [] and sandbox.stats()["customers"] == 0


def test_customers_load_into_the_account_that_lists_them() -> None:
    data = {
        "accounts": [{"id": EU, "keys": [EU_KEY], "customers": [{"id": "cus_Eu000000000001", "name": "Loaded EU"}]}],
        "customers": [{"id": "cus_Default0000001", "name": "Loaded default"}],
    }
    with StripeSandbox(data=data) as sb:
        assert [c["id"] for c in sb.customers(account=EU)] == ["cus_Eu000000000001"]
        assert [c["id"] for c in sb.customers(account=DEFAULT_ACCOUNT)] == ["cus_Default0000001"]
        assert client(sb, EU_KEY).v1.customers.retrieve("cus_Eu000000000001").name == "Loaded EU"
