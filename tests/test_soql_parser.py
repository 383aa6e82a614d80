"""The sandbox's SOQL parser: what it reads, where it points when it refuses, and that no input
makes it fail with anything but a SoqlError."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.sandbox.soql import BoolOp, Comparison, Not, SoqlError, parse, tokenize


def test_a_full_query_parses_into_its_parts() -> None:
    q = parse(
        "SELECT Id, Account.Parent.Name FROM Order WHERE StatusCode = 'Activated' "
        "ORDER BY Account.Name DESC NULLS FIRST, Id LIMIT 10"
    )

    assert [p.parts for p in q.fields] == [("Id",), ("Account", "Parent", "Name")]
    assert q.sobject == "Order" and q.limit == 10
    assert (
        isinstance(q.where, Comparison) and q.where.op == "=" and q.where.value.value == "Activated"
    )
    assert [(o.path.text, o.descending, o.nulls_last) for o in q.order_by] == [
        ("Account.Name", True, False),
        ("Id", False, False),
    ]


def test_keywords_are_case_insensitive_and_default_null_order_follows_direction() -> None:
    q = parse(
        "select id from account where not (name = 'a' or name = 'b') order by name desc, id asc"
    )

    assert isinstance(q.where, Not) and isinstance(q.where.item, BoolOp) and q.where.item.op == "OR"
    assert [(o.descending, o.nulls_last) for o in q.order_by] == [(True, True), (False, False)]


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-05T03:41:05Z",
        "2026-01-05T03:41:05.000Z",
        "2026-01-05T03:41:05.000+0000",
        "2026-01-05T04:41:05+01:00",
        "2026-01-04T22:41:05.000-0500",
    ],
)
def test_datetime_literals_in_every_form_mean_the_same_instant(text: str) -> None:
    [tok, _eof] = tokenize(text)
    assert tok.kind == "DATETIME" and tok.value == datetime(2026, 1, 5, 3, 41, 5, tzinfo=UTC)


def test_dates_numbers_strings_and_booleans_are_typed_literals() -> None:
    q = parse(
        "SELECT Id FROM Order WHERE EffectiveDate = 2026-01-05 AND TotalAmount > -12.5 "
        "AND Description = 'it\\'s \\\\ fine\\n' AND IsDeleted = FALSE AND PoNumber != null"
    )
    assert isinstance(q.where, BoolOp)
    values = [c.value for c in q.where.items if isinstance(c, Comparison)]
    assert [(v.kind, v.value) for v in values] == [
        ("DATE", date(2026, 1, 5)),
        ("NUMBER", -12.5),
        ("STRING", "it's \\ fine\n"),
        ("BOOLEAN", False),
        ("NULL", None),
    ]


def test_in_and_not_in_take_literal_lists() -> None:
    q = parse("SELECT Id FROM Account WHERE Id NOT IN ('a', 'b') AND Type IN ('x')")
    assert isinstance(q.where, BoolOp)
    ops = [
        (c.op, [v.value for v in c.value])
        for c in q.where.items
        if isinstance(c, Comparison) and isinstance(c.value, tuple)
    ]
    assert ops == [("NOTIN", ["a", "b"]), ("IN", ["x"])]


@pytest.mark.parametrize(
    ("soql", "column", "text"),
    [
        (
            "SELECT Id FROM Account WHERE Name = 'a' AND Name = 'b' OR Name = 'c'",
            56,
            "unexpected token: 'OR'",
        ),
        ("SELECT Id, FROM Account", 12, "unexpected token: 'FROM'"),
        ("SELECT Id FROM Account WHERE", 29, "unexpected token: '<EOF>'"),
        ("SELECT Id FROM Account LIMIT -1", 30, "unexpected token: '-1'"),
        (
            "SELECT Id FROM Account WHERE Name = 'open",
            37,
            "unexpected token: '<EOF>': unterminated string literal",
        ),
        ("SELECT Id FROM Account; DROP TABLE x", 23, "unexpected token: ';'"),
        (
            "SELECT COUNT() FROM Account",
            8,
            "The function COUNT() is not supported by the Salesforce sandbox",
        ),
        (
            "SELECT Id FROM Account GROUP BY Name",
            24,
            "GROUP BY is not supported by the Salesforce sandbox",
        ),
    ],
)
def test_refusals_point_at_the_offending_token(soql: str, column: int, text: str) -> None:
    with pytest.raises(SoqlError) as err:
        parse(soql)

    assert err.value.error_code == "MALFORMED_QUERY"
    assert (
        err.value.message(soql)
        == f"\n{soql}\n{' ' * (column - 1)}^\nERROR at Row:1:Column:{column}\n{text}"
    )


def test_a_multi_line_query_reports_the_row_and_that_line_only() -> None:
    soql = "SELECT Id\nFROM Account\nWHERE Name == 'x'"
    with pytest.raises(SoqlError) as err:
        parse(soql)
    assert (
        err.value.message(soql)
        == "\nWHERE Name == 'x'\n            ^\nERROR at Row:3:Column:13\nunexpected token: '='"
    )


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(
            list("SELECTFROMWHEREANDORNOTINLIKE IdName(),.'=<>!:-0123456789TZ%_\\\n")
        ),
        max_size=80,
    )
)
def test_any_input_either_parses_or_raises_soql_error(text: str) -> None:
    try:
        parse(text)
    except SoqlError as exc:
        assert exc.error_code == "MALFORMED_QUERY"
        assert isinstance(exc.message(text), str)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_string_literals_round_trip_through_escaping(value: str) -> None:
    escaped = (
        value.replace("\\", "\\\\")
        .replace("'", "\\'")
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
    )
    escaped = escaped.replace("\b", "\\b").replace("\f", "\\f")
    q = parse(f"SELECT Id FROM Account WHERE Name = '{escaped}'")
    assert isinstance(q.where, Comparison) and q.where.value.value == value
