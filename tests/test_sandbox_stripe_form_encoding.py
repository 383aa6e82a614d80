"""The sandbox reads back exactly what stripe-python's form encoder writes (property tests)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stripe._encode import _api_encode

from connector.billing import stripe_schema
from connector.billing.stripe_schema import ParamError
from connector.sandbox.stripe import parse_form

# Metadata keys may not contain brackets (Stripe refuses them too); anything else goes.
keys = st.text(st.characters(blacklist_characters="[]", blacklist_categories=("Cs",)), min_size=1, max_size=40)
values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=500)
address = st.fixed_dictionaries({}, optional={k: values for k in ("line1", "line2", "city", "state", "postal_code", "country")})
params = st.fixed_dictionaries({}, optional={
    "name": st.text(st.characters(blacklist_categories=("Cs",)), max_size=256),
    "email": st.text(st.characters(blacklist_categories=("Cs",)), max_size=512),
    "metadata": st.dictionaries(keys, values, max_size=50),
    "address": address,
    "preferred_locales": st.lists(st.sampled_from(["en", "de", "fr-CA"]), min_size=1, max_size=3),
    "balance": st.integers(-10**9, 10**9),
    "tax_exempt": st.sampled_from(["none", "exempt", "reverse"]),
})


def encode(data: dict[str, Any]) -> str:
    return urlencode(list(_api_encode(data)))


@settings(max_examples=300, deadline=None)
@given(params)
def test_form_round_trip(data: dict[str, Any]) -> None:
    decoded = parse_form(parse_qsl(encode(data), keep_blank_values=True))
    typed = stripe_schema.coerce_params(stripe_schema.create_params_schema(), decoded)
    expected = {k: v for k, v in data.items() if v not in ({}, [])}  # stripe-python sends nothing for empty containers
    assert typed == expected


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=257, max_size=600))
def test_any_name_over_256_characters_is_refused(name: str) -> None:
    with pytest.raises(ParamError) as err:
        stripe_schema.coerce_params(stripe_schema.create_params_schema(), {"name": name})
    assert err.value.problem.param == "name"


def test_empty_values_survive_as_unset_markers() -> None:
    decoded = parse_form(parse_qsl(encode({"metadata": {"a": ""}, "address": "", "name": ""}), keep_blank_values=True))
    assert decoded == {"metadata": {"a": ""}, "address": "", "name": ""}
    typed = stripe_schema.coerce_params(stripe_schema.update_params_schema(), decoded)
    assert typed == {"metadata": {"a": ""}, "address": "", "name": ""}


def test_bracket_append_and_index_forms_agree() -> None:
    assert parse_form([("expand[]", "a"), ("expand[]", "b")]) == {"expand": ["a", "b"]}
    schema = stripe_schema.create_params_schema()
    assert stripe_schema.coerce_params(schema, parse_form([("expand[1]", "b"), ("expand[0]", "a")])) == {"expand": ["a", "b"]}
