"""`parse_sf_datetime`: exactly the Salesforce REST datetime shapes, in UTC, and nothing looser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connector.salesforce import parse_sf_datetime


def strptime_reference(value: str) -> datetime:
    """The parser used before (strptime), kept here as the definition of what is accepted."""
    v = value.replace("Z", "+0000")
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.strptime(v, fmt).astimezone(UTC)
        except ValueError:
            continue
    raise ValueError(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-05T03:41:05.000+0000", datetime(2026, 1, 5, 3, 41, 5, tzinfo=UTC)),
        ("2026-01-05T03:41:05.123+0000", datetime(2026, 1, 5, 3, 41, 5, 123000, tzinfo=UTC)),
        ("2026-01-05T03:41:05.5Z", datetime(2026, 1, 5, 3, 41, 5, 500000, tzinfo=UTC)),
        ("2026-01-05T03:41:05Z", datetime(2026, 1, 5, 3, 41, 5, tzinfo=UTC)),
        ("2026-01-05T03:41:05+0000", datetime(2026, 1, 5, 3, 41, 5, tzinfo=UTC)),
        ("2026-01-05T03:41:05.000+00:00", datetime(2026, 1, 5, 3, 41, 5, tzinfo=UTC)),
        # Another offset is converted: the same instant, in UTC.
        ("2026-01-04T19:41:05.000-0800", datetime(2026, 1, 5, 3, 41, 5, tzinfo=UTC)),
        ("2024-02-29T23:59:59.999999+0530", datetime(2024, 2, 29, 18, 29, 59, 999999, tzinfo=UTC)),
    ],
)
def test_salesforce_shapes_parse_to_the_same_utc_instant_as_strptime(
    value: str, expected: datetime
) -> None:
    got = parse_sf_datetime(value)
    assert got == expected == strptime_reference(value)
    assert got is not None and got.utcoffset() == timedelta(0) and got.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-05",  # a date: fromisoformat alone would take it
        "2026-01-05T03:41:05",  # no offset: a naive time is not a Salesforce datetime
        "2026-01-05T03:41:05.000",
        "20260105T034105Z",  # ISO basic format
        "2026-01-05 03:41:05+0000",  # a space for the T
        "2026-01-05T03:41:05.1234567+0000",  # seven fraction digits
        "2026-02-30T00:00:00.000+0000",  # the shape, but no such day
        "2026-01-05T25:00:00.000+0000",
        "2026-01-05T03:41:05.000+00",
        " 2026-01-05T03:41:05.000+0000",
        "yesterday",
    ],
)
def test_anything_else_is_refused_naming_the_value(value: str) -> None:
    with pytest.raises(ValueError, match="not a Salesforce datetime"):
        parse_sf_datetime(value)
    if not value.startswith(" "):  # strptime skips leading spaces; Salesforce sends none
        with pytest.raises(ValueError):
            strptime_reference(value)  # refused before too: nothing accepted was lost


@pytest.mark.parametrize("value", [None, ""])
def test_nothing_is_none(value: str | None) -> None:
    assert parse_sf_datetime(value) is None
