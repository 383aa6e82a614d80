"""Connector CPU per record: a backfill (every record a create) and a re-check (every order unchanged).

The sandbox Salesforce org and Stripe account run in a child process, so the CPU this process
spends (`time.process_time`, all its threads) is the connector's own: the engine, the store on
SQLite, the Salesforce and Stripe clients. No profiler runs unless `--profile` is given (a
profiler multiplies the cost of every Python call, so its totals are not the figures reported).
The Stripe sandbox answers at once: this measures CPU, not throughput.

    PYTHONPATH=$PWD python bench/cpu_per_record.py --n 2000
    PYTHONPATH=$PWD python bench/cpu_per_record.py --n 2000 --profile /tmp/prof  # + pstats files
    PYTHONPATH=$PWD python bench/cpu_per_record.py --n 2000 --repeat 5 \
        --out bench/results/cpu-n2000.json                # + machine, load, commit; medians

Prints one JSON object: per scenario the records, CPU seconds, and milliseconds per record.
With `--repeat K` the whole measurement (a fresh org and store each time) runs K times and
each scenario also gets the median, least and greatest ms per record of the K runs: on a
shared machine one run can be a tenth slower or faster than the next.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.machine import machine  # noqa: E402
from bench.sync_bench import build_org  # noqa: E402

# Issue 15's aims, in ms of connector CPU per record.
TARGETS = {"backfill": 1.0, "recheck_unchanged": 0.07}


def _serve(data_file: str, conn: Connection) -> None:
    """The child: both sandboxes with the org, until the parent says stop."""
    from connector.sandbox.run import start_sandboxes

    pair = start_sandboxes(Path(data_file))
    conn.send({"salesforce": pair.salesforce.url, "stripe": pair.stripe.url, **pair.secrets()})
    conn.recv()
    pair.stop()


def _config(urls: dict[str, str], workdir: Path, page_size: int, max_in_flight: int | None) -> Any:
    from connector.config import Config
    from connector.sandbox.run import SANDBOX_ORG_ID
    from connector.shipped import default_mappings_dir

    account: dict[str, Any] = {
        "id": "default",
        "api_base": urls["stripe"],
        # No pacing: the sandbox answers at once and only CPU is measured here.
        "max_requests_per_second": 1000,
        # Nor per endpoint (Stripe's default budget is 25 a second): spaced-out requests each
        # start on caches other processes have since used, which inflates CPU per request.
        "endpoint_limits": {"customers.create": 1000, "customers.update": 1000},
    }
    if max_in_flight is not None:
        account["max_in_flight"] = max_in_flight
    return Config.model_validate(
        {
            "salesforce": {
                "auth": "access_token",
                "instance_url": urls["salesforce"],
                "org_id": SANDBOX_ORG_ID,
                "page_size": page_size,
            },
            "billing": {"accounts": [account]},
            "state": {"url": f"sqlite:///{workdir / 'state.db'}"},
            "mappings_dir": str(default_mappings_dir()),
            "log": {"level": "warning", "format": "json"},
        }
    )


def _measure(name: str, run: Any, profile_dir: Path | None) -> tuple[Any, float]:
    profiler = cProfile.Profile(time.process_time) if profile_dir else None
    start = time.process_time()
    if profiler:
        profiler.enable()
    report = run()
    if profiler:
        profiler.disable()
    cpu = time.process_time() - start
    if profiler and profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(str(profile_dir / f"{name}.pstats"))
    return report, cpu


def measure_once(args: argparse.Namespace) -> dict[str, Any]:
    """One backfill then one re-check on a fresh org and store; per scenario its figures."""
    from connector.app import open_pipeline
    from connector.config import SecretSource

    with tempfile.TemporaryDirectory(prefix="cpu-bench-") as tmp:
        workdir = Path(tmp)
        data = workdir / "org.json"
        data.write_text(json.dumps({"salesforce": build_org(args.n)}), encoding="utf-8")
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        server = ctx.Process(target=_serve, args=(str(data), child), daemon=True)
        server.start()
        try:
            urls = parent.recv()
            cfg = _config(urls, workdir, args.page_size, args.max_in_flight)
            secrets = SecretSource(
                {
                    "SALESFORCE_ACCESS_TOKEN": urls["SALESFORCE_ACCESS_TOKEN"],
                    "STRIPE_API_KEY": urls["STRIPE_API_KEY"],
                }
            )
            results: dict[str, Any] = {}
            for name, mode, per in (
                ("backfill", "backfill", "created"),
                ("recheck_unchanged", "recheck", "unchanged"),
            ):
                with open_pipeline(cfg, secrets) as p:
                    report, cpu = _measure(
                        name, lambda p=p, mode=mode: p.engine.run(mode), args.profile
                    )
                records = getattr(report, per)
                results[name] = {
                    "status": report.status,
                    "records": records,
                    "per": per,
                    "cpu_s": round(cpu, 3),
                    "ms_per_record": round(1000 * cpu / max(1, records), 4),
                    "billing_calls": report.billing_calls,
                    "salesforce_calls": report.salesforce_calls,
                }
        finally:
            parent.send("stop")
            server.join(timeout=30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="accounts (one order each)")
    parser.add_argument("--page-size", type=int, default=2000)
    parser.add_argument("--profile", type=Path, help="write cProfile stats per scenario here")
    parser.add_argument("--log-level", default="warning", help="as the CLI's --log-level")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        help="requests in flight per billing account (default: config's)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="measure this many times")
    parser.add_argument("--label", help="a name for this run in the result file (e.g. before)")
    parser.add_argument("--out", type=Path, help="also write the result, with the machine, here")
    args = parser.parse_args()

    from connector import log as logsetup

    # As the command does; JSON lines to a sink, so the figure includes their cost, not a tty's.
    sink = open("/dev/null", "w", encoding="utf-8")  # noqa: SIM115  (open for the whole run)
    logsetup.configure(level=args.log_level, fmt="json", stream=sink)

    at_start = machine()
    runs = [measure_once(args) for _ in range(max(1, args.repeat))]
    results: dict[str, Any] = {
        "n": args.n,
        "page_size": args.page_size,
        "max_in_flight": args.max_in_flight,
    }
    if len(runs) == 1 and not args.out:
        results.update(runs[0])  # the shape this script has always printed
        print(json.dumps(results, indent=2))
        return
    for name in ("backfill", "recheck_unchanged"):
        figures = sorted(r[name]["ms_per_record"] for r in runs)
        results[name] = {
            **runs[0][name],
            "ms_per_record": statistics.median(figures),
            "ms_per_record_least": figures[0],
            "ms_per_record_greatest": figures[-1],
            "target_ms": TARGETS[name],
            "target_met": statistics.median(figures) < TARGETS[name],
        }
        results[name].pop("cpu_s")
    results["runs"] = runs
    if args.out:
        document = {
            "benchmark": "cpu_per_record",
            "label": args.label,
            "parameters": {
                "accounts": args.n,
                "page_size": args.page_size,
                "max_in_flight": args.max_in_flight,
                "repeat": len(runs),
                "store": "sqlite",
            },
            "machine": at_start,
            "load_average_1_5_15_after": machine()["load_average_1_5_15"],
            "results": results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
