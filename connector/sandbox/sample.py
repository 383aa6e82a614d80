"""The sample data set of the demo and the tests: connector/sandbox/data/sample.yaml.

It holds a realistic, deliberately messy B2B org (parents and children, draft and activated
orders, countries as names and codes, stray whitespace, one account already linked to a Stripe
customer, one CPQ quote path) and the Stripe customers that must exist beforehand. The Ids are
fixed; the names below are the ones tests refer to. This module only reads the file.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

SAMPLE_FILE = "sample.yaml"

# Records tests can refer to by name.
GLOBEX_HOLDINGS = "001000000000001AAA"  # parent without orders of its own
GLOBEX_DE = "001000000000002AAA"  # child of Globex Holdings, two activated orders
GLOBEX_UK = "001000000000003AAA"  # child of Globex Holdings
INITECH_GROUP = "001000000000004AAA"  # parent without orders
INITECH_WEST = "001000000000005AAA"
UMBRELLA = "001000000000007AAA"  # three activated orders, whitespace around values
ACME_ADOPTED = "001000000000008AAA"  # Stripe_Customer_Id__c already set
ACME_STRIPE_CUSTOMER = "cus_Adopt000000001"
STARK = "001000000000009AAA"  # CPQ: its order has a quote with a primary contact
STARK_ORDER = "801000000000010AAA"
STARK_QUOTE = "a0X000000000001EAA"
PEPPER_POTTS = "003000000000010AAA"  # the quote's primary contact
DUNDER_MIFFLIN = "001000000000032AAA"  # activated order without a bill-to contact

# Stripe accounts beside the default one (the `stripe` section): two share customers.
STRIPE_EUROPE = "acct_1SampleEurope0000"  # sharing group with STRIPE_UK
STRIPE_UK = "acct_1SampleUK00000000"
STRIPE_US = "acct_1SampleUS00000000"  # in no sharing group
STRIPE_ORG_KEY = "sk_org_test_sample_umbrella_000000"  # reaches all three with Stripe-Context


def load_sample() -> dict[str, Any]:
    """{"salesforce": {"Account": [...], ...}, "stripe": {"customers": [...]}}, a fresh copy."""
    text = (
        resources.files("connector.sandbox")
        .joinpath("data", SAMPLE_FILE)
        .read_text(encoding="utf-8")
    )
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or "salesforce" not in data:
        raise ValueError(
            f"{SAMPLE_FILE}: expected a mapping with 'salesforce' and 'stripe' sections"
        )
    data.setdefault("stripe", {"customers": []})
    return data
