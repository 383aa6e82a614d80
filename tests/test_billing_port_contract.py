"""The billing-neutral port: fixed-length idempotency keys, the typed errors and their roots,
the target's rules, and the Stripe adapter raising those types through the real SDK against
the sandbox (or a closed port on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import stripe
from fault_readback import closed_port_url
from memory_target import MemoryTarget

from connector.billing.base import (
    BillingTarget,
    BillingUnreachable,
    CustomerMissing,
    InvalidRequest,
    RateLimited,
    idempotency_key,
)
from connector.billing.stripe import StripeTarget
from connector.config import BillingAccountConfig, SecretSource
from connector.errors import RecordError, TransientError, UnavailableError
from connector.sandbox.run import SANDBOX_STRIPE_KEY
from connector.sandbox.stripe import StripeSandbox

SECRETS = SecretSource({"STRIPE_API_KEY": SANDBOX_STRIPE_KEY})


@pytest.fixture
def stripe_sandbox() -> Iterator[StripeSandbox]:
    sb = StripeSandbox().start()
    try:
        yield sb
    finally:
        sb.stop()


class CountingClient(stripe.RequestsClient):
    """The SDK's own requests client, counting the attempts it makes (retries included)."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self.attempts += 1
        return super().request(*args, **kwargs)


@pytest.mark.parametrize(
    "parts",
    [("a",), ("main", "001000000000A01AAA", "create", "f" * 64), ("x" * 5000, "y")],
)
def test_idempotency_keys_have_one_length_that_fits_every_target(parts: tuple[str, ...]) -> None:
    key = idempotency_key(*parts)
    assert len(key) == 64 and key.startswith("bc1-")
    assert key == idempotency_key(*parts)  # deterministic: a replay sends the same key


def test_idempotency_keys_do_not_collide_when_parts_shift() -> None:
    assert idempotency_key("ab", "c") != idempotency_key("a", "bc")
    assert idempotency_key("a", "b") != idempotency_key("a", "b", "")


def test_typed_errors_sit_under_the_roots_the_engine_handles() -> None:
    missing = CustomerMissing("gone", customer_id="cus_1", billing_account="main")
    assert isinstance(missing, RecordError) and missing.code == "customer_missing"
    assert isinstance(InvalidRequest("bad", param="email"), RecordError)
    limited = RateLimited("slow down", retry_after=2.0, billing_account="main")
    assert isinstance(limited, TransientError) and limited.retry_after == 2.0
    down = BillingUnreachable("down", billing_account="main", url="https://api.stripe.com")
    assert isinstance(down, UnavailableError) and down.exit_code == 3
    assert (down.billing_account, down.url) == ("main", "https://api.stripe.com")


def test_stripe_rules_state_its_limits_and_empty_value_semantics() -> None:
    rules = StripeTarget.rules
    assert rules.system == "stripe" and rules.tag_field == "metadata"
    assert rules.idempotency_window == timedelta(hours=24) and rules.idempotency_key_max == 255
    assert (rules.tag_key_max, rules.tag_value_max, rules.tag_keys_max) == (40, 500, 50)
    assert rules.empty_unsets and rules.search and not rules.client_chosen_ids


def test_memory_target_implements_the_port() -> None:
    target: BillingTarget = MemoryTarget(name="main")
    cid = target.create_customer(
        {"name": "Acme", "metadata": {"salesforce_account_id": "001A"}}, idempotency_key="k1"
    )
    assert (
        target.create_customer(
            {"name": "Acme", "metadata": {"salesforce_account_id": "001A"}}, idempotency_key="k1"
        )
        == cid
    )
    target.update_customer(cid, {"metadata": {"plan": "gold"}}, idempotency_key="k2")
    target.update_customer(cid, {"metadata": {"plan": ""}}, idempotency_key="k3")
    got = target.fetch_customers([cid, "mem_missing", cid])
    assert set(got) == {cid, "mem_missing"} and got["mem_missing"] is None
    remote = got[cid]
    assert remote is not None and dict(remote.tags) == {"salesforce_account_id": "001A"}
    assert [c.id for c in target.find_by_salesforce_account("001A")] == [cid]
    with pytest.raises(CustomerMissing):
        target.update_customer("mem_missing", {"name": "x"}, idempotency_key="k4")


def test_stripe_update_of_a_missing_customer_raises_customer_missing(
    stripe_sandbox: StripeSandbox,
) -> None:
    target = StripeTarget(BillingAccountConfig(id="main", api_base=stripe_sandbox.url), SECRETS)
    with pytest.raises(CustomerMissing) as info:
        target.update_customer("cus_doesnotexist", {"name": "x"}, idempotency_key="bc1-k")
    assert info.value.customer_id == "cus_doesnotexist" and info.value.billing_account == "main"
    assert info.value.code == "customer_missing"
    cid = target.create_customer({"name": "Acme"}, idempotency_key=idempotency_key("c"))
    got = target.fetch_customers([cid, "cus_doesnotexist"])
    assert got["cus_doesnotexist"] is None and got[cid] is not None and got[cid].id == cid


def test_stripe_refusing_a_parameter_is_an_invalid_request_naming_it(
    stripe_sandbox: StripeSandbox,
) -> None:
    target = StripeTarget(BillingAccountConfig(id="main", api_base=stripe_sandbox.url), SECRETS)
    with pytest.raises(InvalidRequest) as info:
        target.create_customer({"no_such_param": "x"}, idempotency_key=idempotency_key("bad"))
    assert info.value.param == "no_such_param"


def test_stripe_never_cuts_an_idempotency_key(stripe_sandbox: StripeSandbox) -> None:
    target = StripeTarget(BillingAccountConfig(id="main", api_base=stripe_sandbox.url), SECRETS)
    with pytest.raises(ValueError, match="idempotency key"):
        target.create_customer({"name": "Acme"}, idempotency_key="k" * 256)
    assert target.calls == 0


def test_a_refused_connection_is_billing_unreachable_naming_account_and_url() -> None:
    url = closed_port_url()
    target = StripeTarget(
        BillingAccountConfig(id="eu", api_base=url, max_network_retries=0), SECRETS
    )
    with pytest.raises(BillingUnreachable) as info:
        target.create_customer({"name": "Acme"}, idempotency_key=idempotency_key("a"))
    err = info.value
    assert (err.billing_account, err.url) == ("eu", url)
    assert "'eu'" in str(err) and url in str(err)
    # The SDK's advice to write to Stripe's support is not what an admin with a dead proxy needs.
    assert "support" not in str(err).lower()


def test_a_refused_connection_spends_the_sdk_retries_once_not_once_per_record() -> None:
    client = CountingClient()
    target = StripeTarget(
        BillingAccountConfig(id="main", api_base=closed_port_url(), max_network_retries=2),
        SECRETS,
        http_client=client,
    )
    attempts = []
    for n in range(3):
        with pytest.raises(BillingUnreachable):
            target.update_customer("cus_1", {"name": "x"}, idempotency_key=idempotency_key(str(n)))
        attempts.append(client.attempts)
    # First record: the first try and two retries; every record after it: one try only.
    assert attempts == [3, 4, 5]
