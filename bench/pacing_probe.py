"""Where the 429s of a loaded backfill come from: the connector's send times against the sandbox's.

The limiter paces requests when they are sent; the Stripe sandbox counts them when they arrive.
This probe drives the connector's own `StripeTarget` (its shared limiter, stripe-python, 32
threads) in a child process against the Stripe sandbox in this one, with equal global and
endpoint caps, and records three instants per request on the one monotonic clock of the host:
the slot the limiter booked, when the thread actually sent, and when the sandbox admitted or
refused it. Replaying Stripe's bucket (the sandbox's `TokenBucket`, same rate and burst) over
each series says where a burst beyond the bucket first appears: in the booked slots (the
limiter's own schedule), in the send times (threads woken late by a loaded CPU and sent
together), or only on arrival (bunched between the send and the sandbox).

    PYTHONPATH=$PWD nice -n 10 python bench/pacing_probe.py --requests 3000
    nice -n 19 python -c 'while True: pass' &   # a CPU hog, to load a quiet machine

It contacts nothing but 127.0.0.1 and prints one JSON object.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def replay(times: list[float], rate: float, burst: float) -> int:
    """How many of `times` a bucket of `rate` and `burst` would refuse (refused take nothing)."""
    from connector.sandbox.http import TokenBucket

    now = [0.0]
    bucket = TokenBucket(rate, burst, clock=lambda: now[0])
    if times:
        now[0] = bucket.stamp = min(times)
    refused = 0
    for t in sorted(times):
        now[0] = t
        refused += not bucket.take()
    return refused


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)
    pick = lambda q: round(v[min(len(v) - 1, int(q * len(v)))] * 1000, 1)  # noqa: E731
    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(v[-1] * 1000, 1)}


def child(url: str, key: str, args: argparse.Namespace, out: Path) -> None:
    from connector.billing import ratelimit
    from connector.billing.stripe import StripeTarget
    from connector.config import BillingAccountConfig, SecretSource

    for setting in args.limiter:  # e.g. HEADROOM=1.0: the limiter as it would be with it
        name, _, value = setting.partition("=")
        setattr(ratelimit, name, ast.literal_eval(value))

    target = StripeTarget(
        BillingAccountConfig(
            id="probe",
            api_base=url,
            max_requests_per_second=args.rate,
            endpoint_limits={"customers.create": args.endpoint_rate},
        ),
        SecretSource({"STRIPE_API_KEY": key}),
    )
    lim = target.limiter
    mine = threading.local()
    booked: list[float] = []
    sent: list[float] = []
    lock = threading.Lock()
    reserve, call = lim.reserve, lim.call

    def booking(endpoint: str) -> float:
        delay = reserve(endpoint)
        mine.booked = time.monotonic() + max(0.0, delay)
        return delay

    def timed_call(endpoint: str, send: Any, *a: Any, **k: Any) -> Any:
        def timed() -> Any:
            with lock:
                booked.append(getattr(mine, "booked", float("nan")))
                sent.append(time.monotonic())
            return send()

        return call(endpoint, timed, *a, **k)

    if hasattr(lim, "_book"):  # the limiter that books again when a thread wakes late

        def book(endpoint: str) -> tuple[float, float]:
            now, start = book_slot(endpoint)
            mine.booked = start
            return now, start

        book_slot = lim._book
        lim._book = book  # type: ignore[method-assign]
    else:
        lim.reserve = booking  # type: ignore[method-assign]
    lim.call = timed_call  # type: ignore[method-assign]
    started = time.monotonic()

    def one(i: int) -> None:
        target.create_customer({"name": f"probe {i}"}, idempotency_key=f"probe-{i}")

    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        list(pool.map(one, range(args.requests)))
    out.write_text(
        json.dumps(
            {
                "booked": booked,
                "sent": sent,
                "seconds": time.monotonic() - started,
                "rate_limited": target.rate_limited,
                "refused": dict(lim.refused),
                "rebooked": getattr(lim, "rebooked", None),
            }
        )
    )


def parent(args: argparse.Namespace) -> dict[str, Any]:
    from connector.sandbox.run import SANDBOX_STRIPE_KEY
    from connector.sandbox.stripe import StripeSandbox
    from connector.sandbox.stripe_limits import RateLimits

    sandbox = StripeSandbox(
        rate_limits=RateLimits(
            burst=args.burst, global_rate=args.rate, endpoint_rate=args.endpoint_rate
        )
    )
    sandbox.set_latency(args.latency)
    sandbox.start()
    assert sandbox.limiter is not None
    arrivals: list[tuple[float, bool]] = []
    admit = sandbox.limiter.admit

    def counted(*a: Any, **k: Any) -> str | None:
        reason = admit(*a, **k)
        arrivals.append((time.monotonic(), reason is None))
        return reason

    sandbox.limiter.admit = counted  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "child.json"
        argv = [sys.executable, __file__, "--child", sandbox.url, SANDBOX_STRIPE_KEY, str(out)]
        if args.child_nice:  # the connector starved, the sandbox (Stripe's stand-in) not
            argv = ["nice", "-n", str(args.child_nice), *argv]
        argv += [
            f"--{k.replace('_', '-')}={v}"
            for k, v in vars(args).items()
            if k not in ("child", "limiter", "child_nice")
        ]
        argv += [f"--limiter={x}" for x in args.limiter]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        # Its log lines (one per 429) stay out of the JSON this prints.
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        got = json.loads(out.read_text())
    sandbox.stop()
    cap = min(args.rate, args.endpoint_rate)
    booked = [b for b in got["booked"] if b == b]
    sent, arrived = got["sent"], [t for t, _ in arrivals]
    late = [s - b for b, s in zip(got["booked"], sent, strict=True) if b == b]
    admitted = sorted(t for t, ok in arrivals if ok)
    span = admitted[-1] - admitted[0] if len(admitted) > 1 else 0.0
    return {
        "requests": args.requests,
        "cap_rps": cap,
        "burst": args.burst,
        "latency_s": args.latency,
        "load_average": list(os.getloadavg()),
        "refused_by_sandbox": sum(not ok for _, ok in arrivals),
        "refused_if_arrived_when": {
            "booked": replay(booked, cap, args.burst),
            "sent": replay(sent, cap, args.burst),
            "arrived": replay(arrived, cap, args.burst),
        },
        "sent_after_booked_slot": _quantiles(late),
        "admitted_rps_over_cap": round((len(admitted) - 1) / span / cap, 3) if span else None,
        "limiter": args.limiter,
        "child_nice": args.child_nice,
        "client_seconds": round(got["seconds"], 2),
        "rebooked": got["rebooked"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=3, metavar=("URL", "KEY", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=100.0, help="global cap, req/s (default 100)")
    ap.add_argument(
        "--endpoint-rate", type=float, default=100.0, help="create's budget (default 100)"
    )
    ap.add_argument("--burst", type=float, default=5.0, help="the sandbox's burst (default 5)")
    ap.add_argument("--latency", type=float, default=0.25, help="sandbox seconds per request")
    ap.add_argument("--threads", type=int, default=32, help="writer threads (max_in_flight)")
    ap.add_argument(
        "--child-nice",
        type=int,
        default=0,
        help="run the connector's side this much nicer than the sandbox's (default 0: the same)",
    )
    ap.add_argument(
        "--limiter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a constant of connector.billing.ratelimit in the child (HEADROOM=1.0); repeatable",
    )
    args = ap.parse_args()
    if args.child:
        url, key, out = args.child
        child(url, key, args, Path(out))
        return
    print(json.dumps(parent(args), indent=1))


if __name__ == "__main__":
    main()
