"""Salesforce ids are checked and put in their 18-character form wherever they enter: the
15-character form in Salesforce URLs and reports gets its case-safe suffix; anything that is not
an id is refused. Checked against the sandbox's own implementation of the suffix, in config
values (salesforce.org_id) and in the rows read from Salesforce."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from connector.config import SecretSource, load_config
from connector.errors import ConfigError
from connector.salesforce import connect
from connector.sandbox.run import SandboxPair
from connector.sandbox.salesforce import id18
from connector.sfid import SalesforceIdError, normalize_sf_id

ALNUM = string.ascii_letters + string.digits


@pytest.mark.parametrize(
    ("given_id", "expected"),
    [
        ("0015000000Gv7qJ", "0015000000Gv7qJAAR"),  # G and J upper-case: bits 0 and 4 of chunk 3
        ("001000000000001", "001000000000001AAA"),  # no letters: AAA
        ("0015000000Gv7qJAAR", "0015000000Gv7qJAAR"),  # already 18: kept
        ("0015000000Gv7qJaar", "0015000000Gv7qJAAR"),  # the suffix is case-insensitive
        ("ABCDEABCDEABCDE", "ABCDEABCDEABCDE555"),  # all upper-case: every bit set
    ],
)
def test_the_15_character_form_gets_salesforces_case_safe_suffix(given_id: str, expected: str) -> None:
    assert normalize_sf_id(given_id) == expected


@given(st.text(alphabet=ALNUM, min_size=15, max_size=15))
def test_normalising_agrees_with_the_sandbox_and_is_idempotent(id15: str) -> None:
    id_18 = normalize_sf_id(id15)

    assert id_18 == id18(id15)
    assert normalize_sf_id(id_18) == id_18 and id_18[:15] == id15


@pytest.mark.parametrize(
    "bad",
    ["", "not-an-id", "001000000000001A", "0010000000000 1", "001000000000001AA9",
     "001000000000001AAAA", "00100000000000é", "001000000000001\n"],
)
def test_what_is_not_an_id_is_refused(bad: str) -> None:
    with pytest.raises(SalesforceIdError):
        normalize_sf_id(bad)


def test_an_id_of_another_object_is_refused_where_an_account_belongs() -> None:
    with pytest.raises(SalesforceIdError, match="must start with 001"):
        normalize_sf_id("801000000000001", prefix="001", what="account id")


def test_the_org_id_in_the_config_is_kept_in_its_18_character_form(
    sandboxes: SandboxPair, tmp_path: Path
) -> None:
    data = sandboxes.config_dict()
    data["salesforce"]["org_id"] = "00D5g000004bXyZ"
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(data, sort_keys=False))
    data["salesforce"]["org_id"] = "00D-not-an-org"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False))
    line = bad.read_text().splitlines().index("  org_id: 00D-not-an-org") + 1

    assert load_config(good).salesforce.org_id == id18("00D5g000004bXyZ")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert (caught.value.file, caught.value.line, caught.value.key) == (bad, line, "salesforce.org_id")


def test_an_order_row_read_with_a_15_character_account_id_is_keyed_by_the_18_character_one(
    sandboxes: SandboxPair, tmp_path: Path
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(sandboxes.config_dict()))
    source = connect(load_config(cfg).salesforce, SecretSource(sandboxes.secrets()))
    # Reports and some integrations hand over the 15-character form; the store keys links by
    # the 18-character one, so a row must never carry the short form.
    record = {"Id": "801000000000010AAA", "AccountId": "0015000000Gv7qJ",
              "ActivatedDate": "2026-01-05T10:00:00.000+0000", "Account": {}}

    row = source._order_row(record, ())

    assert row.account_id == "0015000000Gv7qJAAR"


def test_a_merged_accounts_15_character_master_record_id_is_read_in_its_18_character_form(
    sandboxes: SandboxPair, tmp_path: Path
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(sandboxes.config_dict()))
    source = connect(load_config(cfg).salesforce, SecretSource(sandboxes.secrets()))
    sf = sandboxes.salesforce
    winner = sf.create("Account", {"Name": "Winner Ltd"})
    loser = sf.create("Account", {"Name": "Loser Ltd"})
    sf.merge(winner, [loser])
    # Some orgs' integrations (and getDeleted-style feeds) name the master in the 15-character
    # form; the store keys links by the 18-character one, so a merge must match the winner's link.
    with sf.lock:
        rec = sf._require(sf._object("Account"), loser)
        rec["MasterRecordId"] = winner[:15]

    (merged,) = [d for page in source.deleted_accounts(since=None) for d in page if d.account_id == loser]

    assert merged.master_id == winner and len(winner) == 18
    assert merged.account_id == normalize_sf_id(loser)
