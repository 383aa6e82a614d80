"""Fixtures shared by the integration tests: the sandbox servers, a config pointing at them,
and a fresh state store on SQLite or on the real PostgreSQL (see state_fixtures.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from billing_targets import TargetUnderTest, chargebee_target, stripe_target

from connector.app import open_pipeline
from connector.config import Config, SecretSource
from connector.engine import RunReport
from connector.sandbox.chargebee import ChargebeeSandbox
from connector.sandbox.run import SANDBOX_ORG_ID, SANDBOX_STRIPE_KEY, SANDBOX_TOKEN, SandboxPair
from connector.sandbox.salesforce import SalesforceSandbox
from connector.sandbox.stripe import StripeSandbox

REPO = Path(__file__).resolve().parents[1]
MAPPINGS = REPO / "mappings"


def small_org() -> dict[str, list[dict[str, Any]]]:
    """A compact org: a parent without orders, two billed children, a draft-only account,
    an account with two activated orders and different bill-to contacts."""
    return {
        "Account": [
            {"Id": "001000000000P01AAA", "Name": "Globex Holdings"},
            {"Id": "001000000000A01AAA", "Name": "  Acme Corp  ", "ParentId": "001000000000P01AAA",
             "BillingStreet": "1 Main St\nSuite 100", "BillingCity": "Springfield", "BillingState": "IL",
             "BillingPostalCode": "62701", "BillingCountry": "United States", "Phone": "+1 (217) 555-0100",
             "Description": "Key account"},
            {"Id": "001000000000A02AAA", "Name": "Initech GmbH", "ParentId": "001000000000P01AAA",
             "BillingCity": "Berlin", "BillingCountry": "Germany",
             "ShippingStreet": "Lager 5", "ShippingCity": "Potsdam", "ShippingCountry": "DE"},
            {"Id": "001000000000D01AAA", "Name": "Draft Only Ltd", "BillingCountry": "UK"},
            {"Id": "001000000000M01AAA", "Name": "Multi Order SA", "BillingCountry": "France"},
        ],
        "Contact": [
            {"Id": "003000000000C01AAA", "AccountId": "001000000000A01AAA", "FirstName": "Jane", "LastName": "Doe",
             "Email": " Jane.Doe@Acme.example "},
            {"Id": "003000000000C02AAA", "AccountId": "001000000000M01AAA", "LastName": "Old", "Email": "old@multi.example"},
            {"Id": "003000000000C03AAA", "AccountId": "001000000000M01AAA", "LastName": "New", "Email": "new@multi.example"},
        ],
        "Order": [
            {"Id": "801000000000O01AAA", "AccountId": "001000000000A01AAA", "Status": "Activated",
             "EffectiveDate": "2026-01-05", "ActivatedDate": "2026-01-05T10:00:00.000+0000",
             "BillToContactId": "003000000000C01AAA"},
            {"Id": "801000000000O02AAA", "AccountId": "001000000000A02AAA", "Status": "Activated",
             "EffectiveDate": "2026-02-01", "ActivatedDate": "2026-02-01T10:00:00.000+0000"},
            {"Id": "801000000000O03AAA", "AccountId": "001000000000D01AAA", "Status": "Draft", "EffectiveDate": "2026-02-01"},
            {"Id": "801000000000O04AAA", "AccountId": "001000000000M01AAA", "Status": "Activated",
             "EffectiveDate": "2026-01-01", "ActivatedDate": "2026-01-01T10:00:00.000+0000",
             "BillToContactId": "003000000000C02AAA"},
            {"Id": "801000000000O05AAA", "AccountId": "001000000000M01AAA", "Status": "Activated",
             "EffectiveDate": "2026-03-01", "ActivatedDate": "2026-03-01T10:00:00.000+0000",
             "BillToContactId": "003000000000C03AAA"},
        ],
    }


BILLED = {"001000000000A01AAA", "001000000000A02AAA", "001000000000M01AAA"}


@pytest.fixture
def sandboxes() -> Iterator[SandboxPair]:
    sf = SalesforceSandbox(small_org(), access_token=SANDBOX_TOKEN, org_id=SANDBOX_ORG_ID).start()
    st = StripeSandbox().start()
    pair = SandboxPair(salesforce=sf, stripe=st)
    try:
        yield pair
    finally:
        pair.stop()


def with_sections(data: dict[str, Any], sections: dict[str, Any]) -> Config:
    """The config `data` with each of `sections` laid over its section (a section that is not a
    mapping, or is absent, is replaced)."""
    for name, values in sections.items():
        if isinstance(data.get(name), dict):
            data[name] = {**data[name], **values}
        else:
            data[name] = values
    return Config.model_validate(data)


@pytest.fixture
def make_config(sandboxes: SandboxPair, db_url: str, tmp_path: Path) -> Callable[..., Config]:
    """A config for the sandboxes and the store under test; keyword overrides per section."""

    def make(*, mappings_dir: Path = MAPPINGS, **sections: dict[str, Any]) -> Config:
        data = sandboxes.config_dict(state_url=db_url, mappings_dir=str(mappings_dir))
        return with_sections(data, sections)

    return make


@pytest.fixture
def secrets() -> SecretSource:
    return SecretSource({"SALESFORCE_ACCESS_TOKEN": SANDBOX_TOKEN, "STRIPE_API_KEY": SANDBOX_STRIPE_KEY})


@pytest.fixture
def run_sync(make_config: Callable[..., Config], secrets: SecretSource) -> Callable[..., RunReport]:
    """Run one engine pass against the sandboxes, as the CLI would."""

    def run(mode: str = "sync", *, config: Config | None = None, **kwargs: Any) -> RunReport:
        with open_pipeline(config or make_config(), secrets) as p:
            return p.engine.run(mode, **kwargs)  # type: ignore[arg-type]

    return run


@pytest.fixture
def cli_env(sandboxes: SandboxPair, db_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment and a config file on disk for driving the real command in a subprocess."""
    import yaml

    cfg = tmp_path / "config.yaml"
    cfg.write_text(sandboxes.config_snippet(state_url=db_url, mappings_dir=str(MAPPINGS)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "STRIPE_"))}
    env.update(sandboxes.secrets())
    env["BILLING_CONNECTOR_CONFIG"] = str(cfg)
    _ = yaml  # the snippet is YAML; parsed by the command itself
    return env


