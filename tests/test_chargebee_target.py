"""The Chargebee target, through the real chargebee SDK against the Chargebee sandbox: creates
that cannot duplicate, updates split the way Chargebee needs, partial failures that say what was
applied, batched reads, business entities with and without sharing, and the port's typed errors."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.billing.base import (
    BillingUnreachable,
    CustomerMissing,
    InvalidRequest,
    RateLimited,
    idempotency_key,
)
from connector.billing.chargebee import (
    ChargebeeSettings,
    ChargebeeTarget,
    PartiallyApplied,
    PartiallyRefused,
    customer_id_for,
)
from connector.billing.ratelimit import HEADROOM
from connector.config import SecretSource
from connector.errors import AuthenticationError, ConfigError, RecordError, TransientError
from connector.sandbox.chargebee import ChargebeeSandbox
from connector.sandbox.run import SANDBOX_CHARGEBEE_KEY

ORG = "00D000000000001AAA"
ACC = "001000000000A01AAA"
SECRETS = SecretSource({"CHARGEBEE_API_KEY": SANDBOX_CHARGEBEE_KEY})


@pytest.fixture(scope="module")
def server() -> Iterator[ChargebeeSandbox]:
    with ChargebeeSandbox() as sb:
        yield sb


@pytest.fixture
def sandbox(server: ChargebeeSandbox) -> Iterator[ChargebeeSandbox]:
    server.reset()
    server.configure_entities(["eu", "us"])
    yield server
    server.clear_faults()
    server.set_rate_limit(None)


class Sleeps(list[float]):
    """Records the pauses the target asks for instead of taking them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_target(sandbox: ChargebeeSandbox, sleeps: Sleeps) -> Callable[..., ChargebeeTarget]:
    def make(**settings: Any) -> ChargebeeTarget:
        values: dict[str, Any] = {
            "name": "cb",
            "site": "acme-test",
            "api_base": sandbox.url,
            "requests_per_minute": 6000,
            **settings,
        }
        return ChargebeeTarget(ChargebeeSettings(**values), SECRETS, sleep=sleeps)

    return make


@pytest.fixture
def target(make_target: Callable[..., ChargebeeTarget]) -> ChargebeeTarget:
    return make_target(business_entity_id="eu")


def payload(account: str = ACC, **fields: Any) -> dict[str, Any]:
    return {
        "company": "Acme Ltd",
        "email": "ada@acme.test",
        "first_name": "Ada",
        "last_name": "Byron",
        "phone": "+44 20 7946 0000",
        "billing_address": {
            "line1": "1 Main St",
            "city": "London",
            "zip": "N1 9GU",
            "country": "GB",
        },
        "meta_data": {"salesforce_account_id": account, "salesforce_org_id": ORG, "tier": " gold "},
        **fields,
    }


def key(*parts: str) -> str:
    return idempotency_key("test", *parts)


# --- rules and ids ---------------------------------------------------------------------------


def test_rules_state_chargebees_limits_and_capabilities(target: ChargebeeTarget) -> None:
    r = target.rules
    assert (r.system, r.tag_field, r.tag_key_max, r.idempotency_key_max) == (
        "chargebee",
        "meta_data",
        100,
        100,
    )
    assert r.client_chosen_ids is True and r.search is False
    assert r.separate_calls == frozenset({"billing_address"})
    assert r.idempotency_window == timedelta(hours=24)


@given(
    org=st.from_regex(r"00D[A-Za-z0-9]{15}", fullmatch=True),
    acc=st.from_regex(r"001[A-Za-z0-9]{15}", fullmatch=True),
    entity=st.one_of(st.none(), st.from_regex(r"[a-z0-9\-]{1,50}", fullmatch=True)),
)
def test_customer_id_is_deterministic_short_and_names_the_account(
    org: str, acc: str, entity: str | None
) -> None:
    cid = customer_id_for(org, acc, entity)
    assert cid == customer_id_for(org, acc, entity) and len(cid) <= 50
    assert acc in cid
    assert cid != customer_id_for(org + "x", acc, entity)
    assert cid != customer_id_for(org, acc, (entity or "") + "-other")


