"""Sync benchmark: how fast and how lean the connector is against the local sandboxes.

It starts the sandbox Salesforce org and Stripe account in this process, loads N accounts that
each have one activated order (and a bill-to contact), and runs the real connector as a child
process (`python -m connector ... --json`, config file and env secrets) four times:

1. backfill: every account gets a customer;
2. sync with nothing changed;
3. sync after 1% of the accounts changed (a new phone number);
4. sync after a mapping change (a static metadata field added in a copy of mappings/), which
   re-checks every linked account and updates every customer.

Per scenario it records wall time, orders per second, Stripe requests per created / updated /
unchanged account, the Stripe request rate achieved against the sandbox's cap, Salesforce calls
per 1,000 orders, 429s, and the connector process's peak RSS and CPU time, and writes them
with the machine's description to `--out` as JSON. `--summarize FILE...` prints the README
table from result files, so every figure there comes from a file this script wrote.

Why a child process: its peak RSS (from `wait4`) is the connector's alone, not the sandboxes'
data or this script's; and the sandboxes' HTTP threads do not compete with the connector for
one GIL, as they would in-process. The price is the interpreter start and imports (about two
seconds here), which the wall time includes and the baseline figures show.

What it must never do: contact anything but 127.0.0.1. The sandboxes bind loopback only, the
config points both services there, and the child gets sandbox secrets and nothing else from
the SALESFORCE_* / STRIPE_* environment.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from connector.sandbox.run import SandboxPair, start_sandboxes  # noqa: E402
from connector.sandbox.salesforce import id18  # noqa: E402
from connector.shipped import default_mappings_dir  # noqa: E402

MAX_ACCOUNTS = 200_000  # the loops below are bounded by this
SAMPLE_EVERY = 0.02  # seconds between samples of the Stripe sandbox's request counter
MIN_FOR_RATE = 50  # Stripe requests below which no "while writing" rate is reported
BASELINE_IMPORTS = "import connector.cli, connector.app, connector.engine"  # what every run loads


# --- the org -------------------------------------------------------------------------------


def account_id(i: int) -> str:
    return id18(f"001Bn{i:010d}")


def build_org(n: int) -> dict[str, list[dict[str, Any]]]:
    """N accounts, each with a bill-to contact and one activated order, as one `load()` dict."""
    countries = ("Germany", "United States", "GB", "France", "Japan")
    accounts, contacts, orders = [], [], []
    for i in range(n):
        acc = account_id(i)
        con = id18(f"003Bn{i:010d}")
        accounts.append(
            {
                "Id": acc,
                "Name": f"Bench Customer {i:06d}",
                "Type": "Customer - Direct",
                "Industry": "Technology",
                "BillingStreet": f"{i} Bench Street",
                "BillingCity": "Berlin",
                "BillingPostalCode": f"{10000 + i % 90000}",
                "BillingCountry": countries[i % len(countries)],
                "Phone": f"+49 30 {i:07d}",
            }
        )
        contacts.append(
            {
                "Id": con,
                "AccountId": acc,
                "FirstName": "Bill",
                "LastName": f"Payer {i}",
                "Email": f"billing{i}@bench.example",
            }
        )
        orders.append(
            {
                "Id": id18(f"801Bn{i:010d}"),
                "AccountId": acc,
                "BillToContactId": con,
                "Name": f"Bench order {i}",
                "Status": "Activated",
                "EffectiveDate": "2026-01-01",
            }
        )
    return {"Account": accounts, "Contact": contacts, "Order": orders}


def change_accounts(pair: SandboxPair, n: int, share: float) -> list[str]:
    """Give `share` of the accounts (spread evenly) a new phone number; returns their ids."""
    count = max(1, round(n * share))
    step = max(1, n // count)
    changed = [account_id(i) for i in range(0, n, step)][:count]
    for acc in changed:
        pair.salesforce.update("Account", acc, {"Phone": "+1 415 555 0100"})
    return changed


def changed_mappings(workdir: Path) -> Path:
    """A copy of the shipped mappings with one static metadata field added (a mapping change)."""
    target = workdir / "mappings-changed"
    shutil.copytree(default_mappings_dir(), target)
    with (target / "customer.yaml").open("a", encoding="utf-8") as f:
        f.write('\n  metadata.bench_mapping:\n    value: "v2"\n')
    return target


# --- running the connector -------------------------------------------------------------------


@dataclass
class ChildRun:
    exit_code: int
    wall_s: float
    report: dict[str, Any] | None
    peak_rss_mib: float
    cpu_s: float
    stderr_tail: str
    stripe_first_s: float | None  # first and last Stripe request, seconds after the start
    stripe_last_s: float | None


def child_env(pair: SandboxPair) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "STRIPE_"))}
    env.update(pair.secrets())
    env["PYTHONPATH"] = str(REPO)
    return env


def run_child(
    argv: list[str],
    env: Mapping[str, str],
    workdir: Path,
    *,
    timeout: float,
    stripe_counter: Any = None,
) -> ChildRun:
    """Run one child to completion (or kill it at `timeout`), with its own rusage from wait4."""
    out_path, err_path = workdir / "child.out", workdir / "child.err"
    samples: list[tuple[float, int]] = []
    done = threading.Event()
    start = time.monotonic()

    def sample() -> None:
        # Bounded by the child's lifetime and the timeout.
        while not done.wait(SAMPLE_EVERY) and time.monotonic() - start < timeout + 5:
            samples.append((time.monotonic() - start, stripe_counter()))

    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=dict(env), cwd=workdir)
        sampler = threading.Thread(target=sample, daemon=True) if stripe_counter else None
        if sampler:
            sampler.start()
        status, usage = 0, None
        while time.monotonic() - start < timeout:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.01)
        else:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(
            status
        )  # reaped here; Popen must not wait again
        done.set()
        if sampler:
            sampler.join(timeout=5)
    stdout = out_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    report = None
    if stdout:
        try:
            report = json.loads(stdout[-1])
        except json.JSONDecodeError:
            report = None
    first = last = None
    if samples:
        base = samples[0][1]
        moved = [t for t, c in samples if c > base]
        if moved:
            first = moved[0] - SAMPLE_EVERY  # the counter moved within the last interval
            last = next(t for t, c in samples if c == samples[-1][1])
    return ChildRun(
        exit_code=proc.returncode,
        wall_s=wall,
        report=report,
        peak_rss_mib=usage.ru_maxrss / 1024 if usage else 0.0,  # Linux: kilobytes
        cpu_s=(usage.ru_utime + usage.ru_stime) if usage else 0.0,
        stderr_tail=err_path.read_text(encoding="utf-8", errors="replace")[-2000:],
        stripe_first_s=first,
        stripe_last_s=last,
    )


def write_config(
    pair: SandboxPair, workdir: Path, name: str, *, mappings: Path, args: argparse.Namespace
) -> Path:
    cfg = pair.config_dict(
        state_url=f"sqlite:///{workdir / 'state.db'}", mappings_dir=str(mappings)
    )
    cfg["salesforce"]["page_size"] = args.page_size
    cfg["billing"]["accounts"][0]["max_requests_per_second"] = args.connector_rate
    cfg["log"] = {"level": "warning", "format": "json"}
    path = workdir / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


# --- measuring ------------------------------------------------------------------------------


def stripe_counts(pair: SandboxPair) -> dict[str, int]:
    """Stripe requests by kind, counted by the sandbox on arrival (429s included)."""
    stats = pair.stripe.stats()
    out = {
        "total": 0,
        "create": 0,
        "update": 0,
        "other": 0,
        "rate_limited": int(stats["rate_limited"]),
    }
    for key, n in stats["requests"].items():
        method, _, path = key.partition(" ")
        kind = (
            "create"
            if (method, path.rstrip("/")) == ("POST", "/v1/customers")
            else "update"
            if method == "POST" and path.startswith("/v1/customers/") and "/search" not in path
            else "other"
        )
        out[kind] += n
        out["total"] += n
    return out


def salesforce_counts(pair: SandboxPair) -> dict[str, int]:
    stats = pair.salesforce.stats()
    out = {
        "total": 0,
        "query": 0,
        "writeback": 0,
        "other": 0,
        "rate_limited": int(stats["rate_limited"]),
    }
    for key, n in stats["requests"].items():
        kind = (
            "query" if "/query" in key else "writeback" if "composite/sobjects" in key else "other"
        )
        out[kind] += n
        out["total"] += n
    return out


def _delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def _per(num: float, den: float, scale: float = 1.0) -> float | None:
    return round(num * scale / den, 3) if den else None


def scenario(
    name: str,
    what: str,
    pair: SandboxPair,
    argv: list[str],
    env: Mapping[str, str],
    workdir: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    stripe_before, sf_before = stripe_counts(pair), salesforce_counts(pair)
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    ops = pair.stripe.operations

    def stripe_counter() -> int:
        # Cheap to read while requests run: a handful of keys, unlike the per-path request counts.
        return sum(ops.values()) + pair.stripe.rate_limited

    child = run_child(argv, env, workdir, timeout=args.timeout, stripe_counter=stripe_counter)
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    stripe = _delta(stripe_counts(pair), stripe_before)
    sf = _delta(salesforce_counts(pair), sf_before)
    r = child.report or {}
    orders, created, updated, unchanged = (
        r.get(k, 0) for k in ("orders_read", "created", "updated", "unchanged")
    )
    window = (
        (child.stripe_last_s - child.stripe_first_s)
        if child.stripe_first_s is not None and child.stripe_last_s
        else None
    )
    rate_wall = stripe["total"] / child.wall_s if child.wall_s else 0.0
    # A window measured by sampling every SAMPLE_EVERY seconds means little for a few requests.
    rate_window = stripe["total"] / window if window and stripe["total"] >= MIN_FOR_RATE else None
    result = {
        "scenario": name,
        "what": what,
        "command": " ".join(argv[2:]),
        "exit_code": child.exit_code,
        "report": child.report,
        "wall_s": round(child.wall_s, 3),
        "orders_per_s": round(orders / child.wall_s, 1) if child.wall_s else None,
        "stripe": {
            **stripe,
            "per_created": _per(stripe["create"], created),
            "per_updated": _per(stripe["update"], updated),
            # Every request that is neither a create nor an update, charged to the unchanged
            # accounts: exact when nothing was written, an upper bound otherwise.
            "per_unchanged": _per(stripe["other"], unchanged),
            "achieved_rps_over_wall": round(rate_wall, 1),
            "achieved_rps_while_writing": round(rate_window, 1) if rate_window else None,
            "writing_window_s": round(window, 3) if window else None,
            "ratio_to_cap_over_wall": round(rate_wall / args.stripe_cap, 3)
            if args.stripe_cap
            else None,
            "ratio_to_cap_while_writing": round(rate_window / args.stripe_cap, 3)
            if rate_window and args.stripe_cap
            else None,
            "ratio_to_connector_rate_while_writing": round(rate_window / args.connector_rate, 3)
            if rate_window
            else None,
            # Lower bounds on the writing time from the sandbox's latency and the connector's pacing.
            "latency_floor_s": round(stripe["total"] * args.stripe_latency, 2),
            "pacing_floor_s": round(stripe["total"] / args.connector_rate, 2),
        },
        "salesforce": {**sf, "per_1000_orders": _per(sf["total"], orders, 1000)},
        "connector_process": {
            "peak_rss_mib": round(child.peak_rss_mib, 1),
            "cpu_s": round(child.cpu_s, 2),
            "cpu_share_of_wall": round(child.cpu_s / child.wall_s, 3) if child.wall_s else None,
        },
        "sandboxes_cpu_s": round(
            (self_after.ru_utime + self_after.ru_stime)
            - (self_before.ru_utime + self_before.ru_stime),
            2,
        ),
    }
    if child.exit_code != 0:
        result["stderr_tail"] = child.stderr_tail
    return result


def machine() -> dict[str, Any]:
    mem_kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "connector_commit": commit,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# --- the benchmark ----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = datetime.now(UTC)
    pair = start_sandboxes()
    workdir = Path(tempfile.mkdtemp(prefix="sync-bench-"))
    try:
        t0 = time.monotonic()
        pair.salesforce.load(build_org(args.accounts))  # replaces the sample org
        pair.stripe.reset()  # no customers, no counts; latency and cap are set below
        load_s = time.monotonic() - t0
        pair.stripe.set_latency(args.stripe_latency)
        pair.stripe.set_rate_limit(args.stripe_cap or None, burst=1)
        pair.salesforce.set_latency(args.salesforce_latency)
        pair.salesforce.set_daily_limit(
            max(15_000, args.accounts)
        )  # a real org of this size has more

        env = child_env(pair)
        config = write_config(pair, workdir, "config.yaml", mappings=default_mappings_dir(), args=args)
        config2 = write_config(
            pair,
            workdir,
            "config-changed-mapping.yaml",
            mappings=changed_mappings(workdir),
            args=args,
        )
        base = [sys.executable, "-m", "connector"]

        baseline = run_child([sys.executable, "-c", BASELINE_IMPORTS], env, workdir, timeout=120)
        results = []
        steps = [
            (
                "backfill",
                "every activated order; every account gets a customer",
                ["backfill", "--json", "-c", str(config)],
                None,
            ),
            (
                "sync_unchanged",
                "a sync with nothing changed",
                ["sync", "--json", "-c", str(config)],
                None,
            ),
            (
                "sync_1pct_changed",
                f"a sync after {args.changed_share:.0%} of the accounts got a new phone number",
                ["sync", "--json", "-c", str(config)],
                "change",
            ),
            (
                "recheck_after_mapping_change",
                "a sync after a static metadata field was added to the mapping",
                ["sync", "--json", "-c", str(config2)],
                None,
            ),
        ]
        changed: list[str] = []
        for name, what, argv, prepare in steps:
            if prepare == "change":
                changed = change_accounts(pair, args.accounts, args.changed_share)
            print(f"{name} ...", file=sys.stderr, flush=True)
            res = scenario(name, what, pair, [*base, *argv], env, workdir, args)
            results.append(res)
            print(
                f"  {res['wall_s']} s, exit {res['exit_code']}, {summary_line(res)}",
                file=sys.stderr,
                flush=True,
            )
            if res["exit_code"] != 0:
                print(res.get("stderr_tail", ""), file=sys.stderr)
                break
        customers = pair.stripe.customers()
        written_back = sum(
            1 for a in pair.salesforce.records("Account") if a.get("Stripe_Customer_Id__c")
        )
        return {
            "benchmark": "sync_bench",
            "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "parameters": {
                "accounts": args.accounts,
                "orders": args.accounts,
                "stripe_latency_s": args.stripe_latency,
                "stripe_cap_rps": args.stripe_cap,
                "connector_rate_rps": args.connector_rate,
                "salesforce_latency_s": args.salesforce_latency,
                "page_size": args.page_size,
                "changed_share": args.changed_share,
                "accounts_changed": len(changed),
            },
            "machine": machine(),
            "setup": {
                "load_s": round(load_s, 2),
                "baseline_rss_mib": round(baseline.peak_rss_mib, 1),
                "baseline_wall_s": round(baseline.wall_s, 2),
                "baseline_what": f"python -c '{BASELINE_IMPORTS}' (interpreter and imports, no work)",
            },
            "scenarios": results,
            "checks": {
                "stripe_customers": len(customers),
                "accounts_with_customer_id_written_back": written_back,
                "every_account_has_one_customer": len(customers) == args.accounts == written_back,
                "every_customer_has_the_new_mapping_field": all(
                    (c.get("metadata") or {}).get("bench_mapping") == "v2" for c in customers
                )
                if customers
                else False,
            },
        }
    finally:
        pair.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def summary_line(res: dict[str, Any]) -> str:
    r = res.get("report") or {}
    s = res["stripe"]
    return (
        f"orders {r.get('orders_read')}, created {r.get('created')}, updated {r.get('updated')}, "
        f"unchanged {r.get('unchanged')}, Stripe {s['total']} ({s['rate_limited']} x 429), "
        f"Salesforce {res['salesforce']['total']}, RSS {res['connector_process']['peak_rss_mib']} MiB"
    )


# --- the README table -------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def summarize(files: list[Path]) -> str:
    """Markdown for the README, straight from result files: a caption and a table per file."""
    out = []
    for f in files[:20]:
        data = json.loads(f.read_text(encoding="utf-8"))
        p, setup = data["parameters"], data["setup"]
        cap = f"cap {_fmt(p['stripe_cap_rps'])} req/s" if p["stripe_cap_rps"] else "no cap"
        out += [
            f"**N = {p['accounts']:,}**: Stripe latency {_fmt(p['stripe_latency_s'] * 1000)} ms, {cap}, "
            f"connector rate {_fmt(p['connector_rate_rps'])} req/s; baseline RSS {_fmt(setup['baseline_rss_mib'])} MiB "
            f"(`{f.as_posix()}`)",
            "",
            "| scenario | orders read | wall s | orders/s | Stripe calls (429s) | per created / updated / unchanged | "
            "Stripe req/s while writing (÷ cap) | Salesforce calls per 1,000 orders | connector CPU s | peak RSS MiB |",
            "|---|" + "---:|" * 9,
        ]
        for s in data["scenarios"]:
            st, r = s["stripe"], s["report"] or {}
            per = " / ".join(_fmt(st[k]) for k in ("per_created", "per_updated", "per_unchanged"))
            rate = "-"
            if st["achieved_rps_while_writing"]:
                ratio = (
                    f" ({_fmt(st['ratio_to_cap_while_writing'])})"
                    if st["ratio_to_cap_while_writing"]
                    else ""
                )
                rate = _fmt(st["achieved_rps_while_writing"]) + ratio
            out.append(
                f"| {s['scenario']} | {_fmt(r.get('orders_read'))} | {_fmt(s['wall_s'])} | {_fmt(s['orders_per_s'])} | "
                f"{_fmt(st['total'])} ({st['rate_limited']}) | {per} | {rate} | "
                f"{_fmt(s['salesforce']['per_1000_orders'])} | {_fmt(s['connector_process']['cpu_s'])} | "
                f"{_fmt(s['connector_process']['peak_rss_mib'])} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--accounts",
        type=int,
        default=1000,
        help="accounts, each with one activated order (default 1000)",
    )
    ap.add_argument(
        "--stripe-latency",
        type=float,
        default=0.02,
        help="seconds the Stripe sandbox waits per request (default 0.02)",
    )
    ap.add_argument(
        "--stripe-cap",
        type=float,
        default=100,
        help="Stripe sandbox rate cap, requests/s, burst 1; 0 = none (default 100)",
    )
    ap.add_argument(
        "--connector-rate",
        type=float,
        default=20,
        help="billing.accounts[].max_requests_per_second, the connector's own pacing (default 20, the config default)",
    )
    ap.add_argument(
        "--salesforce-latency",
        type=float,
        default=0.0,
        help="seconds the Salesforce sandbox waits per request (default 0)",
    )
    ap.add_argument(
        "--page-size",
        type=int,
        default=2000,
        help="salesforce.page_size (default 2000, the config default)",
    )
    ap.add_argument(
        "--changed-share",
        type=float,
        default=0.01,
        help="share of accounts changed before scenario 3 (default 0.01)",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=3600,
        help="seconds one connector run may take before it is killed",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results" / "latest.json",
        help="where to write the JSON",
    )
    ap.add_argument(
        "--summarize",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="print the README table from result files and exit",
    )
    args = ap.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    if not 1 <= args.accounts <= MAX_ACCOUNTS:
        ap.error(f"--accounts must be between 1 and {MAX_ACCOUNTS}")
    if not 0 < args.changed_share <= 1:
        ap.error("--changed-share must be in (0, 1]")
    data = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(summarize([args.out]))
    print(f"\nwritten to {args.out}", file=sys.stderr)
    failed = [s["scenario"] for s in data["scenarios"] if s["exit_code"] != 0]
    return 1 if failed or len(data["scenarios"]) < 4 else 0


if __name__ == "__main__":
    raise SystemExit(main())
