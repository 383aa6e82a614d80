"""The shortcuts on the per-record path of a mapping give the answers the plain code gave:
control characters, country names and source paths."""

from __future__ import annotations

import pytest

from connector.mapping.compile import read_source
from connector.mapping.countries import to_alpha2
from connector.mapping.transforms import _CONTROL, strip_control


@pytest.mark.parametrize(
    "value",
    ["Acme Corp", "", "tab\there", "line\nbreak\r\n", "nul\x00byte", "del\x7f", "bell\x07",
     "Curaçao", "東京", "lone \ud800 surrogate", "\x1f", "  spaced  "],
)
def test_strip_control_drops_what_the_pattern_drops(value: str) -> None:
    assert strip_control(value) == _CONTROL.sub("", value)


@pytest.mark.parametrize(
    ("text", "code"),
    [("Germany", "DE"), ("germany", "DE"), ("U.S.A.", "US"), ("GB", "GB"), ("Curaçao", "CW"),
     ("Atlantis", ""), ("x" * 201, "")],
)
def test_country_names_give_the_same_code_every_time(text: str, code: str) -> None:
    assert to_alpha2(text) == to_alpha2(text) == code


def test_source_paths_read_case_insensitively_and_stop_at_empty_lookups() -> None:
    record = {"Id": "801A", "Account": {"Name": "Acme", "Parent": None}, "BillToContact": None,
              "TotalAmount": 12.5, "IsReductionOrder": False}
    assert read_source(record, "Account.Name") == "Acme"
    assert read_source(record, "Order.Account.name") == "Acme"  # SOQL names ignore case
    assert read_source(record, "Account.Parent.Name") == ""
    assert read_source(record, "Order.BillToContact.Email") == ""
    assert read_source(record, "Order.TotalAmount") == "12.5"
    assert read_source(record, "Order.IsReductionOrder") == "false"
    assert read_source(record, "Account.Name.Length") == ""  # text is not a record
