"""The Stripe sandbox checks the connector's requests, so it must not share the connector's code
for it: importing the sandbox loads no module of the connector outside `connector.sandbox`, and
it reads Stripe's description from the shared contract itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from connector.sandbox import stripe_openapi

REPO = Path(__file__).resolve().parents[1]


def test_importing_the_stripe_sandbox_loads_no_product_module() -> None:
    code = (
        "import json, sys, connector.sandbox.stripe\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('connector'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert "connector.sandbox.stripe" in loaded
    assert [m for m in loaded if m != "connector" and not m.startswith("connector.sandbox")] == []


def test_the_sandbox_reads_the_shared_contract_in_a_checkout() -> None:
    shared = REPO.parent / "shared" / "stripe-openapi" / "customers.openapi.json"
    assert stripe_openapi.spec_path() == shared
    schema = stripe_openapi.request_schema("/v1/customers", "post")
    assert schema["properties"]["phone"]["maxLength"] == 20  # as the contract says
