"""The HTTP sessions of the Salesforce and Stripe clients read proxy settings once, not per
request, when no proxy is configured; with a proxy variable set they still use the proxy."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fault_readback import closed_port_url

from connector.billing.base import BillingUnreachable, idempotency_key
from connector.billing.stripe import StripeTarget
from connector.config import BillingAccountConfig, SecretSource
from connector.http_env import proxy_configured, settle, settled_session
from connector.sandbox.run import SANDBOX_STRIPE_KEY
from connector.sandbox.stripe import StripeSandbox

SECRETS = SecretSource({"STRIPE_API_KEY": SANDBOX_STRIPE_KEY})


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


@pytest.fixture
def stripe_sandbox() -> Iterator[StripeSandbox]:
    sb = StripeSandbox().start()
    try:
        yield sb
    finally:
        sb.stop()


def test_without_a_proxy_the_environment_is_read_once(
    stripe_sandbox: StripeSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = StripeTarget(
        BillingAccountConfig(id="main", api_base=stripe_sandbox.url, max_network_retries=0),
        SECRETS,
    )
    first = target.create_customer({"name": "Acme"}, idempotency_key=idempotency_key("a"))
    # A proxy variable appearing mid-run changes nothing: the session settled when it was made.
    monkeypatch.setenv("HTTP_PROXY", closed_port_url())
    second = target.create_customer({"name": "Initech"}, idempotency_key=idempotency_key("b"))
    assert first != second and len(stripe_sandbox.customers()) == 2


def test_a_proxy_in_the_environment_is_still_used(
    stripe_sandbox: StripeSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The proxy is a closed port: requests that honour it cannot reach the sandbox.
    monkeypatch.setenv("HTTP_PROXY", closed_port_url())
    target = StripeTarget(
        BillingAccountConfig(id="main", api_base=stripe_sandbox.url, max_network_retries=0),
        SECRETS,
    )
    with pytest.raises(BillingUnreachable):
        target.create_customer({"name": "Acme"}, idempotency_key=idempotency_key("a"))
    assert stripe_sandbox.customers() == []


def test_settle_keeps_the_ca_bundle_and_leaves_proxied_sessions_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corporate.pem")
    session = settled_session()
    assert session.trust_env is False and session.verify == "/etc/ssl/corporate.pem"

    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert proxy_configured()
    import requests

    proxied = settle(requests.Session())
    assert proxied.trust_env is True and proxied.verify is True
    assert proxy_configured({"NO_PROXY": "localhost"}) and not proxy_configured({"HOME": "/"})
