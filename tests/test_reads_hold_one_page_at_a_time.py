"""What a read holds while a page is in use is bounded by the page size, not by the size of a
Bulk API result set or of the run (issue 15: peak memory flat from 1,000 to 1,000,000 accounts).

Nothing here is timed or measured in bytes: the tests count the rows parsed and look at what
the reader still references when it hands a page on.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from connector import allocator, salesforce
from connector.config import SalesforceConfig
from connector.salesforce import ApiUsage, SalesforceSource

PAGE = 200
SET = 5 * PAGE + 37  # a Bulk result set of five pages and a bit


def bulk_csv(rows: int, start: int = 0) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["Id", "AccountId", "Account.Name", "Account.BillingStreet"])
    for i in range(start, start + rows):
        # A quoted field over two lines, as Bulk writes a multi-line address.
        w.writerow([f"801{i:015d}", f"001{i:015d}", f"Name {i}", f"{i} Main St\nSuite {i}"])
    return out.getvalue()


class FakeBulkQuery:
    def __init__(self, sets: list[str]) -> None:
        self.sets = sets

    def query(self, soql: str, *, max_records: int, wait: float) -> Iterator[str]:
        return iter(self.sets)


class FakeSf:
    """simple-salesforce's surface the reads use: `query`, `query_more`, `bulk2.<object>`."""

    def __init__(self, rest_pages: list[dict[str, Any]], bulk_sets: list[str]) -> None:
        self.rest_pages = rest_pages
        self.bulk2 = type("Bulk2", (), {"Order": FakeBulkQuery(bulk_sets)})()

    def query(self, soql: str, **_: Any) -> dict[str, Any]:
        return self.rest_pages[0]

    def query_more(self, url: str, **_: Any) -> dict[str, Any]:
        return self.rest_pages[int(url)]


def source(sf: FakeSf) -> SalesforceSource:
    config = SalesforceConfig(
        auth="access_token", instance_url="http://127.0.0.1:1",
        page_size=PAGE, bulk_page_size=SET, bulk_poll_seconds=0,
    )
    return SalesforceSource(sf=sf, config=config, usage=ApiUsage(), org_id="00D000000000001AAA")  # type: ignore[arg-type]


def test_a_bulk_result_set_is_parsed_a_page_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = [0]
    real = salesforce._from_bulk_csv

    def counting(flat: Any) -> dict[str, Any]:
        parsed[0] += 1
        return real(flat)

    monkeypatch.setattr(salesforce, "_from_bulk_csv", counting)
    pages = source(FakeSf([], [bulk_csv(SET), bulk_csv(SET, SET)])).bulk_pages(
        "SELECT Id, AccountId, Account.Name, Account.BillingStreet FROM Order"
    )
    first = next(pages)
    assert len(first) == PAGE
    # Only the page handed on was parsed, not the rest of its 1,037-row set.
    assert parsed[0] == PAGE
    rest = list(pages)
    assert parsed[0] == 2 * SET
    assert [len(p) for p in rest] == [PAGE] * 4 + [37] + [PAGE] * 5 + [37]
    # Shaped as REST returns the record, the multi-line field whole.
    assert first[3] == {
        "Id": "801000000000000003",
        "AccountId": "001000000000000003",
        "Account": {"Name": "Name 3", "BillingStreet": "3 Main St\nSuite 3"},
    }
    assert rest[-1][-1]["Id"] == f"801{2 * SET - 1:015d}"


def test_the_line_reader_gives_csv_the_same_rows_as_a_file_would() -> None:
    text = bulk_csv(50) + '"801x","001x","quoted ""name""","a\r\nb"\r\n' + "801y,001y,,"
    assert list(csv.reader(salesforce._lines(text))) == list(csv.reader(io.StringIO(text, newline="")))


def test_a_rest_page_handed_on_leaves_the_response_without_its_records() -> None:
    def page(n: int, done: bool, nxt: str | None) -> dict[str, Any]:
        records = [
            {"attributes": {"type": "Order", "url": f"/x/{i}"}, "Id": f"801{n}{i:014d}"}
            for i in range(PAGE)
        ]
        return {"totalSize": 2 * PAGE, "done": done, "nextRecordsUrl": nxt, "records": records}

    responses = [page(0, False, "1"), page(1, True, None)]
    pages = source(FakeSf(responses, [])).query_pages("SELECT Id FROM Order")
    first = next(pages)
    assert len(first) == PAGE and "attributes" not in first[0]
    # While the page is in use (and the next one is prefetched), the reader keeps only the
    # stripped copies, not the response's own record dicts.
    assert "records" not in responses[0]
    second = next(pages)
    assert "records" not in responses[1] and second[-1]["Id"] == f"8011{PAGE - 1:014d}"
    assert next(pages, None) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_is_tuned_on_glibc_unless_the_environment_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    if os.confstr("CS_GNU_LIBC_VERSION") is None:
        pytest.skip("not glibc")
    assert allocator.tune() == {"arena_max": True, "mmap_threshold": True}
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert allocator.tune() == {"mmap_threshold": True}


def test_the_entry_point_tunes_malloc_before_it_imports_the_cli(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import connector.__main__ as entry

    calls: list[str] = []
    monkeypatch.setattr(entry.signals, "install", lambda: calls.append("signals"))
    monkeypatch.setattr(entry.allocator, "tune", lambda: calls.append("malloc") or {})
    import connector.cli

    monkeypatch.setattr(connector.cli, "main", lambda: calls.append("cli"))
    entry.main()
    assert calls == ["signals", "malloc", "cli"]


def test_start_up_objects_are_frozen_once_per_process() -> None:
    """In a fresh interpreter: the first call freezes what is alive, a later one (a daemon's
    next run) freezes nothing more, so a run's own objects stay collectable."""
    import subprocess
    import textwrap

    code = textwrap.dedent(
        """
        import gc
        from connector import allocator
        assert gc.get_freeze_count() == 0
        assert allocator.freeze_startup_objects() is True
        first = gc.get_freeze_count()
        assert first > 0
        later = [[i] for i in range(1000)]  # a run's objects
        assert allocator.freeze_startup_objects() is False
        assert gc.get_freeze_count() == first
        print(first)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0


def test_a_pipeline_freezes_the_start_up_objects(make_config: Any, secrets: Any) -> None:
    import gc

    from connector.app import open_pipeline

    with open_pipeline(make_config(), secrets):
        # Frozen by this pipeline or an earlier one of this test process: never more than once.
        assert gc.get_freeze_count() > 0
        assert allocator.freeze_startup_objects() is False
