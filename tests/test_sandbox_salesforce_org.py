"""The Salesforce sandbox as an org tests can shape: the Python API, merges as Salesforce does
them, a SystemModstamp that only moves forward, the control API, Bulk 2.0 query, the sample
data set, and a start fast enough for every test to have its own org."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce

from connector.salesforce import loopback_session
from connector.sandbox.salesforce import SalesforceSandbox, id18
from connector.sandbox.sample import (
    ACME_ADOPTED,
    ACME_STRIPE_CUSTOMER,
    DUNDER_MIFFLIN,
    GLOBEX_HOLDINGS,
    PEPPER_POTTS,
    STARK_ORDER,
    STARK_QUOTE,
    UMBRELLA,
    load_sample,
)

CLOCK = datetime(2026, 1, 5, 3, 41, 5, tzinfo=UTC)
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000")
WIN, LOSE1, LOSE2, OTHER = (
    "001000000000001AAA",
    "001000000000002AAA",
    "001000000000003AAA",
    "001000000000004AAA",
)


def merge_data() -> dict[str, list[dict[str, Any]]]:
    return {
        "Account": [
            {"Id": WIN, "Name": "Acme Corp", "Phone": "1"},
            {"Id": LOSE1, "Name": "ACME Corporation", "Stripe_Customer_Id__c": "cus_FromLoser1"},
            {"Id": LOSE2, "Name": "Acme (dup)", "Phone": "3"},
            {"Id": OTHER, "Name": "Child of a loser", "ParentId": LOSE2},
        ],
        "Contact": [
            {"Id": "003000000000001AAA", "AccountId": LOSE1, "LastName": "One"},
            {"Id": "003000000000002AAA", "AccountId": WIN, "LastName": "Two"},
        ],
        "Order": [
            {
                "Id": "801000000000001AAA",
                "AccountId": LOSE1,
                "Status": "Activated",
                "EffectiveDate": "2026-01-01",
            },
            {
                "Id": "801000000000002AAA",
                "AccountId": LOSE2,
                "Status": "Draft",
                "EffectiveDate": "2026-01-01",
            },
            {
                "Id": "801000000000003AAA",
                "AccountId": WIN,
                "Status": "Activated",
                "EffectiveDate": "2026-01-01",
            },
        ],
    }


@pytest.fixture
def org() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox(merge_data(), clock_start=CLOCK) as sb:
        yield sb


def client(sb: SalesforceSandbox) -> Salesforce:
    return Salesforce(
        instance_url=sb.url,
        session_id=sb.access_token,
        session=loopback_session(sb.url),
        version="62.0",
    )


# --- start ------------------------------------------------------------------------------------


def test_the_sample_org_starts_and_answers_well_under_a_second() -> None:
    data = load_sample()["salesforce"]
    t0 = time.perf_counter()
    sb = SalesforceSandbox(data).start()
    try:
        resp = requests.get(f"{sb.url}/services/data/", timeout=5)
        elapsed = time.perf_counter() - t0
    finally:
        sb.stop()
    assert resp.status_code == 200
    assert elapsed < 0.5, f"start took {elapsed:.3f}s"


def test_a_query_round_trip_takes_milliseconds_not_a_delayed_ack() -> None:
    with SalesforceSandbox(load_sample()["salesforce"]) as sb:
        sf = client(sb)
        sf.query("SELECT Id FROM Account")  # connection established
        timings = []
        for _ in range(15):
            t0 = time.perf_counter()
            sf.query("SELECT Id, Name, Account.Name FROM Order WHERE StatusCode = 'Activated'")
            timings.append(time.perf_counter() - t0)
    assert sorted(timings)[len(timings) // 2] < 0.03, timings


# --- the Python API ------------------------------------------------------------------------------


def test_generated_ids_have_the_key_prefix_and_a_valid_case_suffix(org: SalesforceSandbox) -> None:
    acc = org.create("Account", {"Name": "New"})
    contact = org.create("Contact", {"LastName": "X", "AccountId": acc})
    order = org.create(
        "Order", {"AccountId": acc, "Status": "Draft", "EffectiveDate": "2026-01-01"}
    )
    quote = org.create("SBQQ__Quote__c", {"SBQQ__Account__c": acc})

    for rid, prefix in ((acc, "001"), (contact, "003"), (order, "801"), (quote, "a0X")):
        assert rid.startswith(prefix) and len(rid) == 18 and rid == id18(rid[:15])
    assert org.get("Contact", contact)["Name"] == "X"
    assert re.fullmatch(r"\d{8}", org.get("Order", order)["OrderNumber"])
    assert org.get("SBQQ__Quote__c", quote)["Name"].startswith("Q-")


def test_records_may_refer_to_each_other_by_15_or_18_character_ids() -> None:
    with SalesforceSandbox(
        {
            "Account": [
                {"Id": "001000000000001", "Name": "P"},
                {"Id": "001000000000002AAA", "Name": "C", "ParentId": "001000000000001"},
            ]
        }
    ) as sb:
        child = sb.get("Account", "001000000000002")
        assert child is not None and child["ParentId"] == "001000000000001AAA"
        rows = client(sb).query("SELECT Parent.Name FROM Account WHERE Id = '001000000000002AAA'")[
            "records"
        ]
        assert rows[0]["Parent"]["Name"] == "P"


def test_get_includes_deleted_records_and_records_hides_them_unless_asked(
    org: SalesforceSandbox,
) -> None:
    org.delete("Account", OTHER)

    assert org.get("Account", OTHER)["IsDeleted"] is True
    assert org.get("Account", "001000000000999AAA") is None
    assert OTHER not in {r["Id"] for r in org.records("Account")}
    assert OTHER in {r["Id"] for r in org.records("Account", include_deleted=True)}
    org.undelete("Account", OTHER)
    assert org.get("Account", OTHER)["IsDeleted"] is False


def test_unknown_objects_and_fields_are_refused_by_the_python_api(org: SalesforceSandbox) -> None:
    with pytest.raises(ValueError, match="Opportunity"):
        org.create("Opportunity", {"Name": "x"})
    with pytest.raises(ValueError, match="Nmae"):
        org.update("Account", WIN, {"Nmae": "x"})
    with pytest.raises(ValueError, match="Opportunity"):
        org.load({"Opportunity": []})
    with pytest.raises(ValueError, match="SystemModstamp cannot be updated"):
        org.update("Account", WIN, {"SystemModstamp": "2020-01-01T00:00:00.000+0000"})
    with pytest.raises(ValueError, match="IsDeleted cannot be updated"):
        org.update("Account", WIN, {"IsDeleted": True})


def test_load_replaces_the_data_and_reset_returns_to_the_initial_data(
    org: SalesforceSandbox,
) -> None:
    org.create("Account", {"Name": "Extra"})
    org.load({"Account": [{"Name": "Only one"}]})
    assert [r["Name"] for r in org.records("Account")] == ["Only one"]
    assert org.records("Order") == []

    org.reset()
    assert {r["Id"] for r in org.records("Account")} == {WIN, LOSE1, LOSE2, OTHER}


# --- SystemModstamp ------------------------------------------------------------------------------


def _all_stamps(sb: SalesforceSandbox) -> list[str]:
    return [
        r["SystemModstamp"]
        for name in ("Account", "Contact", "Order")
        for r in sb.records(name, include_deleted=True)
    ]


def test_every_change_moves_system_modstamp_strictly_forward_across_the_org(
    org: SalesforceSandbox,
) -> None:
    stamps = _all_stamps(org)
    assert all(STAMP.fullmatch(s) for s in stamps)
    assert len(set(stamps)) == len(stamps)  # a bulk load gets distinct stamps too
    seen = [max(stamps)]
    for change in (
        lambda: org.update("Account", WIN, {"Phone": "2"}),
        lambda: org.update("Contact", "003000000000002AAA", {"Email": "two@acme.example"}),
        lambda: org.create("Account", {"Name": "New"}),
        lambda: org.delete("Order", "801000000000003AAA"),
        lambda: org.undelete("Order", "801000000000003AAA"),
    ):
        change()
        latest = max(_all_stamps(org))
        assert latest > seen[-1]
        seen.append(latest)
    assert org.get("Account", WIN)["LastModifiedDate"] == org.get("Account", WIN)["SystemModstamp"]


def test_concurrent_writes_through_rest_get_distinct_increasing_stamps(
    org: SalesforceSandbox,
) -> None:
    ids = [org.create("Account", {"Name": f"Parallel {i}"}) for i in range(8)]
    before = max(_all_stamps(org))

    def work(rid: str) -> list[str]:
        sf = client(org)
        stamps = []
        for n in range(10):
            sf.Account.update(rid, {"Phone": str(n)})
            stamps.append(org.get("Account", rid)["SystemModstamp"])
        return stamps

    with ThreadPoolExecutor(max_workers=8) as pool:
        per_thread = list(pool.map(work, ids))

    for stamps in per_thread:
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    finals = [org.get("Account", rid)["SystemModstamp"] for rid in ids]
    assert len(set(finals)) == len(finals) and min(finals) > before
    assert org.api_calls_used == 80


def test_advance_clock_moves_time_and_reset_never_moves_it_back(org: SalesforceSandbox) -> None:
    before = datetime.strptime(org.now(), "%Y-%m-%dT%H:%M:%S.000+0000")
    org.advance_clock(3600)
    org.update("Account", WIN, {"Phone": "9"})
    stamp = datetime.strptime(
        org.get("Account", WIN)["SystemModstamp"], "%Y-%m-%dT%H:%M:%S.000+0000"
    )
    assert stamp - before >= timedelta(seconds=3600)

    org.reset()  # the data comes back with new stamps, after everything before
    assert min(_all_stamps(org)) > stamp.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def test_a_fixed_clock_start_makes_stamps_deterministic() -> None:
    a = SalesforceSandbox(merge_data(), clock_start=CLOCK)
    b = SalesforceSandbox(merge_data(), clock_start=CLOCK)
    assert _all_stamps(a) == _all_stamps(b)
    assert a.get("Account", WIN)["CreatedDate"] == "2026-01-05T03:41:05.000+0000"


def test_without_a_clock_start_stamps_follow_the_wall_clock() -> None:
    sb = SalesforceSandbox(merge_data())
    now = datetime.now(UTC)
    newest = datetime.strptime(max(_all_stamps(sb)), "%Y-%m-%dT%H:%M:%S.000+0000").replace(
        tzinfo=UTC
    )
    assert abs((newest - now).total_seconds()) < 5


def test_given_stamps_are_kept_and_later_changes_come_after_them() -> None:
    future = "2030-01-01T00:00:00.000+0000"
    sb = SalesforceSandbox(
        {
            "Account": [
                {
                    "Id": WIN,
                    "Name": "A",
                    "SystemModstamp": future,
                    "CreatedDate": "2029-01-01T00:00:00Z",
                }
            ]
        }
    )
    assert sb.get("Account", WIN)["SystemModstamp"] == future
    assert sb.get("Account", WIN)["CreatedDate"] == "2029-01-01T00:00:00.000+0000"
    sb.update("Account", WIN, {"Phone": "1"})
    assert sb.get("Account", WIN)["SystemModstamp"] > future


# --- merge ---------------------------------------------------------------------------------------


def test_merge_deletes_losers_reparents_children_and_keeps_chosen_values(
    org: SalesforceSandbox,
) -> None:
    before = {
        name: {r["Id"]: r["SystemModstamp"] for r in org.records(name)}
        for name in ("Account", "Contact", "Order")
    }

    org.merge(WIN, [LOSE1, LOSE2], keep_from={"Stripe_Customer_Id__c": LOSE1})

    winner = org.get("Account", WIN)
    assert (
        winner["Stripe_Customer_Id__c"] == "cus_FromLoser1"
        and winner["Phone"] == "1"
        and not winner["IsDeleted"]
    )
    assert winner["SystemModstamp"] > before["Account"][WIN]
    for loser in (LOSE1, LOSE2):
        rec = org.get("Account", loser)
        assert rec["IsDeleted"] is True and rec["MasterRecordId"] == WIN
        assert rec["SystemModstamp"] > before["Account"][loser]
    for oid in ("801000000000001AAA", "801000000000002AAA"):
        assert org.get("Order", oid)["AccountId"] == WIN
        assert org.get("Order", oid)["SystemModstamp"] > before["Order"][oid]
    assert org.get("Contact", "003000000000001AAA")["AccountId"] == WIN
    assert org.get("Account", OTHER)["ParentId"] == WIN
    # untouched records keep their stamp
    assert (
        org.get("Order", "801000000000003AAA")["SystemModstamp"]
        == before["Order"]["801000000000003AAA"]
    )
    assert (
        org.get("Contact", "003000000000002AAA")["SystemModstamp"]
        == before["Contact"]["003000000000002AAA"]
    )


def test_merged_losers_show_only_in_query_all_with_master_record_id(org: SalesforceSandbox) -> None:
    org.merge(WIN, [LOSE1])
    sf = client(org)

    assert LOSE1 not in {r["Id"] for r in sf.query("SELECT Id FROM Account")["records"]}
    rows = sf.query(
        "SELECT Id, MasterRecordId, MasterRecord.Name FROM Account "
        "WHERE IsDeleted = true AND MasterRecordId != null",
        include_deleted=True,
    )["records"]
    assert [(r["Id"], r["MasterRecordId"], r["MasterRecord"]["Name"]) for r in rows] == [
        (LOSE1, WIN, "Acme Corp")
    ]
    orders = sf.query(f"SELECT Id FROM Order WHERE AccountId = '{WIN}'")["records"]
    assert len(orders) == 2


def test_deleted_and_updated_resources_list_ids_changed_in_a_window(org: SalesforceSandbox) -> None:
    sf = client(org)
    org.advance_clock(3600)
    start = datetime.strptime(org.now(), "%Y-%m-%dT%H:%M:%S.000+0000").replace(tzinfo=UTC)
    org.merge(WIN, [LOSE1])
    end = start + timedelta(hours=1)

    deleted = sf.Account.deleted(start, end)
    assert [d["id"] for d in deleted["deletedRecords"]] == [LOSE1]
    assert (
        deleted["deletedRecords"][0]["deletedDate"] == org.get("Account", LOSE1)["SystemModstamp"]
    )
    assert set(sf.Account.updated(start, end)["ids"]) == {WIN}
    assert set(sf.Order.updated(start, end)["ids"]) == {"801000000000001AAA"}
    assert (
        sf.Account.deleted(start - timedelta(days=1), start - timedelta(hours=2))["deletedRecords"]
        == []
    )


@pytest.mark.parametrize(
    ("winner", "losers", "keep", "message"),
    [
        (WIN, [LOSE1, LOSE2, OTHER], None, "one or two losers"),
        (WIN, [], None, "one or two losers"),
        (WIN, [WIN], None, "cannot also be a loser"),
        (WIN, ["001000000000999AAA"], None, "no Account"),
        (WIN, [LOSE1], {"Stripe_Customer_Id__c": LOSE2}, "not a loser"),
        (WIN, [LOSE1], {"SystemModstamp": LOSE1}, "cannot keep"),
        ("801000000000001AAA", ["801000000000002AAA"], None, "cannot be merged"),
    ],
)
def test_merges_salesforce_would_refuse_are_refused(
    org: SalesforceSandbox,
    winner: str,
    losers: list[str],
    keep: dict[str, str] | None,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        org.merge(winner, losers, keep_from=keep)
    assert not org.get("Account", LOSE1)["IsDeleted"]


def test_contacts_merge_too_and_orders_follow_the_surviving_contact(org: SalesforceSandbox) -> None:
    one, two = "003000000000001AAA", "003000000000002AAA"
    order = org.create(
        "Order",
        {
            "AccountId": WIN,
            "Status": "Draft",
            "EffectiveDate": "2026-01-01",
            "BillToContactId": two,
        },
    )

    org.merge(one, [two])

    assert org.get("Contact", two)["MasterRecordId"] == one and org.get("Contact", two)["IsDeleted"]
    assert org.get("Order", order)["BillToContactId"] == one


def test_a_deleted_loser_cannot_be_merged_again(org: SalesforceSandbox) -> None:
    org.merge(WIN, [LOSE1])
    with pytest.raises(ValueError, match="already deleted"):
        org.merge(WIN, [LOSE1])


# --- control API -----------------------------------------------------------------------------------


def test_control_api_shapes_the_org_without_counting_api_calls(org: SalesforceSandbox) -> None:
    base = f"{org.url}/_sandbox"
    made = requests.post(f"{base}/records/Account", json={"Name": "Via control"}, timeout=5).json()
    assert made["ok"] is True and made["id"].startswith("001")
    assert requests.patch(
        f"{base}/records/Account/{made['id']}", json={"Phone": "7"}, timeout=5
    ).json() == {"ok": True}
    assert org.get("Account", made["id"])["Phone"] == "7"
    assert requests.post(
        f"{base}/merge",
        json={"winner": WIN, "losers": [LOSE1], "keep_from": {"Stripe_Customer_Id__c": LOSE1}},
        timeout=5,
    ).ok
    assert org.get("Account", WIN)["Stripe_Customer_Id__c"] == "cus_FromLoser1"
    bad = requests.post(f"{base}/merge", json={"winner": WIN, "losers": [LOSE1]}, timeout=5)
    assert bad.status_code == 400 and "already deleted" in bad.json()["error"]

    broken = requests.post(f"{base}/merge", data=b"{not json", timeout=5)
    assert broken.status_code == 400 and broken.json()["ok"] is False
    assert (
        requests.post(f"{base}/load", json={"Account": [{"Name": "Loaded"}]}, timeout=5).json()[
            "records"
        ]["Account"]
        == 1
    )
    assert [r["Name"] for r in org.records("Account")] == ["Loaded"]
    assert requests.post(f"{base}/reset", timeout=5).ok
    assert len(org.records("Account")) == 4
    assert (
        requests.post(f"{base}/clock", json={"advance": 60}, timeout=5).json()["now"]
        > org.get("Account", WIN)["SystemModstamp"]
    )
    assert org.api_calls_used == 0

    sf = client(org)
    sf.query("SELECT Id FROM Account")
    assert requests.post(f"{base}/expire_sessions", timeout=5).ok
    assert (
        requests.get(
            f"{org.url}/services/data/v62.0/limits",
            headers={"Authorization": f"Bearer {org.access_token}"},
            timeout=5,
        ).status_code
        == 401
    )
    assert requests.post(f"{base}/daily_limit", json={"max": 10}, timeout=5).json()["max"] == 10
    stats = requests.get(f"{base}/stats", timeout=5).json()
    assert stats["api_usage"] == {"used": 1, "max": 10} and stats["records"]["Account"] == 4


def test_faults_from_the_shared_base_apply_to_salesforce_calls(org: SalesforceSandbox) -> None:
    sf = client(org)
    org.inject_fault(
        status=503,
        path="/query",
        body=[{"errorCode": "SERVER_UNAVAILABLE", "message": "try later"}],
    )
    with pytest.raises(Exception) as err:
        sf.query("SELECT Id FROM Account")
    assert getattr(err.value, "status", None) == 503
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 4

    org.inject_fault(drop="after", method="PATCH", path="/sobjects/Account/")
    with pytest.raises(requests.ConnectionError):
        sf.Account.update(WIN, {"Phone": "applied"})
    assert org.get("Account", WIN)["Phone"] == "applied"


# --- Bulk API 2.0 query ------------------------------------------------------------------------------


def test_bulk2_query_returns_csv_pages_with_locators() -> None:
    data = {
        "Account": [
            {"Name": f"Bulk {i:03d}", "BillingCountry": "DE" if i % 2 else None} for i in range(250)
        ]
    }
    with SalesforceSandbox(data) as sb:
        sf = client(sb)
        pages = list(
            sf.bulk2.Account.query(
                "SELECT Id, Name, BillingCountry FROM Account ORDER BY Name",
                max_records=100,
                wait=0,
            )
        )

    assert len(pages) == 3
    rows = [row for page in pages for row in csv.DictReader(io.StringIO(page))]
    assert len(rows) == 250 and list(rows[0]) == ["Id", "Name", "BillingCountry"]
    assert (
        rows[0]["Name"] == "Bulk 000"
        and rows[1]["BillingCountry"] == "DE"
        and rows[0]["BillingCountry"] == ""
    )
    assert pages[0].startswith('"Id","Name","BillingCountry"\n"001')


def test_bulk2_csv_writes_datetimes_in_z_form_and_flattens_relationships(
    org: SalesforceSandbox,
) -> None:
    [page] = client(org).bulk2.Order.query(
        "SELECT Id, Account.Name, ActivatedDate, SystemModstamp FROM Order WHERE StatusCode = 'Activated' ORDER BY Id",
        wait=0,
    )
    rows = list(csv.DictReader(io.StringIO(page)))

    assert list(rows[0]) == ["Id", "Account.Name", "ActivatedDate", "SystemModstamp"]
    assert rows[0]["Account.Name"] == "ACME Corporation"
    stamp = org.get("Order", rows[0]["Id"])["SystemModstamp"]
    assert rows[0]["SystemModstamp"] == stamp.replace("+0000", "Z")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z", rows[0]["ActivatedDate"])


def test_bulk2_query_of_bad_soql_is_refused(org: SalesforceSandbox) -> None:
    from simple_salesforce.exceptions import SalesforceMalformedRequest

    with pytest.raises(SalesforceMalformedRequest):
        list(client(org).bulk2.Account.query("SELECT COUNT() FROM Account", wait=0))


# --- the sample data set -----------------------------------------------------------------------------


def test_sample_data_has_the_shapes_the_connector_must_cope_with() -> None:
    sample = load_sample()
    sb = SalesforceSandbox(sample["salesforce"])
    accounts = {a["Id"]: a for a in sb.records("Account")}
    orders = sb.records("Order")
    activated = [o for o in orders if o["StatusCode"] == "Activated"]
    billed = {o["AccountId"] for o in activated}

    assert len(accounts) >= 24
    assert {o["StatusCode"] for o in orders} == {"Draft", "Activated"}
    children = [a for a in accounts.values() if a["ParentId"] == GLOBEX_HOLDINGS]
    assert GLOBEX_HOLDINGS not in {o["AccountId"] for o in orders} and children
    assert all(c["Id"] in billed for c in children)
    assert sum(1 for o in activated if o["AccountId"] == UMBRELLA) == 3
    assert sum(1 for o in activated if o["BillToContactId"]) > len(activated) / 2
    assert any(not o["BillToContactId"] for o in activated if o["AccountId"] == DUNDER_MIFFLIN)
    countries = {a["BillingCountry"] for a in accounts.values()}
    assert {"United States", "Germany", "US", "DE"} <= countries
    assert any(v != v.strip() for a in accounts.values() for v in a.values() if isinstance(v, str))
    assert all(c["Email"] is None or "@" in c["Email"] for c in sb.records("Contact"))
    assert accounts[ACME_ADOPTED]["Stripe_Customer_Id__c"] == ACME_STRIPE_CUSTOMER
    assert {"id": ACME_STRIPE_CUSTOMER, "metadata": {}}.items() <= next(
        c for c in sample["stripe"]["customers"] if c["id"] == ACME_STRIPE_CUSTOMER
    ).items()
    quote = sb.get("SBQQ__Quote__c", STARK_QUOTE)
    assert (
        sb.get("Order", STARK_ORDER)["SBQQ__Quote__c"] == STARK_QUOTE
        and quote["SBQQ__PrimaryContact__c"] == PEPPER_POTTS
    )


def test_load_sample_returns_a_fresh_copy_each_time() -> None:
    first = load_sample()
    first["salesforce"]["Account"].clear()
    assert load_sample()["salesforce"]["Account"]
