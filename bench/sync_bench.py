"""Sync benchmark: how fast and how lean the connector is against the local sandboxes.

It starts the sandbox Salesforce org and Stripe account in this process, loads N accounts that
each have one activated order (and a bill-to contact), and runs the real connector as a child
process (`python -m connector ... --json`, config file and env secrets) once per scenario, in
the order `--scenarios` gives (default: all, in this order):

1. dry_run: `sync --dry-run` before anything is linked (the plan of N creates);
2. backfill: every account gets a customer;
3. sync_unchanged: a sync with nothing changed;
4. sync_1pct_changed: a sync after 1% of the accounts changed (a new phone number);
5. recheck_after_mapping_change: a sync after a static metadata field was added to a copy of
   the mappings, which re-checks every linked account and updates every customer;
6. recheck_unchanged: a sync after a mapping change that alters no payload, which re-checks
   every linked account and finds each unchanged (no Stripe call is expected).

`--mode` picks Stripe's set-up: test (global 25 req/s, endpoints 25), live (global 100,
endpoints 25), live-raised (global 100, endpoints raised to 100). `--deadline` stops the
benchmark at a wall time; the JSON is rewritten after every scenario, so what finished is kept.
The SOQL the org received is logged per scenario (`bench/soql_shapes.py`), with any filter
that ORs fields of different objects flagged.

The Stripe sandbox gets a latency per request (`--stripe-latency`, default 250 ms, Stripe's
usual for a customer create) and Stripe's two levels of rate limit: a global cap (from
`--mode`, or `--stripe-cap`) and a budget per endpoint (from `--mode`, or
`--stripe-endpoint-rate`; Search 20), each a token bucket holding `--stripe-burst` requests
(default 5). The Salesforce sandbox waits `--salesforce-latency` per request, i.e. per query
page, in every scenario.

Per scenario it records: the effective cap (the least of the global cap and the sum of the
budgets of the endpoints the run used), the Stripe requests a second achieved while writing
(first to last Stripe request) and its ratio to that cap, 429s, Stripe calls per created /
updated / unchanged account, Salesforce calls against the bound ceil(N/2000) + ceil(new/200) + 5,
the connector's CPU per record (its own rusage; also net of the interpreter start and imports),
and its peak RSS, and writes them with the machine's description to `--out` as JSON.
`bench/readme_tables.py` renders the README's tables from those files, so every figure there
comes from a file this script wrote.

Why a child process: the sandboxes' data and this script's memory stay out of its figures, and
the sandboxes' HTTP threads do not compete with the connector for one GIL. Its peak RSS is its
own VmHWM (from /proc/self/status at exit, written by a small wrapper, and sampled from
/proc/PID/status while it runs): `wait4`'s ru_maxrss would report the high-water mark the child
inherited from this process at fork. The price of a child is the interpreter start and imports,
which the wall time includes and the baseline figures show.

`--target chargebee` runs the same scenarios against the project's Chargebee sandbox instead
(connector/sandbox/chargebee.py), beside the same Salesforce sandbox: the connector gets a
`kind: chargebee` account with the shipped mappings/chargebee, and the figures are the Chargebee
sandbox's calls. Its limit is one bucket of `--chargebee-rpm` requests a minute (default 150, a
test site's), which the connector is told as requests_per_minute; the effective cap is rpm/60.
`--billing-latency` (alias of `--stripe-latency`) applies to whichever sandbox is the target.
What differs per system is one `BenchTarget`; the scenarios and the measuring are one code path.

What it must never do: contact anything but 127.0.0.1. The sandboxes bind loopback only, the
config points both services there, and the child gets sandbox secrets and nothing else from
the SALESFORCE_* / STRIPE_* environment.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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

from bench import readme_tables  # noqa: E402
from bench.machine import machine  # noqa: E402
from bench.soql_shapes import QueryLog, summary  # noqa: E402
from connector.sandbox.run import SandboxPair, start_sandboxes  # noqa: E402
from connector.sandbox.salesforce import id18  # noqa: E402
from connector.sandbox.stripe_limits import RateLimits  # noqa: E402
from connector.shipped import default_mappings_dir  # noqa: E402

MAX_ACCOUNTS = 1_000_000  # the loops below are bounded by this
SAMPLE_EVERY = 0.02  # seconds between samples of the Stripe sandbox's request counter
MIN_FOR_RATE = 50  # Stripe requests below which no "while writing" rate is reported
PROGRESS_EVERY = 60.0  # seconds between progress records of a running scenario in the JSON
GRACE = 30.0  # seconds a connector stopped by SIGTERM has to finish before it is killed


# --- the org -------------------------------------------------------------------------------


def account_id(i: int) -> str:
    return id18(f"001Bn{i:010d}")


def build_org(n: int, start: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Accounts start .. n-1, each with a bill-to contact and one activated order, as one
    `load()` dict. Deterministic: account i is the same in every run."""
    countries = ("Germany", "United States", "GB", "France", "Japan")
    accounts, contacts, orders = [], [], []
    for i in range(start, n):
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


LOAD_CHUNK = 50_000  # accounts built and loaded at a time: the org's rows, not N dicts twice


def load_org(pair: SandboxPair, n: int) -> None:
    """The bench org into the sandbox (replacing the sample), a chunk at a time so that at
    1,000,000 accounts this process holds the org once, not also a full copy of its input."""
    for start in range(0, n, LOAD_CHUNK):
        pair.salesforce.load(build_org(min(n, start + LOAD_CHUNK), start), replace=start == 0)


