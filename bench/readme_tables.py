"""The README's benchmark tables, rendered from the JSON files the benchmarks wrote.

    python bench/readme_tables.py            # rewrite the tables in README.md from bench/results/
    python bench/readme_tables.py --print    # print them instead

The tables sit between the markers `<!-- bench:begin -->` and `<!-- bench:end -->` in the
README's Benchmarks section; nothing outside them is touched, and every figure inside comes
from a file in bench/results/ (named under each table). What this module must never do: make up
or round away a figure that is not in a file (a missing one prints as "-").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
MAX_FILES = 50


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return (
            f"{v:,.3f}".rstrip("0").rstrip(".")
            if abs(v) < 1
            else f"{v:,.2f}".rstrip("0").rstrip(".")
        )
    return f"{v:,}" if isinstance(v, int) else str(v)


def machine_line(m: dict[str, Any]) -> str:
    load = m.get("load_average_1_5_15")
    load_text = f", load average {' / '.join(fmt(x) for x in load)} as it ended" if load else ""
    return (
        f"{m.get('cpu_model') or 'unknown CPU'}, {m.get('cpu_count')} cores, "
        f"{fmt(m.get('memory_gib'))} GiB, CPython {m.get('python')}, connector at "
        f"{m.get('connector_commit') or 'a commit not recorded (see the note)'}{load_text}"
    )


def sync_table(data: dict[str, Any], name: str) -> str:
    p, setup = data["parameters"], data["setup"]
    if p["stripe_endpoint_budget_rps"]:
        levels = (
            f"global {fmt(p['stripe_global_cap_rps'])} req/s, "
            f"endpoints {fmt(p['stripe_endpoint_budget_rps'])} req/s each"
        )
    elif p["stripe_global_cap_rps"]:
        levels = f"global {fmt(p['stripe_global_cap_rps'])} req/s, no per-endpoint level"
    else:
        levels = "no rate limit"
    how = "" if p["sandbox_has_both_levels"] else " (per-endpoint level emulated: see below)"
    out = [
        f"**N = {p['accounts']:,}, {p['stripe_mode']} mode**: Stripe {fmt(p['stripe_latency_s'] * 1000)} ms per "
        f"request, {levels}, burst {fmt(p['stripe_burst'])}{how}; Salesforce "
        f"{fmt(p['salesforce_latency_s'] * 1000)} ms per page; connector paced at "
        f"{fmt(p['connector_rate_rps'])} req/s. Baseline (interpreter and imports): "
        f"{fmt(setup['baseline_rss_mib'])} MiB, {fmt(setup['baseline_cpu_s'])} s CPU. "
        f"Machine: {machine_line(data['machine'])}. (`bench/results/{name}`)",
    ]
    if p.get("note"):
        out.append(f"{p['note']}")
    out += [
        "",
        "| scenario | orders | wall s | effective cap req/s | req/s while writing (÷ cap) | 429s "
        "| Stripe calls per created / updated / unchanged | Salesforce calls (bound) "
        "| CPU ms per record (net of start-up) | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in data["scenarios"]:
        st, r, sf, cp = s["stripe"], s["report"] or {}, s["salesforce"], s["connector_process"]
        per = " / ".join(fmt(st[k]) for k in ("per_created", "per_updated", "per_unchanged"))
        rate = "-"
        if st["achieved_rps_while_writing"]:
            ratio = st["ratio_to_effective_cap_while_writing"]
            rate = fmt(st["achieved_rps_while_writing"]) + (f" ({fmt(ratio)})" if ratio else "")
        exit_note = "" if s["exit_code"] == 0 else f" (exit {s['exit_code']})"
        out.append(
            f"| {s['scenario']}{exit_note} | {fmt(r.get('orders_read'))} | {fmt(s['wall_s'])} "
            f"| {fmt(st['effective_cap_rps'])} | {rate} | {fmt(st['rate_limited'])} | {per} "
            f"| {fmt(sf['total'])} ({fmt(sf['bound'])}) "
            f"| {fmt(cp['cpu_ms_per_record'])} ({fmt(cp['cpu_ms_per_record_net'])}) "
            f"| {fmt(cp['peak_rss_mib'])} |"
        )
    return "\n".join(out) + "\n"


STORE_CASES = (
    ("create", "create: intent, then link + order + intent dropped, per record; page bookkeeping"),
    ("create_batched", "create, batched: `record_many` / `complete_creates` per page"),
    ("unchanged", "unchanged: look-ups and page bookkeeping"),
    ("links_save_one_by_one", "`links.save` one link per call"),
    ("links_save_batched", "`links.save` 200 links per call"),
    ("outcomes_batched", "`runs.record_outcomes` 200 per call"),
)


def store_table(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """One table: a row per case, a CPU and a wall column per (file, backend)."""
    cols = [
        (name, data, backend)
        for name, data in runs
        for backend in ("sqlite", "postgresql")
        if backend in data["results"]
    ]
    head = " | ".join(
        f"{data.get('label') or name} {backend}: CPU / wall ms" for name, data, backend in cols
    )
    out = [
        f"| store call, per record | {head} |",
        "|---|" + "---:|" * len(cols),
    ]
    for case, what in STORE_CASES:
        cells = []
        for _, data, backend in cols:
            figures = data["results"][backend].get(case)
            cells.append(
                f"{fmt(figures['cpu_ms_per_record'])} / {fmt(figures['wall_ms_per_record'])}"
                if figures
                else "-"
            )
        out.append(f"| {what} | " + " | ".join(cells) + " |")
    sources = ", ".join(
        f"`bench/results/{name}` ({fmt(data['parameters']['accounts'])} records, "
        f"{machine_line(data['machine'])})"
        for name, data in runs
    )
    return "\n".join(out) + f"\n\nFrom {sources}.\n"


def render(results: Path = RESULTS) -> str:
    files = sorted(results.glob("*.json"))[:MAX_FILES]
    sync, store = [], []
    for f in files:
        data = json.loads(f.read_text(encoding="utf-8"))
        if data.get("benchmark") == "store_bench":
            store.append((f.name, data))
        elif data.get("benchmark") == "sync_bench" and "stripe_mode" in data.get("parameters", {}):
            sync.append((f.name, data))
    # Smaller runs first, then by latency (highest first), then by name.
    sync.sort(
        key=lambda nd: (
            nd[1]["parameters"]["accounts"],
            -nd[1]["parameters"]["stripe_latency_s"],
            "before" not in nd[0],
            nd[0],
        )
    )
    # "before" first.
    store.sort(key=lambda nd: (nd[1].get("label") != "before", nd[0]))
    parts = ["### End to end (`bench/sync_bench.py`)", ""]
    parts += [sync_table(data, name) for name, data in sync] or ["No result files yet.\n"]
    parts += [
        "### The state store (`bench/store_bench.py`)",
        "",
        store_table(store) if store else "No result files yet.\n",
    ]
    return "\n".join(parts).rstrip() + "\n"


def update_readme(readme: Path, tables: str) -> None:
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} markers in the Benchmarks section")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{tables}{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--print", action="store_true", help="print the tables, leave README.md alone")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of result files")
    ap.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = ap.parse_args(argv)
    tables = render(args.results)
    if args.print:
        sys.stdout.write(tables)
    else:
        update_readme(args.readme, tables)
        print(f"tables rewritten in {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
