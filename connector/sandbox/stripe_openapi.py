"""The sandbox's own copy of Stripe's published description of the customer API.

The sandbox checks what the connector sends, so it never imports the connector's product code:
it loads the description itself, from the shared contract
(`shared/stripe-openapi/customers.openapi.json` beside the repository), or, where there is no
checkout (an installed wheel running `billing-connector demo`), from the copy the package ships
(read as a file). Reading and checking against it (`$ref`s, form and query coercion with
Stripe's wording) is the neutral `connector.openapi`, which imports neither side.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from connector.openapi import OpenApi

_HERE = Path(__file__).resolve().parent
# The shared contract (a checkout: <repo>/../shared), then the copy a wheel carries.
SPEC_PATHS = (
    _HERE.parents[1].parent / "shared" / "stripe-openapi" / "customers.openapi.json",
    _HERE.parent / "billing" / "specs" / "stripe_customers.openapi.json",
)


def spec_path() -> Path:
    for path in SPEC_PATHS:
        if path.is_file():
            return path
    raise FileNotFoundError(
        "Stripe's OpenAPI description is in none of: " + ", ".join(map(str, SPEC_PATHS))
    )


@cache
def spec() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(spec_path().read_text(encoding="utf-8"))
    return data


# Used as `stripe_openapi.STRIPE.coerce_params(...)`: the neutral reader bound to this copy.
STRIPE = OpenApi(spec)