def change_accounts(pair: SandboxPair, n: int, share: float) -> list[str]:
    """Give `share` of the accounts (spread evenly) a new phone number; returns their ids."""
    count = max(1, round(n * share))
    step = max(1, n // count)
    changed = [account_id(i) for i in range(0, n, step)][:count]
    for acc in changed:
        pair.salesforce.update("Account", acc, {"Phone": "+1 415 555 0100"})
    return changed


def _mappings_copy(source: Path, target: Path, edit: Any) -> Path:
    """A copy of the mappings folder `source` whose customer.yaml `edit(fields)` has changed."""
    shutil.copytree(source, target)
    path = target / "customer.yaml"
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(spec["fields"])
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return target


def changed_mappings(source: Path, target: Path, metadata: str = "metadata") -> Path:
    """The mappings with one static metadata field added: a change of every customer's payload.
    `metadata` is the billing system's name for the customer's metadata (Chargebee: meta_data)."""

    def add_field(fields: dict[str, Any]) -> None:
        fields[f"{metadata}.bench_mapping"] = {"value": "v2"}

    return _mappings_copy(source, target, add_field)


def same_payload_mappings(source: Path, target: Path, name_field: str = "name") -> Path:
    """The mappings with a change that alters no payload (`name` trimmed twice): the mapping's
    fingerprint moves, so the next sync re-checks every linked account, and finds each one
    unchanged. This is the re-check of unchanged accounts the issue times."""

    def trim_twice(fields: dict[str, Any]) -> None:
        name = fields[name_field]
        name["transforms"] = [*(name.get("transforms") or []), "trim"]

    return _mappings_copy(source, target, trim_twice)


# --- running the connector -------------------------------------------------------------------

# The child runs the connector's own entry point under this wrapper, which writes the process's
# peak RSS (VmHWM from /proc/self/status) to a file at exit. `wait4`'s ru_maxrss cannot be used:
# it reports the high-water mark the child inherited from this (large) process at fork and exec.
CHILD_WRAPPER = """
import atexit, runpy, sys
def _report(path=sys.argv.pop(1)):
    try:
        with open("/proc/self/status") as f:
            hwm = next((l.split()[1] for l in f if l.startswith("VmHWM:")), "")
        with open(path, "w") as out:
            out.write(hwm)
    except OSError:
        pass
atexit.register(_report)
sys.argv[0] = "billing-connector"
runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)
"""


@dataclass
class ChildRun:
    exit_code: int
    wall_s: float
    report: dict[str, Any] | None
    peak_rss_mib: float  # VmHWM: at exit when the child reported it, else the highest sampled
    peak_rss_source: str  # "exit" or "sampled" (or "none")
    cpu_s: float
    stderr_tail: str
    stripe_first_s: float | None  # first and last Stripe request, seconds after the start
    stripe_last_s: float | None
    stopped: str | None = None  # "deadline" or "timeout" when the run was stopped, else None


def child_env(pair: SandboxPair, target_secrets: Mapping[str, str] | None = None) -> dict[str, str]:
    prefixes = ("SALESFORCE_", "STRIPE_", "CHARGEBEE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(pair.secrets())
    env.update(target_secrets or {})
    env["PYTHONPATH"] = str(REPO)
    return env


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None  # not Linux, or the child has exited (a zombie has no Vm* lines)


def run_child(
    module: str,
    args: list[str],
    env: Mapping[str, str],
    workdir: Path,
    *,
    timeout: float,
    deadline: float | None = None,
    stripe_counter: Any = None,
    progress: Any = None,
) -> ChildRun:
    """Run `python -m module args` to completion, or stop it at `timeout` seconds or at the
    `deadline` (a time.monotonic() value), whichever comes first. `progress(elapsed_s,
    peak_rss_mib, stripe_requests)` is called every PROGRESS_EVERY seconds while it runs.

    CPU time comes from the child's own rusage (wait4); peak RSS from the child's VmHWM, as it
    reported it at exit, or as sampled from /proc/PID/status while it ran if it did not.
    """
    out_path, err_path = workdir / "child.out", workdir / "child.err"
    hwm_path = workdir / "child.hwm"
    hwm_path.unlink(missing_ok=True)
    argv = [sys.executable, "-c", CHILD_WRAPPER, str(hwm_path), module, *args]
    samples: list[tuple[float, int]] = []
    peak_sampled = [0]
    done = threading.Event()
    start = time.monotonic()

    def sample(pid: int) -> None:
        reported = start
        # Bounded by the child's lifetime and the timeout.
        while not done.wait(SAMPLE_EVERY) and time.monotonic() - start < timeout + GRACE + 5:
            if stripe_counter:
                samples.append((time.monotonic() - start, stripe_counter()))
            hwm = _vm_hwm_kib(pid)
            if hwm:
                peak_sampled[0] = max(peak_sampled[0], hwm)
            if progress is not None and time.monotonic() - reported >= PROGRESS_EVERY:
                reported = time.monotonic()
                count = samples[-1][1] - samples[0][1] if samples else 0
                progress(reported - start, peak_sampled[0] / 1024, count)

    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=dict(env), cwd=workdir)
        sampler = threading.Thread(target=sample, args=(proc.pid,), daemon=True)
        sampler.start()
        status, usage, stopped = 0, None, None
        stop_at = start + timeout
        if deadline is not None and deadline < stop_at:
            stop_at, why = deadline, "deadline"
        else:
            why = "timeout"
        while time.monotonic() < stop_at:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.01)
        else:
            # Asked to stop as an admin would (SIGTERM: the record in progress finishes, what
            # was applied is recorded), killed if it has not gone within GRACE seconds.
            stopped = why
            proc.terminate()
            grace_end = time.monotonic() + GRACE
            while time.monotonic() < grace_end:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                time.sleep(0.05)
            else:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(
            status
        )  # reaped here; Popen must not wait again
        done.set()
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
    try:
        at_exit = int(hwm_path.read_text().strip() or 0)
    except (OSError, ValueError):
        at_exit = 0
    peak_kib = max(at_exit, peak_sampled[0])
    return ChildRun(
        exit_code=proc.returncode,
        wall_s=wall,
        report=report,
        peak_rss_mib=peak_kib / 1024,
        peak_rss_source="exit" if at_exit else "sampled" if peak_sampled[0] else "none",
        cpu_s=(usage.ru_utime + usage.ru_stime) if usage else 0.0,
        stderr_tail=err_path.read_text(encoding="utf-8", errors="replace")[-2000:],
        stripe_first_s=first,
        stripe_last_s=last,
        stopped=stopped,
    )


