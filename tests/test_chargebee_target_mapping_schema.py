"""What `mappings check` will know about Chargebee customers comes from Chargebee's published
description; the shipped Chargebee mapping names only fields Chargebee takes, and a payload at
every limit the schema states is accepted by the sandbox while one character more is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.billing import TARGET_KINDS, mapping_schema
from connector.billing.base import idempotency_key
from connector.billing.chargebee import ChargebeeSettings, ChargebeeTarget
from connector.billing.chargebee_schema import (
    UPDATE,
    UPDATE_BILLING_INFO,
    customer_schema,
    request_schema,
)
from connector.config import SecretSource
from connector.errors import RecordError
from connector.mapping import check_mappings, load_mapping, load_mappings
from connector.mapping.spec import read_spec
from connector.sandbox.chargebee import ChargebeeSandbox
from connector.sandbox.run import SANDBOX_CHARGEBEE_KEY

REPO = Path(__file__).resolve().parents[1]
MAPPING = REPO / "mappings" / "chargebee" / "customer.yaml"
ORG, ACC = "00D000000000001AAA", "001000000000A01AAA"


def test_limits_come_from_the_published_description() -> None:
    leaves = customer_schema().leaves
    limits = {
        p: leaves[p].max_length for p in ("email", "phone", "company", "first_name", "last_name")
    }
    assert limits == {"email": 70, "phone": 50, "company": 250, "first_name": 150, "last_name": 150}
    assert leaves["billing_address.zip"].max_length == 20
    formats = {p: f.format for p, f in leaves.items() if f.format != "text"}
    assert formats == {
        "email": "email",
        "phone": "phone",
        "billing_address.email": "email",
        "billing_address.phone": "phone",
        "billing_address.country": "country",
    }
    assert leaves["auto_collection"].enum == ("on", "off")


def test_every_mappable_field_can_be_changed_after_create() -> None:
    # Billing address fields are ones update_billing_info takes; every other field one that
    # POST /customers/{id} takes: nothing a mapping sets is create-only.
    leaves = customer_schema().leaves
    billing = request_schema(UPDATE_BILLING_INFO)["properties"]["billing_address"]["properties"]
    update = request_schema(UPDATE)["properties"]
    for path in leaves:
        top, _, sub = path.partition(".")
        assert (sub in billing) if top == "billing_address" else (top in update), path
    assert "billing_address.city" in leaves and "company" in leaves


def test_fields_a_mapping_cannot_set_say_why() -> None:
    refused = customer_schema().refused
    assert "connector chooses" in refused["id"]
    assert "payment" in refused["card"] and "boolean" in refused["allow_direct_debit"]
    assert "id" not in customer_schema().leaves and "meta_data" in customer_schema().objects


def test_shipped_mapping_names_only_fields_chargebee_takes() -> None:
    spec, problems = read_spec(MAPPING, MAPPING.read_text(encoding="utf-8"))
    assert spec is not None and problems == [] and spec.target == "customer"
    assert spec.system == "chargebee"
    schema = customer_schema()
    targets = {f.target for f in spec.fields}
    unknown = {
        t for t in targets if t not in schema.leaves and not t.startswith(("meta_data.", "cf_"))
    }
    assert unknown == set()
    assert {
        "company",
        "first_name",
        "last_name",
        "email",
        "phone",
        "billing_address.country",
    } <= targets
    country = next(f for f in spec.fields if f.target == "billing_address.country")
    assert [t.name for t, _ in country.transforms] == ["country_code"]
    company = next(f for f in spec.fields if f.target == "company")
    assert [s.value for s in company.sources] == ["Account.Name"]


def test_shipped_mapping_does_not_disturb_the_stripe_mapping_directory() -> None:
    # mappings/ holds the Stripe mapping; its chargebee/ subdirectory is not read with it.
    assert load_mappings(REPO / "mappings") is not None


@pytest.fixture(scope="module")
def target() -> Iterator[ChargebeeTarget]:
    with ChargebeeSandbox() as sb:
        yield ChargebeeTarget(
            ChargebeeSettings(name="cb", site="x", api_base=sb.url, requests_per_minute=6000),
            SecretSource({"CHARGEBEE_API_KEY": SANDBOX_CHARGEBEE_KEY}),
        )


def _at_limits(extra: int = 0, only: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "meta_data": {"salesforce_account_id": ACC, "salesforce_org_id": ORG}
    }
    for path, f in customer_schema().leaves.items():
        if only is not None and path != only:
            continue
        if f.kind == "enum":
            value = f.enum[0]
        elif f.format == "email":
            value = "a" * ((f.max_length or 20) - 10 + extra) + "@acme.test"
        elif path.endswith("country"):
            value = "DE"
        else:
            value = "x" * ((f.max_length or 20) + extra)
        top, _, sub = path.partition(".")
        if sub:
            payload.setdefault(top, {})[sub] = value
        else:
            payload[path] = value
    return payload


def test_a_payload_at_every_limit_is_accepted(target: ChargebeeTarget) -> None:
    cid = target.create_customer(_at_limits(), idempotency_key=idempotency_key("limits"))
    got = target.fetch_customer(cid)
    assert got is not None and len(got.payload["company"]) == 250


@pytest.mark.parametrize("path", ["email", "phone", "company", "first_name", "billing_address.zip"])
def test_one_character_more_is_refused(target: ChargebeeTarget, path: str) -> None:
    payload = _at_limits(extra=1, only=path)
    payload["meta_data"]["salesforce_account_id"] = f"001000000000{path[:3].upper()}AAA"
    with pytest.raises(RecordError) as err:
        target.create_customer(payload, idempotency_key=idempotency_key("over", path))
    assert getattr(err.value, "param", None) == path.replace(".", "[").replace("[zip", "[zip]")


def test_chargebee_is_registered_for_config_and_mappings_check() -> None:
    kind = TARGET_KINDS["chargebee"]
    assert kind.rules.system == "chargebee" and kind.rules.tag_field == "meta_data"
    assert mapping_schema("chargebee", "customer") is customer_schema()
    assert kind.secret_shapes[0].pattern.search("key: test_" + "a1B2" * 8)


def test_mappings_check_accepts_the_shipped_chargebee_mapping() -> None:
    assert [p for p in check_mappings(MAPPING.parent) if p.severity == "error"] == []
    mapping = load_mapping(MAPPING)
    assert mapping.system == "chargebee"


def test_mappings_check_names_chargebees_limits(tmp_path: Path) -> None:
    bad = tmp_path / "customer.yaml"
    bad.write_text(
        "system: chargebee\ntarget: customer\nfields:\n"
        "  company:\n    value: " + "c" * 251 + "\n"
        "  name:\n    from: Account.Name\n"
        "  id:\n    from: Account.Id\n"
    )
    messages = [f"{p.line}: {p.message}" for p in check_mappings(tmp_path)]
    assert any(m.startswith("5:") and "250" in m and "Chargebee" in m for m in messages), messages
    assert any(
        m.startswith("6:") and "unknown target 'name' for a Chargebee customer" in m
        for m in messages
    ), messages
    assert any(m.startswith("8:") and "connector chooses the customer id" in m for m in messages), (
        messages
    )