def test_default_pacing_is_150_a_minute_for_test_sites(
    sandbox: ChargebeeSandbox, sleeps: Sleeps
) -> None:
    now = [0.0]
    t = ChargebeeTarget(
        ChargebeeSettings(name="cb", site="acme-test", api_base=sandbox.url),
        SECRETS,
        clock=lambda: now[0],
        sleep=sleeps,
    )
    for i in range(3):
        t.fetch_customers([f"nobody-{i}"])  # one request each
    # 60 s / 150 between requests, paced at HEADROOM of that; the clock stood still.
    assert sleeps == pytest.approx([0.4 / HEADROOM, 0.8 / HEADROOM])


def test_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(ConfigError, match="site"):
        ChargebeeSettings(name="cb", site="acme-test.chargebee.com")
    with pytest.raises(ConfigError, match="loopback"):
        ChargebeeSettings(name="cb", site="x", api_base="http://10.0.0.1:8080")
    with pytest.raises(ConfigError, match="CHARGEBEE_API_KEY"):
        ChargebeeTarget(ChargebeeSettings(name="cb", site="x"), SecretSource({}))


# --- create ----------------------------------------------------------------------------------


def test_create_makes_one_customer_with_the_derived_id_in_one_call(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    cid = target.create_customer(payload(), idempotency_key=key("c1"))
    assert cid == customer_id_for(ORG, ACC, "eu") and target.calls == 1
    got = sandbox.get_customer(cid)
    assert got is not None
    assert (got["company"], got["email"], got["business_entity_id"]) == (
        "Acme Ltd",
        "ada@acme.test",
        "eu",
    )
    assert got["meta_data"] == {
        "salesforce_account_id": ACC,
        "salesforce_org_id": ORG,
        "tier": "gold",
    }
    assert got["billing_address"]["city"] == "London"
    sent = sandbox.exchanges[-1]
    assert sent["headers"]["chargebee-idempotency-key"] == key("c1")
    assert sent["headers"]["chargebee-business-entity-id"] == "eu"
    assert (
        "meta_data",
        '{"salesforce_account_id": "001000000000A01AAA", "salesforce_org_id": "00D000000000001AAA", "tier": "gold"}',
    ) in sent["form"]


def test_create_repeated_with_its_key_is_replayed(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    a = target.create_customer(payload(), idempotency_key=key("c1"))
    b = target.create_customer(payload(), idempotency_key=key("c1"))
    assert a == b and len(sandbox.customers()) == 1 and sandbox.operations["replay"] == 1


def test_create_whose_answer_was_lost_is_recovered_without_a_duplicate(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    sandbox.inject_fault(drop="after", method="POST")
    with pytest.raises(TransientError):
        target.create_customer(payload(), idempotency_key=key("c1"))
    sandbox.expire_idempotency_keys()  # a retry after Chargebee forgot the key: a new create
    cid = target.create_customer(payload(), idempotency_key=key("c2"))
    assert [c["id"] for c in sandbox.customers()] == [cid]


def test_create_adopts_its_own_customer_and_brings_it_up_to_date(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    cid = customer_id_for(ORG, ACC, "eu")
    sandbox.load(
        {
            "customers": [
                {
                    "id": cid,
                    "company": "Old name",
                    "business_entity_id": "eu",
                    "meta_data": {"salesforce_account_id": ACC, "salesforce_org_id": ORG},
                }
            ]
        }
    )
    assert target.create_customer(payload(), idempotency_key=key("c1")) == cid
    got = sandbox.get_customer(cid)
    assert (
        got is not None
        and got["company"] == "Acme Ltd"
        and got["billing_address"]["city"] == "London"
    )
    assert got["meta_data"]["tier"] == "gold" and len(sandbox.customers()) == 1


def test_create_refuses_an_id_taken_by_a_customer_of_another_account(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    cid = customer_id_for(ORG, ACC, "eu")
    sandbox.load(
        {
            "customers": [
                {
                    "id": cid,
                    "company": "Someone else",
                    "business_entity_id": "eu",
                    "meta_data": {"salesforce_account_id": "001000000000ZZZAAA"},
                }
            ]
        }
    )
    with pytest.raises(InvalidRequest) as err:
        target.create_customer(payload(), idempotency_key=key("c1"))
    assert (
        err.value.code == "customer_id_taken"
        and cid in str(err.value)
        and "001000000000ZZZAAA" in str(err.value)
    )
    assert sandbox.get_customer(cid)["company"] == "Someone else"  # type: ignore[index]
    assert sandbox.write_count == 0


def test_create_refuses_an_id_taken_by_a_customer_made_by_hand(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    cid = customer_id_for(ORG, ACC, "eu")
    sandbox.load({"customers": [{"id": cid, "company": "By hand", "business_entity_id": "eu"}]})
    with pytest.raises(InvalidRequest, match="not made by the connector"):
        target.create_customer(payload(), idempotency_key=key("c1"))


def test_create_refuses_a_key_longer_than_chargebee_takes(target: ChargebeeTarget) -> None:
    with pytest.raises(ValueError, match="100"):
        target.create_customer(payload(), idempotency_key="k" * 101)
    assert target.calls == 0


# --- update ----------------------------------------------------------------------------------


def test_fields_and_meta_data_change_with_one_customer_update(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    cid = target.create_customer(payload(), idempotency_key=key("c1"))
    sandbox.edit_customer(
        cid, {"meta_data": {**sandbox.get_customer(cid)["meta_data"], "set_in_chargebee": "yes"}}
    )  # type: ignore[index]
    sandbox.requests.clear()
    target.update_customer(
        cid,
        {"company": "Acme Group", "phone": "", "meta_data": {"tier": "", "region": "EMEA"}},
        idempotency_key=key("u1"),
    )
    got = sandbox.get_customer(cid)
    assert got is not None and got["company"] == "Acme Group" and "phone" not in got
    assert got["meta_data"] == {
        "salesforce_account_id": ACC,
        "salesforce_org_id": ORG,
        "set_in_chargebee": "yes",
        "region": "EMEA",
    }
    assert sorted(sandbox.requests) == [
        f"GET /api/v2/customers/{cid}",
        f"POST /api/v2/customers/{cid}",
    ]


def test_fields_without_meta_data_need_no_read(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    cid = target.create_customer(payload(), idempotency_key=key("c1"))
    calls = target.calls
    target.update_customer(cid, {"email": "billing@acme.test"}, idempotency_key=key("u1"))
    assert target.calls == calls + 1 and sandbox.get_customer(cid)["email"] == "billing@acme.test"  # type: ignore[index]


def test_billing_address_changes_only_through_update_billing_info(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    cid = target.create_customer(payload(), idempotency_key=key("c1"))
    sandbox.edit_customer(cid, {"billing_address": {"state_code": "LND"}})
    sandbox.requests.clear()
    target.update_customer(
        cid, {"billing_address": {"city": "Leeds", "zip": ""}}, idempotency_key=key("u1")
    )
    address = sandbox.get_customer(cid)["billing_address"]  # type: ignore[index]
    assert (address["city"], address["line1"], address["state_code"]) == (
        "Leeds",
        "1 Main St",
        "LND",
    )
    assert "zip" not in address
    assert f"POST /api/v2/customers/{cid}/update_billing_info" in sandbox.requests
    assert f"POST /api/v2/customers/{cid}" not in sandbox.requests


def test_a_change_of_both_kinds_makes_two_calls_with_their_own_keys(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    cid = target.create_customer(payload(), idempotency_key=key("c1"))
    target.update_customer(
        cid,
        {"company": "Acme Group", "billing_address": {"city": "Leeds"}},
        idempotency_key=key("u1"),
    )
    writes = [e for e in sandbox.exchanges if e["method"] == "POST"][1:]
    assert [e["path"].rsplit("/", 1)[-1] for e in writes] == [cid, "update_billing_info"]
    keys = [e["headers"]["chargebee-idempotency-key"] for e in writes]
    assert keys[0] == key("u1") and keys[1] != keys[0] and len(keys[1]) <= 100
    got = sandbox.get_customer(cid)
    assert (
        got is not None
        and got["company"] == "Acme Group"
        and got["billing_address"]["city"] == "Leeds"
    )


def test_second_call_failing_reports_what_the_first_applied(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    cid = target.create_customer(payload(), idempotency_key=key("c1"))
    sandbox.inject_fault(status=500, path="update_billing_info")
    change = {"company": "Acme Group", "billing_address": {"city": "Leeds"}}
    with pytest.raises(PartiallyApplied) as err:
        target.update_customer(cid, change, idempotency_key=key("u1"))
    assert (err.value.customer_id, err.value.applied) == (cid, {"company": "Acme Group"})
    assert err.value.pending == {"billing_address": {"city": "Leeds"}}
    assert isinstance(err.value, TransientError) and isinstance(err.value.cause, TransientError)
    got = sandbox.get_customer(cid)
    assert (
        got is not None
        and got["company"] == "Acme Group"
        and got["billing_address"]["city"] == "London"
    )
    # the next run sends the rest
    target.update_customer(cid, err.value.pending, idempotency_key=key("u2"))
    assert sandbox.get_customer(cid)["billing_address"]["city"] == "Leeds"  # type: ignore[index]


def test_second_call_refused_reports_what_the_first_applied_and_why(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    cid = target.create_customer(payload(), idempotency_key=key("c1"))
    with pytest.raises(PartiallyRefused) as err:
        target.update_customer(
            cid,
            {"company": "Acme Group", "billing_address": {"country": "Germany"}},
            idempotency_key=key("u1"),
        )
    assert isinstance(err.value, RecordError) and err.value.param == "billing_address[country]"
    assert err.value.applied == {"company": "Acme Group"}
    assert sandbox.get_customer(cid)["billing_address"]["country"] == "GB"  # type: ignore[index]


def test_a_single_call_failing_is_a_plain_error(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    cid = target.create_customer(payload(), idempotency_key=key("c1"))
    sandbox.inject_fault(status=500, path="update_billing_info")
    with pytest.raises(TransientError) as err:
        target.update_customer(
            cid, {"billing_address": {"city": "Leeds"}}, idempotency_key=key("u1")
        )
    assert not isinstance(err.value, PartiallyApplied)


def test_updating_a_missing_customer_is_customer_missing(target: ChargebeeTarget) -> None:
    for change in ({"company": "x"}, {"meta_data": {"k": "v"}}, {"billing_address": {"city": "x"}}):
        with pytest.raises(CustomerMissing) as err:
            target.update_customer("nobody", change, idempotency_key=key("u"))
        assert err.value.customer_id == "nobody" and err.value.billing_account == "cb"


# --- reads -----------------------------------------------------------------------------------


def test_fetch_customers_reads_a_hundred_ids_per_request(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    ids = sandbox.load(
        {"customers": [{"id": f"c{i:03}", "business_entity_id": "eu"} for i in range(150)]}
    )
    sandbox.requests.clear()
    got = target.fetch_customers([*ids, "missing", ids[0]])
    assert sum(sandbox.requests.values()) == 2
    assert got["missing"] is None and all(got[i] is not None and got[i].id == i for i in ids)  # type: ignore[union-attr]


def test_fetch_customer_gives_tags_and_none_when_missing(target: ChargebeeTarget) -> None:
    cid = target.create_customer(payload(), idempotency_key=key("c1"))
    got = target.fetch_customer(cid)
    assert (
        got is not None
        and got.tags["salesforce_account_id"] == ACC
        and got.payload["company"] == "Acme Ltd"
    )
    assert target.fetch_customer("nobody") is None


def test_find_by_salesforce_account_is_one_retrieve_of_the_derived_id(
    make_target: Callable[..., ChargebeeTarget],
) -> None:
    t = make_target(business_entity_id="eu", salesforce_org_id=ORG)
    cid = t.create_customer(payload(), idempotency_key=key("c1"))
    calls = t.calls
    assert [c.id for c in t.find_by_salesforce_account(ACC)] == [cid] and t.calls == calls + 1
    assert t.find_by_salesforce_account("001000000000NOPAAA") == []
    assert make_target(business_entity_id="eu").find_by_salesforce_account(ACC) == []


# --- business entities -------------------------------------------------------------------------


def test_without_sharing_each_entity_gets_its_own_customer(
    sandbox: ChargebeeSandbox, make_target: Callable[..., ChargebeeTarget]
) -> None:
    eu, us = (
        make_target(name="cb-eu", business_entity_id="eu"),
        make_target(name="cb-us", business_entity_id="us"),
    )
    a = eu.create_customer(payload(), idempotency_key=key("eu"))
    b = us.create_customer(payload(), idempotency_key=key("us"))
    assert a != b
    assert [c["id"] for c in sandbox.customers("eu")] == [a] and [
        c["id"] for c in sandbox.customers("us")
    ] == [b]
    assert us.fetch_customer(a) is None


def test_with_sharing_one_customer_serves_every_entity(
    sandbox: ChargebeeSandbox, make_target: Callable[..., ChargebeeTarget]
) -> None:
    sandbox.configure_entities(["eu", "us"], customer_sharing=True)
    eu = make_target(name="cb-eu", business_entity_id="eu", customer_sharing=True)
    us = make_target(name="cb-us", business_entity_id="us", customer_sharing=True)
    a = eu.create_customer(payload(), idempotency_key=key("eu"))
    b = us.create_customer(payload(), idempotency_key=key("us"))
    assert a == b == customer_id_for(ORG, ACC)
    assert [(c["id"], c["business_entity_id"]) for c in sandbox.customers()] == [(a, "eu")]
    us.update_customer(a, {"company": "Acme Group"}, idempotency_key=key("u"))
    assert sandbox.get_customer(a)["company"] == "Acme Group"  # type: ignore[index]


def test_an_id_taken_in_an_entity_that_is_not_shared_is_a_clear_error(
    sandbox: ChargebeeSandbox, make_target: Callable[..., ChargebeeTarget]
) -> None:
    # The site stopped sharing after the eu customer was made: us cannot see or reuse it.
    sandbox.configure_entities(["eu", "us"], customer_sharing=False)
    eu = make_target(name="cb-eu", business_entity_id="eu", customer_sharing=True)
    us = make_target(name="cb-us", business_entity_id="us", customer_sharing=True)
    eu.create_customer(payload(), idempotency_key=key("eu"))
    with pytest.raises(InvalidRequest, match="cannot see"):
        us.create_customer(payload(), idempotency_key=key("us"))


# --- limits and failures ---------------------------------------------------------------------


def test_429_slows_down_and_retries_with_the_same_key(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget, sleeps: Sleeps
) -> None:
    sandbox.inject_rate_limit(count=2, method="POST")
    cid = target.create_customer(payload(), idempotency_key=key("c1"))
    assert target.rate_limited == 2 and len([s for s in sleeps if s > 0.05]) == 2
    assert target.limiter.rate < target.limiter.max_rate
    posts = [e for e in sandbox.exchanges if e["method"] == "POST"]
    assert {e["headers"]["chargebee-idempotency-key"] for e in posts} == {key("c1")}
    assert [c["id"] for c in sandbox.customers()] == [cid]


def test_429_that_does_not_end_is_rate_limited(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    sandbox.inject_rate_limit(count=100)
    with pytest.raises(RateLimited) as err:
        target.fetch_customer("x")
    assert err.value.code == "api_request_limit_exceeded" and err.value.billing_account == "cb"
    assert target.calls == 7


def test_server_errors_are_transient(sandbox: ChargebeeSandbox, target: ChargebeeTarget) -> None:
    for kind in ("internal_error", "temporary_error"):
        sandbox.inject_fault(status=500 if kind == "internal_error" else 503)
        with pytest.raises(TransientError):
            target.fetch_customer("x")


def test_a_refused_key_is_an_authentication_error(sandbox: ChargebeeSandbox) -> None:
    t = ChargebeeTarget(
        ChargebeeSettings(name="cb", site="x", api_base=sandbox.url),
        SecretSource({"CHARGEBEE_API_KEY": "live_wrong"}),
    )
    with pytest.raises(AuthenticationError, match="CHARGEBEE_API_KEY") as err:
        t.fetch_customer("x")
    assert "live_wrong" not in str(err.value)


def test_an_unreachable_site_is_billing_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = ChargebeeTarget(
        ChargebeeSettings(name="cb", site="x", api_base=f"http://127.0.0.1:{port}"), SECRETS
    )
    with pytest.raises(BillingUnreachable) as err:
        t.fetch_customer("x")
    assert err.value.billing_account == "cb" and str(port) in err.value.url


def test_invalid_data_is_an_invalid_request_naming_the_parameter(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    with pytest.raises(InvalidRequest) as err:
        target.create_customer(payload(company="c" * 251), idempotency_key=key("c1"))
    assert err.value.param == "company" and sandbox.customers() == []
    with pytest.raises(InvalidRequest, match="longer than 500"):
        target.create_customer(
            payload(
                meta_data={"salesforce_account_id": ACC, "salesforce_org_id": ORG, "k": "v" * 501}
            ),
            idempotency_key=key("c2"),
        )


def test_factory_reads_a_chargebee_account_from_config(sandbox: ChargebeeSandbox) -> None:
    from types import SimpleNamespace

    account = SimpleNamespace(
        id="cb-eu",
        kind="chargebee",
        site="acme-test",
        api_key_env="CB_KEY",
        api_base=sandbox.url,
        business_entity_id="eu",
        sharing="customer_sharing",
        requests_per_minute=None,
    )
    t = ChargebeeTarget.from_config(
        account, SecretSource({"CB_KEY": SANDBOX_CHARGEBEE_KEY}), salesforce_org_id=ORG
    )
    assert (t.name, t.settings.business_entity_id, t.settings.customer_sharing) == (
        "cb-eu",
        "eu",
        True,
    )
    assert t.settings.requests_per_minute == 150 and t.settings.salesforce_org_id == ORG
    assert (
        t.fetch_customer("nobody") is None
        and sandbox.exchanges[-1]["headers"]["chargebee-business-entity-id"] == "eu"
    )


def test_a_deleted_customer_is_still_seen_as_deleted_not_missing(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    cid = target.create_customer(payload(), idempotency_key=key("c1"))
    other = target.create_customer(payload(account="001000000000A02AAA"), idempotency_key=key("c2"))
    sandbox.delete_customer(cid)
    got = target.fetch_customer(cid)
    assert got is not None and got.deleted and got.tags["salesforce_account_id"] == ACC
    batch = target.fetch_customers([cid, other, "nobody"])
    assert batch[cid] is not None and batch[cid].deleted  # type: ignore[union-attr]
    assert batch[other] is not None and not batch[other].deleted  # type: ignore[union-attr]
    assert batch["nobody"] is None and target.fetch_customer("nobody") is None
    with pytest.raises(CustomerMissing):
        target.update_customer(cid, {"company": "x"}, idempotency_key=key("u1"))


def test_create_does_not_bring_back_a_deleted_customer(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    cid = target.create_customer(payload(), idempotency_key=key("c1"))
    sandbox.delete_customer(cid)
    with pytest.raises(InvalidRequest) as err:
        target.create_customer(payload(), idempotency_key=key("c2"))
    assert err.value.code == "customer_deleted" and cid in str(err.value)
    assert sandbox.write_count == 1


def test_an_adoption_cut_short_says_which_customer_and_what_it_holds(
    sandbox: ChargebeeSandbox, target: ChargebeeTarget
) -> None:
    cid = customer_id_for(ORG, ACC, "eu")
    sandbox.load(
        {
            "customers": [
                {
                    "id": cid,
                    "company": "Old name",
                    "business_entity_id": "eu",
                    "meta_data": {"salesforce_account_id": ACC, "salesforce_org_id": ORG},
                }
            ]
        }
    )
    sandbox.inject_fault(status=503, path="update_billing_info")
    wanted = payload()
    with pytest.raises(PartiallyApplied) as err:
        target.create_customer(wanted, idempotency_key=key("c1"))
    assert err.value.customer_id == cid
    assert err.value.pending == {"billing_address": wanted["billing_address"]}
    assert err.value.applied == {k: v for k, v in wanted.items() if k != "billing_address"}
    got = sandbox.get_customer(cid)
    assert got is not None and got["company"] == "Acme Ltd" and "billing_address" not in got


def test_a_kind_chargebee_account_in_config_builds_this_target(
    sandbox: ChargebeeSandbox, tmp_path: Any
) -> None:
    from connector.billing import build_target
    from connector.config import load_config

    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "salesforce: {auth: access_token, instance_url: 'http://127.0.0.1:1'}\n"
        f"billing:\n  accounts:\n    - {{name: cb, kind: chargebee, api_base: '{sandbox.url}'}}\n"
    )
    account = load_config(cfg).billing.accounts[0]
    t = build_target(account, SECRETS)
    assert isinstance(t, ChargebeeTarget) and t.name == "cb"
    assert t.settings.api_key_env == "CHARGEBEE_API_KEY"  # not the Stripe default
    assert t.settings.requests_per_minute == 150
    assert t.fetch_customer("nobody") is None


def test_a_chargebee_key_in_a_config_file_is_refused(tmp_path: Any) -> None:
    from connector.config import load_config

    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "salesforce: {auth: access_token, instance_url: 'http://127.0.0.1:1'}\n"
        f"# api_key: {SANDBOX_CHARGEBEE_KEY}\n"
    )
    with pytest.raises(ConfigError, match="CHARGEBEE_API_KEY") as err:
        load_config(cfg)
    assert SANDBOX_CHARGEBEE_KEY not in str(err.value)


def test_a_connector_that_bills_only_stripe_never_imports_the_chargebee_sdk() -> None:
    """The SDK and httpx under it cost about 20 MiB of resident memory: paid only by a config
    with a Chargebee account (peak RSS at 1,000,000 accounts is a target of issue 15)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import connector.cli, connector.app, connector.billing\n"
        "print('chargebee' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