def write_config(
    pair: SandboxPair,
    target: BenchTarget,
    workdir: Path,
    name: str,
    *,
    mappings: Path,
    args: argparse.Namespace,
) -> Path:
    cfg = pair.config_dict(
        state_url=f"sqlite:///{workdir / 'state.db'}", mappings_dir=str(mappings)
    )
    cfg["salesforce"]["page_size"] = args.page_size
    account = dict(target.account)
    cfg["billing"]["accounts"] = [account]
    if target.kind == "stripe":
        # A Chargebee account's pace is its requests_per_minute, already in target.account.
        account["max_requests_per_second"] = args.connector_rate
        if args.connector_endpoint_limits:
            account["endpoint_limits"] = dict(args.connector_endpoint_limits)
    for option in args.connector_option:
        _set_option(account, option)
    cfg["log"] = {"level": "warning", "format": "json"}
    path = workdir / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


# --- the Stripe sandbox's limits -------------------------------------------------------------

# Stripe's documented budgets (docs.stripe.com/rate-limits): the global one per mode, and per
# endpoint 25 a second by default, Search 20. Endpoints are named as the sandbox counts them.
ENDPOINTS = {
    "create": "POST /v1/customers",
    "update": "POST /v1/customers/{customer}",
    "retrieve": "GET /v1/customers/{customer}",
    "list": "GET /v1/customers",
    "search": "GET /v1/customers/search",
}
SEARCH_BUDGET = 20.0
DEFAULT_ENDPOINT_BUDGET = 25.0  # what a connector assumes of an endpoint it is told nothing of


@dataclass(frozen=True)
class StripeLimits:
    """The limits the Stripe sandbox enforces in one set-up, and how it enforces them."""

    mode: str  # "test" or "live": picks the global cap unless `global_cap` is given
    global_cap: float  # requests a second, all endpoints together; 0 = no limit
    endpoint_budget: float  # requests a second per endpoint; 0 = no per-endpoint level
    burst: float

    def budget(self, endpoint: str) -> float | None:
        if not self.endpoint_budget:
            return None
        return (
            min(SEARCH_BUDGET, self.endpoint_budget)
            if endpoint == "search"
            else self.endpoint_budget
        )

    def effective_cap(self, endpoints_in_use: list[str]) -> float | None:
        """The least of the global cap and the sum of the budgets of the endpoints in use."""
        caps = []
        if self.global_cap:
            caps.append(self.global_cap)
        budgets = [self.budget(e) for e in endpoints_in_use]
        if endpoints_in_use and all(b is not None for b in budgets):
            caps.append(sum(b for b in budgets if b is not None))
        return min(caps) if caps else None

    def apply(self, pair: SandboxPair) -> str:
        """Set the Stripe sandbox's two levels (connector/sandbox/stripe_limits.py); returns
        how they are enforced."""
        if not self.global_cap and not self.endpoint_budget:
            pair.stripe.set_rate_limits(None)
            return "none"
        # A budget far above anything reachable here stands for "no limit at this level".
        pair.stripe.set_rate_limits(
            RateLimits(
                burst=self.burst,
                global_rate=self.global_cap or 1e9,
                endpoint_rate=self.endpoint_budget or 1e9,
                endpoint_rates={ENDPOINTS["search"]: self.budget("search") or 1e9},
            )
        )
        return "sandbox: global and per-endpoint levels"


# --- the billing target under test ------------------------------------------------------------

CHARGEBEE_ENDPOINTS = {
    "create": "POST /api/v2/customers",
    "update": "POST /api/v2/customers/{customer_id}",
    "update_billing_info": "POST /api/v2/customers/{customer_id}/update_billing_info",
    "retrieve": "GET /api/v2/customers/{customer_id}",
    "list": "GET /api/v2/customers",
}
CHARGEBEE_TEST_SITE_RPM = 150.0  # a Chargebee test site's limit, the connector's default too


