"""The benchmark measures what it says: the connector's own peak memory, the effective Stripe
cap of the endpoints a run used, and the Salesforce call bound. (Speed itself is never asserted:
these check the measuring, not the figures.)"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

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
