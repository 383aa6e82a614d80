"""State store micro-benchmark: connector CPU and wall time per record, by what the engine does.

It opens a fresh store (a temp SQLite file, or a fresh schema in PostgreSQL) and replays, for N
accounts, the store calls a sync makes today (engine.py at this commit), timing each kind:

- `create`: per account, `intents.record` before the Stripe request and
  `intents.complete_create` after it (link, order link, intent dropped in one transaction);
  then per page of `--page` accounts the engine's page bookkeeping (`links.save` of the page,
  `links.save_order_links`, `runs.record_outcomes`, `retries.clear`) in one `transaction()`.
- `create_batched`: the same per page with `intents.record_many` and
  `intents.complete_creates` (one transaction each per page, for a writer with a page in flight).
- `unchanged`: per page, the look-ups a sync makes (`links.get_many`, `links.order_links`)
  and the page bookkeeping with the order-link rewrite and no outcome rows.
- `links_save_one_by_one`: N `links.save([link])` calls, one transaction each (the floor a
  per-row design pays).
- `links_save_batched` and `outcomes_batched`: N links saved and N outcomes recorded `--page`
  at a time.

Per case it prints and writes (as JSON, `--out`) the process CPU (`time.process_time`, which
includes the database driver's work in this process but not PostgreSQL's server) and wall
time per record in milliseconds. SQLite's own work runs in this process and is in the CPU
figure; PostgreSQL's runs in the server and is only in the wall figure.

    python bench/store_bench.py --accounts 2000 --backend sqlite --backend postgresql

What it must never do: touch a database but the temp file or its own schema (dropped after).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.machine import machine  # noqa: E402
from connector.state.records import Intent, Link, OrderLink, Outcome  # noqa: E402
from connector.state.store import StateStore  # noqa: E402

PG_URL = os.environ.get("BC_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BA = "stripe"
MAX_ACCOUNTS = 200_000


def acc(i: int) -> str:
    return f"001B{i:014d}"


def payload(i: int) -> dict[str, Any]:
    return {
        "name": f"Bench Customer {i:06d}",
        "phone": f"+49 30 {i:07d}",
        "address": {"line1": f"{i} Bench Street", "city": "Berlin", "country": "DE"},
        "metadata": {"salesforce_account_id": acc(i)},
    }


def link(i: int, now: datetime, *, tag: str = "") -> Link:
    return Link(
        billing_account=BA,
        account_id=acc(i),
        customer_id=f"cus_{tag}{i:014d}",
        status="active",
        payload_hash=f"{i:064x}",
        payload=payload(i),
        mapping_fingerprint="f" * 16,
        basis_order_id=f"801B{i:014d}",
        basis_order_activated_at=now,
        writeback_pending=True,
        first_synced_at=now,
        last_synced_at=now,
    )


def outcome(i: int, kind: str = "created") -> Outcome:
    return Outcome(
        account_id=acc(i),
        billing_account=BA,
        outcome=kind,
        customer_id=f"cus_{i:014d}",
        order_id=f"801B{i:014d}",
        changed_fields=("name", "phone"),
    )


@contextmanager
def open_store(backend: str) -> Iterator[StateStore]:
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="store-bench-"))
        try:
            with StateStore.open(f"sqlite:///{folder / 'state.db'}") as store:
                yield store
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    import psycopg

    schema = f"bc_bench_{uuid.uuid4().hex[:12]}"
    conninfo = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        with StateStore.open(f"{PG_URL}?options=-csearch_path%3D{schema}") as store:
            yield store
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def timed(n: int, work: Callable[[], None]) -> dict[str, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    work()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "records": n,
        "cpu_ms_per_record": round(cpu * 1000 / n, 4),
        "wall_ms_per_record": round(wall * 1000 / n, 4),
    }


def run_backend(backend: str, n: int, page: int) -> dict[str, dict[str, float]]:
    now = datetime.now(UTC)
    out: dict[str, dict[str, float]] = {}
    with open_store(backend) as store:
        run_id = store.runs.start("sync", dry_run=False)

        def bookkeeping(ids: range, *, created: bool) -> None:
            # What the engine's per-page `_record` does, in one transaction.
            with store.transaction():
                store.links.save([link(i, now) for i in ids])
                store.links.save_order_links(
                    [OrderLink(BA, f"801B{i:014d}", acc(i), f"cus_{i:014d}") for i in ids]
                )
                store.runs.record_outcomes(run_id, [outcome(i) for i in ids] if created else [])
                store.retries.clear(BA, [acc(i) for i in ids])

        def creates() -> None:
            for start in range(0, n, page):
                ids = range(start, min(n, start + page))
                for i in ids:
                    store.intents.record(
                        Intent(BA, acc(i), f"key-{i}", f"{i:064x}", now, payload(i))
                    )
                    store.intents.complete_create(
                        link(i, now), [OrderLink(BA, f"801B{i:014d}", acc(i), f"cus_{i:014d}")]
                    )
                bookkeeping(ids, created=True)

        def creates_batched() -> None:
            # The form for a writer with a page of requests in flight: the page's intents in
            # one transaction before the requests, their links after them in another.
            for start in range(3 * n, 4 * n, page):
                ids = range(start, min(4 * n, start + page))
                store.intents.record_many(
                    Intent(BA, acc(i), f"key-{i}", f"{i:064x}", now, payload(i)) for i in ids
                )
                store.intents.complete_creates(
                    (link(i, now), [OrderLink(BA, f"801B{i:014d}", acc(i), f"cus_{i:014d}")])
                    for i in ids
                )
                bookkeeping(ids, created=True)

        def unchanged() -> None:
            for start in range(0, n, page):
                ids = range(start, min(n, start + page))
                found = store.links.get_many(BA, [acc(i) for i in ids])
                assert len(found) == len(ids), "the create case must have linked every account"
                store.links.order_links(BA, [f"801B{i:014d}" for i in ids])
                bookkeeping(ids, created=False)

        def one_by_one() -> None:
            for i in range(n, 2 * n):
                store.links.save([link(i, now, tag="x")])

        def links_batched() -> None:
            for start in range(2 * n, 3 * n, page):
                store.links.save(
                    [link(i, now, tag="y") for i in range(start, min(3 * n, start + page))]
                )

        def outcomes_batched() -> None:
            for start in range(0, n, page):
                store.runs.record_outcomes(
                    run_id, [outcome(i, "updated") for i in range(start, min(n, start + page))]
                )

        for name, work in (
            ("create", creates),
            ("create_batched", creates_batched),
            ("unchanged", unchanged),
            ("links_save_one_by_one", one_by_one),
            ("links_save_batched", links_batched),
            ("outcomes_batched", outcomes_batched),
        ):
            out[name] = timed(n, work)
            print(f"  {backend:10} {name:22} {out[name]}", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--accounts", type=int, default=2000, help="records per case (default 2000)")
    ap.add_argument("--page", type=int, default=200, help="records per batch (default 200)")
    ap.add_argument(
        "--backend",
        action="append",
        choices=["sqlite", "postgresql"],
        help="repeat for both (default: sqlite and postgresql)",
    )
    ap.add_argument("--label", default="", help="a word saved with the figures (e.g. before)")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    if not 1 <= args.accounts <= MAX_ACCOUNTS:
        ap.error(f"--accounts must be between 1 and {MAX_ACCOUNTS}")
    if not 1 <= args.page <= 2000:
        ap.error("--page must be between 1 and 2000")
    backends = args.backend or ["sqlite", "postgresql"]
    results = {b: run_backend(b, args.accounts, args.page) for b in backends}
    data = {
        "benchmark": "store_bench",
        "label": args.label,
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "parameters": {"accounts": args.accounts, "page": args.page},
        "machine": machine(),
        "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"written to {args.out}", file=sys.stderr)
    else:
        print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