def _chargebee_endpoint(method: str, path: str) -> str:
    path = path.split("?", 1)[0].rstrip("/")
    if path == "/api/v2/customers":
        return "create" if method == "POST" else "list"
    if path.startswith("/api/v2/customers/"):
        if path.endswith("/update_billing_info"):
            return "update_billing_info"
        return "update" if method == "POST" else "retrieve" if method == "GET" else "other"
    return "other"


@dataclass
class BenchTarget:
    """What differs between billing systems in this benchmark, chosen by `--target`: the
    sandbox, the connector's billing account config and secret, the shipped mapping, how the
    sandbox's requests are classified, the limit it enforces and the effective cap it makes.
    Everything else (the org, the scenarios, the measuring) is one code path."""

    kind: str  # "stripe" | "chargebee": also the key of the per-scenario figures in the JSON
    server: Any  # StripeSandbox | ChargebeeSandbox
    endpoints: dict[str, str]  # short name -> the endpoint as the sandbox counts it
    classify: Any  # (method, path) -> short name
    creates: tuple[str, ...]  # short names whose requests are a create
    updates: tuple[str, ...]  # ... and an update (Chargebee: two calls for an address change)
    mappings: Path
    metadata_key: str  # the mapping's name for customer metadata
    name_field: str  # where the mapping puts Account.Name
    account: dict[str, Any]  # billing.accounts[0], before the options of the command line
    secrets: dict[str, str]
    apply: Any  # () -> how the sandbox's limits are enforced (set before every scenario)
    effective_cap: Any  # (endpoints in use) -> requests a second, or None
    owned: bool = False  # started here, stopped here (the Stripe sandbox is the pair's)

    def counts(self) -> dict[str, int]:
        """Requests by endpoint, counted by the sandbox on arrival (429s included)."""
        stats = self.server.stats()
        out = {"total": 0, **{e: 0 for e in self.endpoints}, "other": 0}
        out["rate_limited"] = int(stats["rate_limited"])
        for key, n in stats["requests"].items():
            method, _, path = key.partition(" ")
            out[self.classify(method, path)] += n
            out["total"] += n
        return out

    def counter(self) -> Any:
        ops, server = self.server.operations, self.server

        def count() -> int:
            # Cheap to read while requests run: a handful of keys, unlike per-path counts.
            return int(sum(ops.values()) + server.rate_limited)

        return count

    def customers(self) -> list[dict[str, Any]]:
        return list(self.server.customers())

    def metadata(self, customer: Mapping[str, Any]) -> Mapping[str, Any]:
        return customer.get("metadata") or customer.get("meta_data") or {}

    def stop(self) -> None:
        if self.owned:
            self.server.stop()


def stripe_target(pair: SandboxPair, limits: StripeLimits) -> BenchTarget:
    return BenchTarget(
        kind="stripe",
        server=pair.stripe,
        endpoints=dict(ENDPOINTS),
        classify=_stripe_endpoint,
        creates=("create",),
        updates=("update",),
        mappings=default_mappings_dir(),
        metadata_key="metadata",
        name_field="name",
        account={"id": "default", "api_base": pair.stripe.url},
        secrets={},  # the pair's secrets hold the Stripe key
        apply=lambda: limits.apply(pair),
        effective_cap=limits.effective_cap,
    )


def chargebee_target(rpm: float, burst: float) -> BenchTarget:
    """The project's Chargebee sandbox, one site with its default entity, capped at `rpm`
    requests a minute (one bucket, `burst` back-to-back), as the connector is told."""
    from connector.sandbox.run import SANDBOX_CHARGEBEE_KEY, start_chargebee_sandbox

    server = start_chargebee_sandbox()

    def apply() -> str:
        server.set_rate_limit(rpm / 60.0, burst=burst)
        return "sandbox: one bucket per site"

    return BenchTarget(
        kind="chargebee",
        server=server,
        endpoints=dict(CHARGEBEE_ENDPOINTS),
        classify=_chargebee_endpoint,
        creates=("create",),
        updates=("update", "update_billing_info"),
        mappings=default_mappings_dir() / "chargebee",
        metadata_key="meta_data",
        name_field="company",
        account={
            "id": "default",
            "kind": "chargebee",
            "api_base": server.url,  # only for the sandbox
            "api_key_env": "CHARGEBEE_API_KEY",
            # The sandbox org's field (a real org would have a Chargebee one).
            "writeback_field": "Stripe_Customer_Id__c",
            "requests_per_minute": rpm,
        },
        secrets={"CHARGEBEE_API_KEY": SANDBOX_CHARGEBEE_KEY},
        apply=apply,
        effective_cap=lambda in_use: rpm / 60.0 if in_use else None,
        owned=True,
    )


# --- measuring ------------------------------------------------------------------------------


def _stripe_endpoint(method: str, path: str) -> str:
    path = path.split("?", 1)[0].rstrip("/")
    if path == "/v1/customers":
        return "create" if method == "POST" else "list"
    if path == "/v1/customers/search":
        return "search"
    if path.startswith("/v1/customers/"):
        return "update" if method == "POST" else "retrieve" if method == "GET" else "other"
    return "other"


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
        # A Composite request (`/composite`) carries queries only: the change queries of an
        # incremental sync, one call for all of them.
        kind = (
            "query"
            if "/query" in key or key.rstrip("/").endswith("/composite")
            else "writeback"
            if "composite/sobjects" in key
            else "other"
        )
        out[kind] += n
        out["total"] += n
    return out


