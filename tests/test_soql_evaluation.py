"""The SOQL evaluator obeys the algebra of its operators on any data: NOT is the complement, AND
the intersection, OR the union, NOT IN the complement of IN, and ORDER BY really sorts."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.sandbox.salesforce import SalesforceSandbox

NAMES = st.one_of(
    st.none(), st.sampled_from(["alpha", "Alpha", "beta", "Gamma", "delta", "", "Zed"])
)
COUNTRIES = st.one_of(st.none(), st.sampled_from(["DE", "de", "Germany", "US", "France"]))

COMPARISONS = st.one_of(
    st.builds(lambda v: f"BillingCountry = '{v}'", st.sampled_from(["DE", "us", "France"])),
    st.builds(lambda v: f"BillingCountry != '{v}'", st.sampled_from(["DE", "Germany"])),
    st.builds(
        lambda op, v: f"Name {op} '{v}'",
        st.sampled_from(["<", "<=", ">", ">="]),
        st.sampled_from(["b", "Gamma"]),
    ),
    st.builds(lambda v: f"Name LIKE '{v}'", st.sampled_from(["a%", "%a", "_eta", "%"])),
    st.sampled_from(
        ["Name = null", "Name != null", "BillingCountry IN ('DE', 'US')", "Phone = null"]
    ),
    st.sampled_from(
        ["Parent.Name = 'alpha'", "Parent.BillingCountry = null", "Parent.Parent.Name != null"]
    ),
)


def build(rows: list[dict[str, Any]]) -> SalesforceSandbox:
    accounts = []
    for i, row in enumerate(rows):
        rid = f"001{i + 1:012d}AAA"
        rec: dict[str, Any] = {
            "Id": rid,
            "Name": row["name"],
            "BillingCountry": row["country"],
            "Phone": row["phone"],
        }
        if row["parent"] is not None and row["parent"] < i:
            rec["ParentId"] = f"001{row['parent'] + 1:012d}AAA"
        accounts.append(rec)
    return SalesforceSandbox({"Account": accounts})


ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "name": NAMES,
            "country": COUNTRIES,
            "phone": st.one_of(st.none(), st.just("1")),
            "parent": st.one_of(st.none(), st.integers(0, 10)),
        }
    ),
    min_size=1,
    max_size=12,
)


def ids(sb: SalesforceSandbox, where: str) -> set[str]:
    return {r["Id"] for r in sb.run_query(f"SELECT Id FROM Account WHERE {where}")}


@settings(max_examples=60, deadline=None)
@given(ROWS, COMPARISONS, COMPARISONS)
def test_not_and_or_follow_set_algebra(rows: list[dict[str, Any]], a: str, b: str) -> None:
    sb = build(rows)
    everything = {r["Id"] for r in sb.records("Account")}
    in_a, in_b = ids(sb, a), ids(sb, b)

    assert ids(sb, f"NOT ({a})") == everything - in_a
    assert ids(sb, f"({a}) AND ({b})") == in_a & in_b
    assert ids(sb, f"({a}) OR ({b})") == in_a | in_b


@settings(max_examples=40, deadline=None)
@given(ROWS)
def test_in_and_not_in_partition_the_records(rows: list[dict[str, Any]]) -> None:
    sb = build(rows)
    everything = {r["Id"] for r in sb.records("Account")}
    listed = "('DE', 'France')"
    assert (
        ids(sb, f"BillingCountry IN {listed}") | ids(sb, f"BillingCountry NOT IN {listed}")
        == everything
    )
    assert not ids(sb, f"BillingCountry IN {listed}") & ids(sb, f"BillingCountry NOT IN {listed}")


@settings(max_examples=40, deadline=None)
@given(ROWS)
def test_order_by_sorts_case_insensitively_with_nulls_where_asked(
    rows: list[dict[str, Any]],
) -> None:
    sb = build(rows)
    asc = [
        r["BillingCountry"]
        for r in sb.run_query("SELECT BillingCountry FROM Account ORDER BY BillingCountry")
    ]
    desc = [
        r["BillingCountry"]
        for r in sb.run_query("SELECT BillingCountry FROM Account ORDER BY BillingCountry DESC")
    ]
    last = [
        r["BillingCountry"]
        for r in sb.run_query(
            "SELECT BillingCountry FROM Account ORDER BY BillingCountry NULLS LAST"
        )
    ]

    values = [v for v in asc if v is not None]
    nulls = len(asc) - len(values)
    assert asc[:nulls] == [None] * nulls
    assert [v.casefold() for v in values] == sorted(v.casefold() for v in values)
    assert desc[len(desc) - nulls :] == [None] * nulls
    assert [v.casefold() for v in desc[: len(desc) - nulls]] == sorted(
        (v.casefold() for v in values), reverse=True
    )
    assert last[len(last) - nulls :] == [None] * nulls
