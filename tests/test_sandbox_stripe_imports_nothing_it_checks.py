"""The sandboxes check the connector's requests, so they never import the connector's product
code: importing one loads no module of the connector outside `connector.sandbox` but the neutral
OpenAPI reader (`connector.openapi`), which itself imports neither side; and the Stripe sandbox
reads Stripe's description from the shared contract itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from connector.sandbox import stripe_openapi

REPO = Path(__file__).resolve().parents[1]


NEUTRAL = "connector.openapi"


def connector_modules_loaded_by(module: str) -> list[str]:
    code = (
        f"import json, sys, {module}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('connector'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout)
    assert module in loaded
    return loaded


@pytest.mark.parametrize("sandbox", ["connector.sandbox.stripe", "connector.sandbox.chargebee"])
def test_importing_a_billing_sandbox_loads_no_product_module(sandbox: str) -> None:
    loaded = connector_modules_loaded_by(sandbox)
    product = [m for m in loaded if m not in ("connector", NEUTRAL)]
    assert [m for m in product if not m.startswith("connector.sandbox")] == []


def test_the_openapi_reader_imports_neither_the_product_nor_the_sandbox() -> None:
    assert connector_modules_loaded_by(NEUTRAL) == ["connector", NEUTRAL]


def test_the_sandbox_reads_the_shared_contract_in_a_checkout() -> None:
    shared = REPO.parent / "shared" / "stripe-openapi" / "customers.openapi.json"
    assert stripe_openapi.spec_path() == shared
    schema = stripe_openapi.STRIPE.request_schema("/v1/customers", "post")
    assert schema["properties"]["phone"]["maxLength"] == 20  # as the contract says