def _delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _per(num: float, den: float, scale: float = 1.0) -> float | None:
    return round(num * scale / den, 3) if den else None


def salesforce_bound(orders: int, created: int) -> int:
    """The issue's ceiling on Salesforce calls per run: a query page per 2,000 orders, a
    write-back per 200 new customers, and 5 for the rest (deletions, limits, token)."""
    return math.ceil(orders / 2000) + math.ceil(created / 200) + 5


def scenario(
    name: str,
    what: str,
    pair: SandboxPair,
    args_: list[str],
    env: Mapping[str, str],
    workdir: Path,
    args: argparse.Namespace,
    target: BenchTarget,
    baseline: ChildRun,
    deadline: float | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    enforced = target.apply()
    billing_before, sf_before = target.counts(), salesforce_counts(pair)
    resources_before = dict(pair.salesforce.stats()["requests"])
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    stripe_counter = target.counter()
    child = run_child(
        "connector",
        args_,
        env,
        workdir,
        timeout=args.timeout,
        deadline=deadline,
        stripe_counter=stripe_counter,
        progress=progress,
    )
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    billing = _delta(target.counts(), billing_before)
    sf = _delta(salesforce_counts(pair), sf_before)
    resources = {
        k: v - resources_before.get(k, 0)
        for k, v in pair.salesforce.stats()["requests"].items()
        if v - resources_before.get(k, 0)
    }
    r = child.report or {}
    orders, created, updated, unchanged = (
        int(r.get(k, 0) or 0) for k in ("orders_read", "created", "updated", "unchanged")
    )
    window = (
        (child.stripe_last_s - child.stripe_first_s)
        if child.stripe_first_s is not None and child.stripe_last_s
        else None
    )
    in_use = [e for e in target.endpoints if billing[e]]
    cap = target.effective_cap(in_use) if in_use else None
    rate_wall = billing["total"] / child.wall_s if child.wall_s else 0.0
    # A window measured by sampling every SAMPLE_EVERY seconds means little for a few requests.
    rate_window = billing["total"] / window if window and billing["total"] >= MIN_FOR_RATE else None
    creates = sum(billing[e] for e in target.creates)
    updates = sum(billing[e] for e in target.updates)
    records = orders or None
    cpu_work = max(0.0, child.cpu_s - baseline.cpu_s)
    bound = salesforce_bound(orders, created)
    result = {
        "scenario": name,
        "what": what,
        "command": "billing-connector " + " ".join(args_[:2]),
        "exit_code": child.exit_code,
        # "deadline" or "timeout": the run was stopped (SIGTERM) before it finished; its
        # figures cover the part that ran.
        "stopped": child.stopped,
        "report": child.report,
        "failed_records": int(r.get("failed", 0) or 0) if r else None,
        "wall_s": round(child.wall_s, 3),
        "orders_per_s": round(orders / child.wall_s, 1) if child.wall_s else None,
        "target": target.kind,
        # The billing system's figures, under its name ("stripe" or "chargebee").
        target.kind: {
            **billing,
            "endpoints_in_use": [target.endpoints[e] for e in in_use],
            "effective_cap_rps": cap,
            "limits_enforced_by": enforced,
            "per_created": _per(creates, created),
            "per_updated": _per(updates, updated),
            # Every request that is neither a create nor an update, charged to the unchanged
            # accounts: exact when nothing was written, an upper bound otherwise.
            "per_unchanged": _per(billing["total"] - creates - updates, unchanged),
            "achieved_rps_over_wall": round(rate_wall, 2),
            "achieved_rps_while_writing": round(rate_window, 2) if rate_window else None,
            "writing_window_s": round(window, 3) if window else None,
            "ratio_to_effective_cap_while_writing": round(rate_window / cap, 3)
            if rate_window and cap
            else None,
            # Lower bound on the writing time of one request at a time.
            "latency_floor_s": round(billing["total"] * args.stripe_latency, 2),
        },
        "salesforce": {
            **sf,
            "bound": bound,
            "within_bound": sf["total"] <= bound,
            "per_1000_orders": _per(sf["total"], orders, 1000),
            # Which calls they were: method and resource as the sandbox org counted them.
            "requests": resources,
        },
        "connector_process": {
            "peak_rss_mib": round(child.peak_rss_mib, 1),
            "peak_rss_source": child.peak_rss_source,
            "cpu_s": round(child.cpu_s, 2),
            "cpu_ms_per_record": round(child.cpu_s * 1000 / records, 3) if records else None,
            # Less the interpreter's start and the imports (the baseline run's CPU).
            "cpu_ms_per_record_net": round(cpu_work * 1000 / records, 3) if records else None,
            "cpu_share_of_wall": round(child.cpu_s / child.wall_s, 3) if child.wall_s else None,
        },
        "sandboxes_cpu_s": round(
            (self_after.ru_utime + self_after.ru_stime)
            - (self_before.ru_utime + self_before.ru_stime),
            2,
        ),
    }
    result["load_average_1_5_15_after"] = _load_average()
    if child.exit_code != 0:
        result["stderr_tail"] = child.stderr_tail
    return result


# --- the benchmark ----------------------------------------------------------------------------


# Set-ups named in issue 15: (stripe mode, global cap, per-endpoint budget).
MODES = {
    "test": ("test", 25.0, 25.0),
    "live": ("live", 100.0, 25.0),
    "live-raised": ("live", 100.0, 100.0),
}

# name -> (what it is, connector arguments, which config it runs with, what happens first)
SCENARIOS: dict[str, tuple[str, list[str], str, str | None]] = {
    "dry_run": (
        "`sync --dry-run` before anything is linked: the plan of a create for every account",
        ["sync", "--dry-run", "--json"],
        "current",
        None,
    ),
    "backfill": (
        "`backfill`: every activated order; every account gets a customer",
        ["backfill", "--json"],
        "current",
        None,
    ),
    "sync_unchanged": ("`sync` with nothing changed", ["sync", "--json"], "current", None),
    "sync_1pct_changed": (
        "`sync` after a share of the accounts got a new phone number",
        ["sync", "--json"],
        "current",
        "change",
    ),
    "recheck_after_mapping_change": (
        "`sync` after a static metadata field was added to the mapping: every linked account "
        "re-checked and updated",
        ["sync", "--json"],
        "changed",
        None,
    ),
    "recheck_unchanged": (
        "`sync` after a mapping change that alters no payload (`name` trimmed twice): every "
        "linked account re-checked, none changed",
        ["sync", "--json"],
        "same_payload",
        None,
    ),
}
DEFAULT_SCENARIOS = (
    "dry_run",
    "backfill",
    "sync_unchanged",
    "sync_1pct_changed",
    "recheck_after_mapping_change",
    "recheck_unchanged",
)


def limits_from(args: argparse.Namespace) -> StripeLimits:
    mode, global_cap, endpoint = MODES[args.mode]
    if args.stripe_cap is not None:
        global_cap = args.stripe_cap
    if args.stripe_endpoint_rate is not None:
        endpoint = args.stripe_endpoint_rate
    return StripeLimits(
        mode=mode, global_cap=global_cap, endpoint_budget=endpoint, burst=args.stripe_burst
    )


def connector_knows_endpoint_limits() -> bool:
    from connector.config import BillingAccountConfig

    return "endpoint_limits" in BillingAccountConfig.model_fields


def connector_pacing(
    args: argparse.Namespace, limits: StripeLimits
) -> tuple[float, dict[str, float]]:
    """What the connector is told of the account's limits, as an admin would tell it.

    A connector whose limiter knows both levels (config `endpoint_limits`) gets the global cap
    and, where they differ from Stripe's default 25, the endpoint budgets; an older one, with
    one pace, gets the effective cap of creates (every scenario writes through one endpoint).
    `--connector-rate` overrides the pace.
    """
    if connector_knows_endpoint_limits():
        rate = args.connector_rate or limits.global_cap or 1000
        budgets = (
            {"customers.create": limits.endpoint_budget, "customers.update": limits.endpoint_budget}
            if limits.endpoint_budget and limits.endpoint_budget != DEFAULT_ENDPOINT_BUDGET
            else {}
        )
        return rate, budgets
    return args.connector_rate or limits.effective_cap(["create"]) or 1000, {}


def _set_option(account: dict[str, Any], option: str) -> None:
    """`key=value` or `a.b=value` (value read as YAML) on the billing account's config."""
    key, sep, text = option.partition("=")
    if not sep or not key:
        raise SystemExit(f"--connector-option {option!r}: expected KEY=VALUE")
    *path, last = key.split(".")
    node = account
    for part in path:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(text)


def _deadline(text: str | None) -> float | None:
    """A UTC wall time (HH:MM today, or ISO 8601) as a time.monotonic() value."""
    if not text:
        return None
    now = datetime.now(UTC)
    if len(text) <= 5:
        hour, minute = (int(x) for x in text.split(":"))
        at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    else:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return time.monotonic() + (at - now).total_seconds()


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = datetime.now(UTC)
    load_at_start = _load_average()
    limits = limits_from(args)
    connector_rate, endpoint_limits = connector_pacing(args, limits)
    args.connector_rate, args.connector_endpoint_limits = connector_rate, endpoint_limits
    deadline = _deadline(args.deadline)
    queries = QueryLog()
    queries.install()
    pair = start_sandboxes()
    target = (
        chargebee_target(args.chargebee_rpm, args.stripe_burst)
        if args.target == "chargebee"
        else stripe_target(pair, limits)
    )
    is_stripe = target.kind == "stripe"
    workdir = Path(tempfile.mkdtemp(prefix="sync-bench-"))
    data: dict[str, Any] = {
        "benchmark": "sync_bench",
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished": False,
        "parameters": {
            "target": target.kind,
            "mode": args.mode if is_stripe else None,
            "accounts": args.accounts,
            "orders": args.accounts,
            "stripe_latency_s": args.stripe_latency,  # the billing sandbox's, whichever
            "chargebee_requests_per_minute": args.chargebee_rpm
            if target.kind == "chargebee"
            else None,
            # Stripe's set-up; None where the target is another system (its sandbox's bucket
            # holds stripe_burst requests all the same).
            "stripe_mode": limits.mode if is_stripe else None,
            "stripe_global_cap_rps": (limits.global_cap or None) if is_stripe else None,
            "stripe_endpoint_budget_rps": (limits.endpoint_budget or None) if is_stripe else None,
            "stripe_burst": limits.burst,
            "sandbox_has_both_levels": is_stripe,
            "connector_rate_rps": connector_rate if is_stripe else args.chargebee_rpm / 60.0,
            "connector_endpoint_limits": (endpoint_limits or None) if is_stripe else None,
            "connector_options": list(args.connector_option),
            "salesforce_latency_s": args.salesforce_latency,
            "page_size": args.page_size,
            "changed_share": args.changed_share,
            "scenarios_asked": list(args.scenarios),
            "deadline": args.deadline,
            "note": args.note,
        },
        "load_average_1_5_15_at_start": load_at_start,
        "machine": machine(),
        "scenarios": [],
    }
    try:
        t0 = time.monotonic()
        load_org(pair, args.accounts)
        pair.stripe.reset()  # no customers, no counts; latency and limits are set below
        target.server.reset()
        load_s = time.monotonic() - t0
        target.server.set_latency(args.stripe_latency)
        pair.salesforce.set_latency(args.salesforce_latency)
        # A real org of this size has a larger daily API allowance than the sandbox's default.
        pair.salesforce.set_daily_limit(max(15_000, args.accounts))
        queries.take()  # the load's own queries (none today) are not the connector's

        env = child_env(pair, target.secrets)
        shipped = target.mappings
        changed = changed_mappings(shipped, workdir / "mappings-changed", target.metadata_key)
        # The no-op change is made to whichever mapping the linked customers last got.
        same_after_change = same_payload_mappings(
            changed, workdir / "mappings-changed-same", target.name_field
        )
        same_after_shipped = same_payload_mappings(
            shipped, workdir / "mappings-shipped-same", target.name_field
        )
        configs = {
            key: write_config(pair, target, workdir, file, mappings=mappings, args=args)
            for key, file, mappings in (
                ("shipped", "config.yaml", shipped),
                ("changed", "config-changed-mapping.yaml", changed),
                ("same_after_changed", "config-same-after-change.yaml", same_after_change),
                ("same_after_shipped", "config-same-after-shipped.yaml", same_after_shipped),
            )
        }
        current = "shipped"
        baseline = run_child("bench.baseline_imports", [], env, workdir, timeout=300)
        data["setup"] = {
            "load_s": round(load_s, 2),
            "baseline_rss_mib": round(baseline.peak_rss_mib, 1),
            "baseline_cpu_s": round(baseline.cpu_s, 2),
            "baseline_wall_s": round(baseline.wall_s, 2),
            "baseline_what": "python -m bench.baseline_imports (interpreter and imports, no work)",
        }
        accounts_changed = 0
        for name in args.scenarios:
            what, argv, which, prepare = SCENARIOS[name]
            if deadline is not None and time.monotonic() >= deadline:
                data["not_run_after_deadline"] = args.scenarios[args.scenarios.index(name) :]
                print(f"deadline reached: {name} and later not run", file=sys.stderr, flush=True)
                break
            if which == "current":
                config = configs[current]
            elif which == "changed":
                config, current = configs["changed"], "changed"
            else:
                key = "same_after_changed" if current == "changed" else "same_after_shipped"
                config, current = configs[key], key
            if prepare == "change":
                accounts_changed = len(change_accounts(pair, args.accounts, args.changed_share))
                what = f"{what} ({accounts_changed:,} accounts)"
            print(f"{name} ...", file=sys.stderr, flush=True)

            def progress(elapsed: float, peak: float, requests: int, name: str = name) -> None:
                # A long scenario (a backfill of 1,000,000) leaves its figures so far in the
                # file while it runs: what it reached is there if it must be stopped or left.
                data["running"] = {
                    "scenario": name,
                    "elapsed_s": round(elapsed, 1),
                    "peak_rss_mib_sampled": round(peak, 1),
                    f"{target.kind}_requests": requests,
                    "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                _save(args.out, data)

            res = scenario(
                name,
                what,
                pair,
                [*argv, "-c", str(config)],
                env,
                workdir,
                args,
                target,
                baseline,
                deadline,
                progress,
            )
            data.pop("running", None)
            res["soql"] = summary(queries.take())
            data["scenarios"].append(res)
            _save(args.out, data)  # what finished survives a benchmark stopped later
            print(
                f"  {res['wall_s']} s, exit {res['exit_code']}"
                f"{', stopped at ' + res['stopped'] if res['stopped'] else ''}, {summary_line(res)}",
                file=sys.stderr,
                flush=True,
            )
            if res["exit_code"] != 0 or res["stopped"]:
                print(res.get("stderr_tail", ""), file=sys.stderr)
                break
        data["parameters"]["accounts_changed"] = accounts_changed
        ran = {s["scenario"] for s in data["scenarios"]}
        customers = target.customers()
        # A copy of every account: only worth it when a run wrote customer ids back.
        written_back = (
            sum(1 for a in pair.salesforce.records("Account") if a.get("Stripe_Customer_Id__c"))
            if customers
            else 0
        )
        data["checks"] = {
            f"{target.kind}_customers": len(customers),
            "accounts_with_customer_id_written_back": written_back,
            "every_account_has_one_customer": len(customers) == args.accounts == written_back
            if "backfill" in ran
            else None,
            "every_customer_has_the_new_mapping_field": all(
                target.metadata(c).get("bench_mapping") == "v2" for c in customers
            )
            if customers and "recheck_after_mapping_change" in ran
            else None,
        }
        # The commit is the one the run started at (a commit made while it ran changes no
        # code it loaded); the load average is the one as it ended.
        data["machine"]["load_average_1_5_15"] = _load_average()
        # This process holds the sandboxes: what holding the org at this size took.
        data["setup"]["sandboxes_peak_rss_mib"] = round((_vm_hwm_kib(os.getpid()) or 0) / 1024, 1)
        data["finished"] = True
        return data
    finally:
        queries.uninstall()
        target.stop()
        pair.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _save(out: Path, data: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out)


def summary_line(res: dict[str, Any]) -> str:
    r = res.get("report") or {}
    kind = res.get("target", "stripe")
    s = res[kind]
    return (
        f"orders {r.get('orders_read')}, created {r.get('created')}, updated {r.get('updated')}, "
        f"unchanged {r.get('unchanged')}, {kind.capitalize()} {s['total']} ({s['rate_limited']} x 429), "
        f"{s['achieved_rps_while_writing']} req/s of cap {s['effective_cap_rps']}, "
        f"Salesforce {res['salesforce']['total']} (bound {res['salesforce']['bound']}), "
        f"CPU {res['connector_process']['cpu_ms_per_record']} ms/record, "
        f"RSS {res['connector_process']['peak_rss_mib']} MiB"
    )


def main_parser() -> argparse.ArgumentParser:
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
        "--target",
        choices=("stripe", "chargebee"),
        default="stripe",
        help="the billing system the connector writes to, as its sandbox (default stripe)",
    )
    ap.add_argument(
        "--chargebee-rpm",
        type=float,
        default=CHARGEBEE_TEST_SITE_RPM,
        help="with --target chargebee: requests a minute the Chargebee sandbox allows and the "
        "connector is told (requests_per_minute); default 150, a test site's limit",
    )
    ap.add_argument(
        "--stripe-latency",
        "--billing-latency",
        dest="stripe_latency",
        type=float,
        default=0.25,
        help="seconds the billing sandbox (Stripe or Chargebee) waits per request (default 0.25, "
        "a Stripe customer create's usual latency)",
    )
    ap.add_argument(
        "--mode",
        choices=list(MODES),
        default="test",
        help="the Stripe set-up: test (global 25 req/s, endpoints 25), live (global 100, "
        "endpoints 25, Stripe's defaults), live-raised (global 100, endpoints raised to 100); "
        "default test",
    )
    ap.add_argument(
        "--stripe-cap",
        type=float,
        default=None,
        help="override the mode's global cap, req/s; 0 = no global limit",
    )
    ap.add_argument(
        "--stripe-endpoint-rate",
        type=float,
        default=None,
        help="override the mode's per-endpoint budget, req/s (Search is 20 at most); 0 = none",
    )
    ap.add_argument(
        "--stripe-burst",
        "--billing-burst",
        dest="stripe_burst",
        type=float,
        default=5,
        help="requests the sandbox's buckets let through back-to-back (default 5, as Stripe tolerates bursts)",
    )
    ap.add_argument(
        "--connector-rate",
        type=float,
        default=0,
        help="billing.accounts[].max_requests_per_second (default: the effective cap of creates)",
    )
    ap.add_argument(
        "--salesforce-latency",
        type=float,
        default=0.0,
        help="seconds the Salesforce sandbox waits per request, i.e. per query page (default 0)",
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
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help="comma-separated, run in this order (default: all): " + ", ".join(SCENARIOS),
    )
    ap.add_argument(
        "--connector-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a key of the billing account's config (dotted for nested keys, value as YAML),"
        " e.g. an endpoint budget the connector's limiter reads; repeatable",
    )
    ap.add_argument(
        "--deadline",
        default=None,
        help="UTC time (HH:MM or ISO 8601): no scenario starts after it, and the one running is "
        "stopped (SIGTERM) at it; what ran is saved",
    )
    ap.add_argument("--note", default="", help="a sentence saved with the figures")
    ap.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results" / "latest.json",
        help="where to write the JSON",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = main_parser()
    args = ap.parse_args(argv)
    if not 1 <= args.accounts <= MAX_ACCOUNTS:
        ap.error(f"--accounts must be between 1 and {MAX_ACCOUNTS}")
    if not 0 < args.changed_share <= 1:
        ap.error("--changed-share must be in (0, 1]")
    if args.stripe_burst < 1:
        ap.error("--stripe-burst must be at least 1")
    for name in ("stripe_latency", "salesforce_latency", "stripe_endpoint_rate", "connector_rate"):
        if (getattr(args, name) or 0) < 0:
            ap.error(f"--{name.replace('_', '-')} must not be negative")
    args.scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    unknown = [x for x in args.scenarios if x not in SCENARIOS]
    if unknown or not args.scenarios:
        ap.error(f"--scenarios: unknown {unknown}; choose from {', '.join(SCENARIOS)}")
    if args.target == "chargebee" and not 0 < args.chargebee_rpm <= 10_000:
        ap.error("--chargebee-rpm must be in (0, 10000], as the connector's requests_per_minute")
    data = run(args)
    _save(args.out, data)
    if args.target == "stripe":  # the README's tables are Stripe's
        print(readme_tables.sync_table(data, args.out.name))
    print(f"\nwritten to {args.out}", file=sys.stderr)
    failed = [s["scenario"] for s in data["scenarios"] if s["exit_code"] != 0 or s["stopped"]]
    return 1 if failed or len(data["scenarios"]) < len(args.scenarios) else 0


if __name__ == "__main__":
    raise SystemExit(main())
