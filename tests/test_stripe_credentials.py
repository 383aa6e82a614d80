"""Credentials per billing account: an account's own key, an organization key with
Stripe-Context and a pinned Stripe-Version, a Connect platform key with Stripe-Account; pacing
per credential; organization keys refused in config files and kept out of logs.

Every request goes through the connector's StripeTarget (the real StripeClient) to the
multi-account Stripe sandbox, which refuses what Stripe refuses.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from connector import log
from connector.billing.base import CustomerMissing
from connector.billing.ratelimit import HEADROOM, SLOWDOWN, Refusal
from connector.billing.stripe import PINNED_API_VERSION, StripeTarget
from connector.config import BillingAccountConfig, SecretSource, load_config
from connector.errors import ConfigError
from connector.sandbox.stripe import StripeSandbox

EU, UK, US = "acct_1CredEurope00000", "acct_1CredUK00000000", "acct_1CredUS00000000"
PLATFORM, CHILD = "acct_1CredPlatform000", "acct_1CredChild000000"
EU_KEY, US_KEY, PLATFORM_KEY = "sk_test_cred_eu_0001", "sk_test_cred_us_0002", "sk_test_cred_pf_0003"
ORG_KEY = "sk_org_test_cred_umbrella_0004"

DATA: dict[str, Any] = {
    "accounts": [
        {"id": EU, "keys": [EU_KEY]},
        {"id": UK, "keys": []},
        {"id": US, "keys": [US_KEY]},
        {"id": PLATFORM, "keys": [PLATFORM_KEY], "connected": [CHILD]},
    ],
    "organizations": [{"id": "org_1CredUmbrella", "keys": [ORG_KEY], "accounts": [EU, UK, US]}],
    "sharing_groups": [[EU, UK]],
}
ENV = {"EU_KEY": EU_KEY, "US_KEY": US_KEY, "PLATFORM_KEY": PLATFORM_KEY, "ORG_KEY": ORG_KEY}


@pytest.fixture
def sandbox() -> Iterator[StripeSandbox]:
    with StripeSandbox(data=DATA) as sb:
        yield sb


def target(sandbox: StripeSandbox, name: str, env: str, **settings: Any) -> StripeTarget:
    account = BillingAccountConfig.model_validate(
        {"name": name, "api_key_env": env, "api_base": sandbox.url, **settings}
    )
    return StripeTarget(account, SecretSource(dict(ENV)))


def test_an_accounts_own_key_acts_on_that_account_only(sandbox: StripeSandbox) -> None:
    us = target(sandbox, "us", "US_KEY")
    customer = us.create_customer({"name": "Umbrella US"}, idempotency_key="k-us-1")
    assert sandbox.get_customer(customer, account=US) is not None
    assert sandbox.get_customer(customer, account=EU) is None
    with pytest.raises(CustomerMissing):
        target(sandbox, "eu", "EU_KEY").update_customer(customer, {"phone": "1"}, idempotency_key="k-eu-1")


def test_an_organization_key_names_its_account_in_stripe_context_with_a_pinned_version(
    sandbox: StripeSandbox,
) -> None:
    us = target(sandbox, "us", "ORG_KEY", stripe_context=US)
    customer = us.create_customer({"name": "Umbrella US"}, idempotency_key="k-org-1")
    assert us.fetch_customer(customer) is not None
    assert sandbox.get_customer(customer, account=US) is not None
    assert sandbox.get_customer(customer, account=EU) is None
    sent = [e for e in sandbox.exchanges if e["path"].startswith("/v1/customers")]
    assert len(sent) == 2
    for exchange in sent:
        assert exchange["status"] == 200 and exchange["account"] == US
        assert exchange["stripe_context"] == US and exchange["stripe_account"] is None
        assert exchange["stripe_version"] == PINNED_API_VERSION


def test_an_account_may_pin_its_own_api_version(sandbox: StripeSandbox) -> None:
    eu = target(sandbox, "eu", "ORG_KEY", stripe_context=EU, stripe_version="2026-09-30.endive")
    eu.create_customer({"name": "Umbrella Europe"}, idempotency_key="k-org-v")
    assert [e["stripe_version"] for e in sandbox.exchanges] == ["2026-09-30.endive"]


def test_an_organization_key_given_as_stripe_account_is_refused_before_any_request(
    sandbox: StripeSandbox,
) -> None:
    with pytest.raises(ConfigError) as caught:
        target(sandbox, "us", "ORG_KEY", stripe_account=US)
    message = str(caught.value)
    assert "stripe_context: " + US in message and "Stripe-Account" in message
    assert ORG_KEY not in message
    with pytest.raises(ConfigError, match="stripe_context"):
        target(sandbox, "us", "ORG_KEY")
    assert sandbox.stats()["total"] == 0


def test_a_connect_platform_key_acts_on_its_connected_account_with_stripe_account(
    sandbox: StripeSandbox,
) -> None:
    child = target(sandbox, "child", "PLATFORM_KEY", stripe_account=CHILD)
    customer = child.create_customer({"name": "Connected Co"}, idempotency_key="k-child-1")
    assert sandbox.get_customer(customer, account=CHILD) is not None
    assert sandbox.get_customer(customer, account=PLATFORM) is None
    (exchange,) = sandbox.exchanges
    assert exchange["stripe_account"] == CHILD and exchange["stripe_context"] is None


def test_accounts_driven_by_one_organization_key_share_one_limiter(sandbox: StripeSandbox) -> None:
    eu = target(sandbox, "eu", "ORG_KEY", stripe_context=EU, max_requests_per_second=30)
    us = target(sandbox, "us", "ORG_KEY", stripe_context=US, max_requests_per_second=10)
    own = target(sandbox, "own", "US_KEY")
    assert eu.limiter is us.limiter
    assert own.limiter is not eu.limiter
    # The shared budget is the slowest account's: one credential, one limit at Stripe.
    assert eu.limiter.max_rate == 10
    # A 429 slows down every account of the credential, not just the one that met it.
    eu.limiter.refused_with("customers.create", Refusal("rate_limit", reason="global-rate"))
    assert us.limiter.rate == pytest.approx(10 * HEADROOM * SLOWDOWN)
    assert own.limiter.rate == pytest.approx(HEADROOM * own.limiter.max_rate)  # its ceiling


def test_stripe_context_and_stripe_account_together_are_refused_with_file_and_line(
    tmp_path: Path,
) -> None:
    data = {
        "salesforce": {"auth": "access_token", "instance_url": "http://127.0.0.1:1"},
        "billing": {
            "accounts": [
                {"name": "eu", "api_key_env": "ORG_KEY", "stripe_context": EU, "stripe_account": EU}
            ]
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.file == path and caught.value.line is not None
    assert "stripe_context" in str(caught.value) and "not both" in str(caught.value)


def test_a_malformed_stripe_context_names_its_key(tmp_path: Path) -> None:
    data = {
        "salesforce": {"auth": "access_token", "instance_url": "http://127.0.0.1:1"},
        "billing": {"accounts": [{"name": "eu", "stripe_context": "org_1Umbrella"}]},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "billing.accounts.0.stripe_context"


def test_an_organization_key_in_the_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "salesforce: {auth: access_token, instance_url: 'http://127.0.0.1:1'}\n"
        "billing:\n"
        "  accounts:\n"
        f"    - {{name: eu, api_key_env: ORG_KEY, stripe_context: {EU}}}\n"
        "    - name: us\n"
        "      stripe_context: " + US + "\n"
        "      api_key_env: sk_org_live_FAKEfake0000FAKEfake\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert (caught.value.file, caught.value.line) == (path, 7)
    assert "secret" in str(caught.value) and "FAKEfake0000" not in str(caught.value)


def test_an_organization_key_never_reaches_a_log_line(sandbox: StripeSandbox) -> None:
    out = io.StringIO()
    log.configure(level="debug", fmt="json", stream=out)
    try:
        # By shape, from wherever it came ...
        structlog.get_logger().info("probe", note=f"key was sk_org_live_{'A' * 24}")
        # ... and by value, whatever its variable is called, once a target has loaded it.
        odd = "vault-issued-" + "Z9" * 12  # no known shape: only its value identifies it
        StripeTarget(
            BillingAccountConfig.model_validate(
                {"name": "eu", "api_key_env": "ODD_NAME", "api_base": sandbox.url, "stripe_context": EU}
            ),
            SecretSource({"ODD_NAME": odd}),
        )
        structlog.get_logger().info("probe", note=f"value {odd[:-1]}|{odd}|")
    finally:
        log.configure(level="info", fmt="json")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    assert "sk_org_live_" not in lines[0]["note"] and log.REDACTED in lines[0]["note"]
    assert odd not in lines[1]["note"] and log.REDACTED in lines[1]["note"]
