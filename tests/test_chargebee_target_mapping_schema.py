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


def _check_one(tmp_path: Path, system: str | None, target: str, body: str) -> list[str]:
    """`mappings check` of a file mapping one field (its name on line 3, what it maps from on
    line 4, counted without the `system:` line); its problems as 'line: msg'."""
    head = f"system: {system}\n" if system else ""
    lines = head.count("\n")
    (tmp_path / "customer.yaml").write_text(
        f"{head}target: customer\nfields:\n  {target}:\n    {body}\n", encoding="utf-8"
    )
    return [f"{p.line - lines}: {p.message}" for p in check_mappings(tmp_path)]


EMAIL_71 = "a" * 61 + "@acme.test"
EMAIL_70 = "a" * 60 + "@acme.test"


@pytest.mark.parametrize(
    ("target", "body", "expected"),
    [
        # names
        ("name", "from: Account.Name", "unknown target 'name' for a Chargebee customer"),
        ("firstname", "from: Account.Name", "did you mean 'first_name'?"),
        ("billing_address.street", "from: Account.Name", "unknown target"),
        ("id", "from: Account.Id", "connector chooses the customer id"),
        ("vat_number", "from: Account.Name", "update_billing_info"),
        ("meta_data.salesforce_account_id", "from: Account.Id", "written by the connector"),
        # types
        ("billing_address", "from: Account.Name", "is an object; map its fields"),
        ("allow_direct_debit", "value: 'true'", "boolean"),
        ("auto_collection", "value: sometimes", "sometimes"),
        # maxLength from the published description
        ("email", f"value: {EMAIL_71}", "70"),
        ("phone", "value: '+" + "1" * 50 + "'", "50"),
        ("company", "value: " + "c" * 251, "250"),
        ("first_name", "value: " + "f" * 151, "150"),
        ("last_name", "value: " + "l" * 151, "150"),
        ("billing_address.zip", "value: " + "Z" * 21, "20"),
        # custom fields: a name Chargebee does not give, a value over our limit of 250
        ("cf_Region-Name", "value: eu", "custom field names are 'cf_'"),
        ("cf_" + "x" * 48, "value: eu", "at most 50 characters"),
        ("cf_region", "value: " + "r" * 251, "250"),
    ],
    ids=lambda v: v if len(v) < 30 else v[:27] + "...",
)
def test_mappings_check_refuses_what_chargebee_would(
    tmp_path: Path, target: str, body: str, expected: str
) -> None:
    messages = _check_one(tmp_path, "chargebee", target, body)
    assert any(m.startswith(("3:", "4:")) and expected in m for m in messages), messages


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("email", f"value: {EMAIL_70}"),
        ("phone", "value: '+" + "1" * 49 + "'"),
        ("company", "value: " + "c" * 250),
        ("first_name", "value: " + "f" * 150),
        ("auto_collection", "value: 'off'"),
        ("cf_region", "from: Account.Industry"),
        ("cf_region", "value: " + "r" * 250),
        ("cf_" + "x" * 47, "value: eu"),
        ("meta_data.industry", "from: Account.Industry"),
    ],
    ids=lambda v: v if len(v) < 30 else v[:27] + "...",
)
def test_mappings_check_accepts_what_chargebee_takes(
    tmp_path: Path, target: str, body: str
) -> None:
    assert _check_one(tmp_path, "chargebee", target, body) == []


def test_a_custom_field_is_refused_for_stripe_naming_the_file_line_and_field(
    tmp_path: Path,
) -> None:
    for system in (None, "stripe"):
        problems = [p for p in check_mappings(_write(tmp_path, system)) if p.severity == "error"]
        [problem] = problems
        assert (problem.file.name, problem.line - (1 if system else 0)) == ("customer.yaml", 3)
        assert "unknown target 'cf_region' for a Stripe customer" in problem.message
        assert "custom field of Chargebee customers" in problem.message
        assert "metadata.<key>" in problem.message


def _write(tmp_path: Path, system: str | None) -> Path:
    head = f"system: {system}\n" if system else ""
    (tmp_path / "customer.yaml").write_text(
        f"{head}target: customer\nfields:\n  cf_region:\n    from: Account.Industry\n",
        encoding="utf-8",
    )
    return tmp_path


def test_chargebee_takes_custom_fields_on_create_and_update() -> None:
    # What the schema's custom fields rest on: the bodies accept properties they do not list.
    for path in ("/customers", UPDATE):
        assert request_schema(path).get("additionalProperties") is True
    schema = customer_schema()
    assert schema.custom is not None and schema.custom.prefix == "cf_"
    field = schema.custom_field("cf_region")
    assert field is not None and not isinstance(field, str) and field.max_length == 250
    assert mapping_schema("stripe", "customer").custom is None  # type: ignore[union-attr]


def test_the_commented_custom_field_example_passes_check(tmp_path: Path) -> None:
    """Admins copy the commented examples; uncommented, they must pass check."""
    lines = []
    for line in MAPPING.read_text(encoding="utf-8").splitlines():
        if line.startswith(("  # cf_", "  # meta_data.")):
            line = "  " + line[4:]
        elif line.startswith("  #   "):
            line = "    " + line[6:]
        lines.append(line)
    (tmp_path / "customer.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert check_mappings(tmp_path) == []
    assert {"cf_salesforce_region", "meta_data.industry"} <= set(load_mappings(tmp_path).targets())
