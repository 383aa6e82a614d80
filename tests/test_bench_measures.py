"""The benchmark measures what it says: the connector's own peak memory, the effective Stripe
cap of the endpoints a run used, and the Salesforce call bound. (Speed itself is never asserted:
these check the measuring, not the figures.)"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.readme_tables import fmt  # noqa: E402
from bench.sync_bench import StripeLimits, run_child, salesforce_bound  # noqa: E402

MIB = 1024 * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is read from Linux /proc")
def test_peak_rss_is_the_childs_own_not_the_parents_inherited_high_water_mark(
    tmp_path: Path,
) -> None:
    # This process's high-water mark goes above 300 MiB; a child that only starts Python stays
    # far below it. wait4's ru_maxrss would report at least the parent's mark for the child.
    ballast = b"x" * (300 * MIB)
    parent_peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert parent_peak_mib > 300
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = run_child("this", [], env, tmp_path, timeout=120)
    del ballast
    assert child.exit_code == 0
    assert child.peak_rss_source == "exit"
    assert 1 < child.peak_rss_mib < 100, child.peak_rss_mib


@pytest.mark.parametrize(
    ("limits", "endpoints", "cap"),
    [
        # test mode: the global 25 is the least
        (StripeLimits("test", 25, 25, 5), ["create"], 25),
        (StripeLimits("test", 25, 25, 5), ["create", "update"], 25),
        # live mode with Stripe's default budgets: one endpoint gets 25 of the global 100
        (StripeLimits("live", 100, 25, 5), ["create"], 25),
        (StripeLimits("live", 100, 25, 5), ["create", "update"], 50),
        # endpoints raised to 100: the global cap is the least again
        (StripeLimits("live", 100, 100, 5), ["create", "update"], 100),
        # Search has 20 at most
        (StripeLimits("live", 100, 100, 5), ["search"], 20),
        (StripeLimits("live", 100, 25, 5), ["create", "search"], 45),
        # no per-endpoint level, no global level
        (StripeLimits("live", 100, 0, 5), ["create"], 100),
        (StripeLimits("live", 0, 0, 5), ["create"], None),
    ],
)
def test_effective_cap_is_the_least_of_global_and_summed_endpoint_budgets(
    limits: StripeLimits, endpoints: list[str], cap: float | None
) -> None:
    assert limits.effective_cap(endpoints) == cap


def test_salesforce_bound_counts_pages_writebacks_and_five() -> None:
    assert salesforce_bound(0, 0) == 5
    assert salesforce_bound(1000, 1000) == 1 + 5 + 5
    assert salesforce_bound(10_000, 0) == 5 + 0 + 5
    assert salesforce_bound(10_001, 201) == 6 + 2 + 5


def test_table_figures_print_missing_values_as_a_dash() -> None:
    assert fmt(None) == "-"
    assert fmt(0.9312) == "0.931"
    assert fmt(1234) == "1,234"


def test_a_run_past_the_deadline_is_stopped_and_says_so(tmp_path: Path) -> None:
    import time

    # A connector stand-in that would outlive any benchmark; the deadline has already passed.
    (tmp_path / "forever.py").write_text("import threading\nthreading.Event().wait()\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = run_child("forever", [], env, tmp_path, timeout=600, deadline=time.monotonic())
    assert child.stopped == "deadline"
    assert child.exit_code != 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is read from Linux /proc")
def test_a_running_child_reports_its_progress_with_its_peak_so_far(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.sync_bench as sync_bench

    monkeypatch.setattr(sync_bench, "PROGRESS_EVERY", 0.0)  # every sample
    seen = tmp_path / "seen"
    # A stand-in that runs until the benchmark has reported on it at least once.
    (tmp_path / "until_seen.py").write_text(
        "import pathlib, time\n"
        f"while not pathlib.Path({str(seen)!r}).exists():\n"
        "    time.sleep(0.01)\n"
    )
    reports: list[tuple[float, float, int]] = []

    def progress(elapsed: float, peak_mib: float, requests: int) -> None:
        reports.append((elapsed, peak_mib, requests))
        seen.touch()

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = run_child(
        "until_seen", [], env, tmp_path, timeout=600, stripe_counter=lambda: 7, progress=progress
    )
    assert child.exit_code == 0 and child.stopped is None
    assert reports and all(peak > 0 for _, peak, _ in reports)
    assert reports[-1][1] <= child.peak_rss_mib
    assert all(n == 0 for _, _, n in reports)  # the counter never moved


@pytest.mark.parametrize(
    ("mode", "endpoints", "cap"),
    [("test", ["create"], 25), ("live", ["create"], 25), ("live-raised", ["create"], 100)],
)
def test_mode_presets_are_the_issues_set_ups(mode: str, endpoints: list[str], cap: float) -> None:
    from bench.sync_bench import limits_from, main_parser

    args = main_parser().parse_args(["--mode", mode])
    assert limits_from(args).effective_cap(endpoints) == cap
    assert limits_from(args).burst == 5


def test_an_or_across_objects_is_flagged_and_one_objects_keyset_or_is_not() -> None:
    from bench.soql_shapes import ors_across_objects

    assert ors_across_objects(
        "SELECT Id FROM Order WHERE StatusCode = 'A' AND (SystemModstamp >= 2026-01-01T00:00:00Z"
        " OR Account.SystemModstamp >= 2026-01-01T00:00:00Z)"
    )
    assert not ors_across_objects(
        "SELECT Id FROM Account WHERE SystemModstamp > 2026-01-01T00:00:00Z OR "
        "(SystemModstamp = 2026-01-01T00:00:00Z AND Id > '001000000000001AAA') ORDER BY Id"
    )
    assert not ors_across_objects(
        "SELECT Id FROM Order WHERE AccountId IN ('001A', '001B') AND Account.Name != 'x OR y'"
    )


def _run_file(mode: str, ratio: float | None, failed: int) -> dict[str, object]:
    scenario = {
        "scenario": "backfill",
        "stopped": None,
        "failed_records": failed,
        "report": {},
        "wall_s": 1.0,
        "stripe": {
            "ratio_to_effective_cap_while_writing": ratio,
            "effective_cap_rps": 25.0,
            "rate_limited": 0,
            "total": 10,
        },
        "connector_process": {"peak_rss_mib": 100.0},
    }
    return {
        "parameters": {
            "mode": mode,
            "accounts": 10_000,
            "stripe_latency_s": 0.25,
            "salesforce_latency_s": 0.2,
        },
        "scenarios": [scenario, {**scenario, "scenario": "recheck_after_mapping_change"}],
    }


def test_targets_are_met_only_where_the_figures_show_it() -> None:
    from bench.readme_tables import targets_table

    table = targets_table(
        [("a.json", _run_file("test", 0.95, 0)), ("b.json", _run_file("live", 0.5, 0))]
    )
    rows = {line.split(" | ")[0].strip("| ").split(":")[0]: line for line in table.splitlines()}
    assert rows["test"].endswith("**met** |")
    assert rows["live"].endswith("**not met** |")
    assert rows["live-raised"].endswith("not measured |")
    # A record failed: not met, however fast.
    table = targets_table([("a.json", _run_file("test", 0.95, 1))])
    assert "**not met**" in table.splitlines()[2]


def test_a_million_account_run_cut_short_decides_only_when_already_over_the_limit() -> None:
    from bench.readme_tables import targets_table

    def dry_run(rss: float, stopped: str | None) -> dict[str, object]:
        return {
            "parameters": {
                "mode": "live-raised",
                "accounts": 1_000_000,
                "stripe_latency_s": 0.05,
                "salesforce_latency_s": 0.2,
            },
            "scenarios": [
                {
                    "scenario": "dry_run",
                    "stopped": stopped,
                    "connector_process": {"peak_rss_mib": rss},
                }
            ],
        }

    def verdict(rss: float, stopped: str | None) -> str:
        table = targets_table([("m.json", dry_run(rss, stopped))])
        return next(line for line in table.splitlines() if "dry_run" in line)

    assert verdict(200, None).endswith("**met** |")
    assert verdict(300, None).endswith("**not met** |")
    assert verdict(300, "deadline").endswith("**not met** |")
    assert verdict(200, "deadline").endswith("not measured |")

    # A file taken while its scenario still runs: its peak so far, decided only when over.
    still = {**dry_run(0, None), "scenarios": [], "running": {
        "scenario": "dry_run", "elapsed_s": 60.0, "peak_rss_mib_sampled": 150.0,
        "stripe_requests": 0, "at": "2026-11-30T09:00:00Z"}}
    table = targets_table([("r.json", still)])
    row = next(line for line in table.splitlines() if "dry_run" in line)
    assert "150 MiB so far, still running" in row and row.endswith("not measured |")
    still["running"]["peak_rss_mib_sampled"] = 300.0  # type: ignore[index]
    table = targets_table([("r.json", still)])
    assert next(line for line in table.splitlines() if "dry_run" in line).endswith("**not met** |")


def test_the_chargebee_target_counts_chargebee_calls_through_the_same_scenarios(
    tmp_path: Path,
) -> None:
    # The real benchmark at a tiny N against the Chargebee sandbox: the connector runs as a child
    # process with the config the benchmark wrote, and the calls are the Chargebee sandbox's.
    # The sandbox's bucket holds more requests than the run makes, so no 429 depends on timing.
    import json

    from bench.sync_bench import main

    out = tmp_path / "cb.json"
    code = main(
        [
            "--target", "chargebee", "--accounts", "20", "--chargebee-rpm", "6000",
            "--billing-latency", "0", "--billing-burst", "1000",
            "--scenarios", "backfill,recheck_unchanged",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    data = json.loads(out.read_text())
    assert data["parameters"]["target"] == "chargebee"
    backfill, recheck = data["scenarios"]
    assert backfill["report"]["created"] == 20
    assert data["checks"]["chargebee_customers"] == 20
    assert data["checks"]["accounts_with_customer_id_written_back"] == 20
    cb = backfill["chargebee"]
    assert cb["rate_limited"] == 0
    assert cb["create"] == 20 and cb["per_created"] == 1.0
    assert cb["effective_cap_rps"] == 100.0  # 6000 a minute
    assert cb["endpoints_in_use"] == ["POST /api/v2/customers"]
    assert "stripe" not in backfill
    assert recheck["report"]["unchanged"] == 20
    assert recheck["chargebee"]["total"] == 0 and recheck["chargebee"]["per_unchanged"] == 0.0


def test_chargebee_requests_are_classified_by_endpoint() -> None:
    from bench.sync_bench import _chargebee_endpoint

    assert _chargebee_endpoint("POST", "/api/v2/customers") == "create"
    assert _chargebee_endpoint("GET", "/api/v2/customers?limit=100") == "list"
    assert _chargebee_endpoint("POST", "/api/v2/customers/sf_1") == "update"
    assert _chargebee_endpoint("GET", "/api/v2/customers/sf_1") == "retrieve"
    assert (
        _chargebee_endpoint("POST", "/api/v2/customers/sf_1/update_billing_info")
        == "update_billing_info"
    )


def test_cpu_per_record_files_render_medians_and_say_whether_the_aims_are_met() -> None:
    from bench.readme_tables import cpu_table

    def res(ms: float, least: float, most: float, target: float) -> dict[str, Any]:
        return {
            "ms_per_record": ms,
            "ms_per_record_least": least,
            "ms_per_record_greatest": most,
            "target_ms": target,
            "target_met": ms < target,
        }

    data = {
        "label": "after",
        "machine": {"connector_commit": "abc1234", "load_average_1_5_15": [3.0, 2.0, 1.0]},
        "load_average_1_5_15_after": [4.0, 2.0, 1.0],
        "parameters": {"repeat": 3},
        "results": {
            "backfill": res(0.95, 0.9, 1.1, 1.0),
            "recheck_unchanged": res(0.08, 0.07, 0.09, 0.07),
        },
    }

    table = cpu_table([("cpu-n2000.json", data)])

    row = next(line for line in table.splitlines() if "cpu-n2000.json" in line)
    assert "abc1234" in row and "| 3 / 4 |" in row
    assert "0.95 (0.9-1.1); aim < 1: **met**" in row
    assert "0.08 (0.07-0.09); aim < 0.07: **not met**" in row