@pytest.fixture(params=["stripe", "chargebee"])
def target(request: pytest.FixtureRequest, sandboxes: SandboxPair) -> Iterator[TargetUnderTest]:
    """The billing system the engine's integration tests run against, once per system: the
    pair's Stripe sandbox, or a Chargebee sandbox beside the same Salesforce org."""
    if request.param == "stripe":
        yield stripe_target(sandboxes.stripe, sandboxes.stripe_key)
        return
    with ChargebeeSandbox() as cb:
        yield chargebee_target(cb)


@pytest.fixture
def target_config(
    sandboxes: SandboxPair, target: TargetUnderTest, db_url: str
) -> Callable[..., Config]:
    """A config for the Salesforce sandbox, the `target` and the store under test: one billing
    account of the target's kind, the shipped mapping for its system; overrides per section."""

    def make(**sections: dict[str, Any]) -> Config:
        data = sandboxes.config_dict(state_url=db_url, mappings_dir=str(target.mappings_dir))
        data["billing"] = {"accounts": [target.account_config()]}
        return with_sections(data, sections)

    return make


@pytest.fixture
def target_secrets(target: TargetUnderTest) -> SecretSource:
    return SecretSource({"SALESFORCE_ACCESS_TOKEN": SANDBOX_TOKEN, **target.secrets()})


@pytest.fixture
def target_run(
    target_config: Callable[..., Config], target_secrets: SecretSource
) -> Callable[..., RunReport]:
    """Run one engine pass against the Salesforce sandbox and the `target`, as the CLI would."""

    def run(mode: str = "sync", *, config: Config | None = None, **kwargs: Any) -> RunReport:
        with open_pipeline(config or target_config(), target_secrets) as p:
            return p.engine.run(mode, **kwargs)  # type: ignore[arg-type]

    return run


@pytest.fixture
def billed(target: TargetUnderTest, target_config: Callable[..., Config],
           target_secrets: SecretSource) -> Callable[[], dict[str, list[Any]]]:
    """What the target holds now: customers (RemoteCustomer) by salesforce_account_id tag."""
    return lambda: target.by_account(target_config(), target_secrets)


from state_fixtures import db_url  # noqa: E402, F401  (SQLite and PostgreSQL stores)
