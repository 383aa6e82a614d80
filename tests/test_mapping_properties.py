"""Property tests: transforms never raise and never produce a value Stripe would refuse."""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.billing.stripe import METADATA_VALUE_MAX as METADATA_VALUE_MAX_LENGTH
from connector.billing.stripe_fields import customer_schema
from connector.billing.stripe_schema import (
    coerce_params,
    create_params_schema,
    update_params_schema,
)
from connector.mapping import CustomerMapping, load_mapping, payload_hash
from connector.mapping.countries import _TABLE, ALIASES, alpha2_codes, to_alpha2
from connector.mapping.transforms import EvalContext, parse_transform, phone

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any text: unicode, control characters, and now and then something huge.
TEXT = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=50),
    st.text(alphabet=st.sampled_from("+-() .x#0123456789\u0663\t\n\r\x00"), max_size=60),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=5), st.integers(1000, 30000)),
)
VALUE = st.one_of(TEXT, st.none(), st.integers(), st.floats(), st.booleans())

ENTRIES = [
    "trim",
    "lower",
    "upper",
    {"truncate": 5},
    {"replace": {"old": "a", "new": "bb"}},
    {"lookup": {"map": {"x": "y"}, "default": "z"}},
    {"lookup": {"map": {"x": "y"}}},
    {"join": {"sources": ["Account.BillingCity"], "separator": ", "}},
    {"template": "{Account.BillingCity} / {value}"},
    "country_code",
    "phone",
    "link",
    {"line": 2},
    {"lines_from": 2},
]
TRANSFORMS = [parse_transform(e) for e in ENTRIES]


@cache
def everything_mapping() -> CustomerMapping:
    """A mapping that sends one source into every text target Stripe has, plus metadata."""
    leaves = customer_schema().leaves
    lines = ["target: customer", "fields:"]
    for path in sorted(leaves):
        if path.startswith("shipping."):
            continue
        lines.append(f"  {path}: {{from: Account.Raw}}")
    lines.append("  shipping.name: {from: Account.Raw}")
    lines.append("  shipping.address.city: {from: Account.Other}")
    lines.append("  shipping.phone: {from: Account.Raw, transforms: [phone]}")
    lines.append("  metadata.raw: {from: Account.Raw}")
    lines.append("  metadata.linked: {from: Account.Raw, transforms: [link]}")
    lines.append("  metadata.both: {from: [Account.Other, Account.Raw], transforms: [upper, trim]}")
    folder = Path(tempfile.mkdtemp())
    (folder / "everything.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_mapping(folder / "everything.yaml")


def assert_stripe_accepts(payload: dict[str, Any]) -> None:
    leaves = customer_schema().leaves
    for key, value in payload.items():
        if key == "metadata":
            assert len(value) <= 48
            for meta_key, meta_value in value.items():
                assert isinstance(meta_value, str) and len(meta_key) <= 40
                assert len(meta_value) <= METADATA_VALUE_MAX_LENGTH
                assert meta_value == meta_value.strip()
            continue
        if key == "shipping":
            assert value == "" or (value["name"] and any(value["address"].values()))
            if value == "":
                continue
            nested = {f"shipping.{k}": v for k, v in value.items() if k != "address"}
            nested.update({f"shipping.address.{k}": v for k, v in value["address"].items()})
        elif isinstance(value, dict):
            nested = {f"{key}.{k}": v for k, v in value.items()}
        else:
            nested = {key: value}
        for path, leaf_value in nested.items():
            leaf = leaves[path]
            if leaf.kind == "string_list":
                assert all(isinstance(i, str) and i for i in leaf_value)
                continue
            assert isinstance(leaf_value, str)
            assert "\x00" not in leaf_value
            if leaf.max_length is not None:
                assert len(leaf_value) <= leaf.max_length, path
            if leaf.kind == "enum":
                assert leaf_value in leaf.enum
            if path.endswith("country"):
                assert leaf_value == "" or leaf_value in alpha2_codes()
    assert len(payload.get("phone", "")) <= 20
    email = payload.get("email", "")
    assert email == "" or ("@" in email and not any(c.isspace() for c in email))


@FAST
@given(value=TEXT, other=TEXT)
def test_transforms_never_raise_and_return_text(value: str, other: str) -> None:
    ctx = EvalContext(read=lambda _path: other, link=lambda account_id: f"cus_{account_id[:10]}")
    for transform in TRANSFORMS:
        result = transform(value, ctx)
        assert isinstance(result, str)


@FAST
@given(value=TEXT)
def test_phone_is_dialable_and_fits_stripe(value: str) -> None:
    result = phone(value)
    assert len(result) <= 20
    assert result == "" or (result.lstrip("+").isascii() and result.lstrip("+").isdigit())


@FAST
@given(value=TEXT)
def test_country_code_is_two_letters_or_empty(value: str) -> None:
    result = to_alpha2(value)
    assert result == "" or (len(result) == 2 and result.isascii() and result.isupper())


@FAST
@given(raw=VALUE, other=VALUE)
def test_evaluate_never_produces_a_value_stripe_refuses(raw: Any, other: Any) -> None:
    record = {
        "attributes": {"type": "Order"},
        "Account": {"attributes": {}, "Raw": raw, "Other": other},
    }
    payload = everything_mapping().evaluate(record, link=lambda account_id: account_id * 3)
    assert_stripe_accepts(payload)
    # The same schema check the Stripe sandbox applies to create and update requests.
    coerce_params(create_params_schema(), payload)
    coerce_params(update_params_schema(), payload)


JSONISH = st.recursive(
    st.one_of(st.text(max_size=10), st.integers(), st.booleans(), st.none()),
    lambda children: (
        st.dictionaries(st.text(max_size=5), children, max_size=4) | st.lists(children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=50, deadline=None)
@given(payload=st.dictionaries(st.text(max_size=8), JSONISH, max_size=6), seed=st.randoms())
def test_payload_hash_is_stable_across_key_order(payload: dict[str, Any], seed: Any) -> None:
    def shuffled(node: Any) -> Any:
        if isinstance(node, dict):
            items = list(node.items())
            seed.shuffle(items)
            return {k: shuffled(v) for k, v in items}
        if isinstance(node, list):
            return [shuffled(v) for v in node]
        return node

    assert payload_hash(shuffled(payload)) == payload_hash(payload)


def test_every_code_and_name_in_the_table_gives_its_code() -> None:
    for row in _TABLE.splitlines():
        alpha2, alpha3, name = row[:2], row[3:6], row[7:]
        assert to_alpha2(alpha2) == to_alpha2(alpha2.lower()) == alpha2
        assert to_alpha2(alpha3) == alpha2, alpha3
        assert to_alpha2(name) == to_alpha2(f"  {name.upper()} ") == alpha2, name
    for alias, code in ALIASES.items():
        assert to_alpha2(alias) == code, alias


def test_country_table_names_are_unambiguous() -> None:
    assert len(alpha2_codes()) == 250
    assert to_alpha2("United States of America") == "US"
    assert to_alpha2("Côte d'Ivoire") == "CI"
    assert to_alpha2("x" * 10_000) == ""
