"""The daemon's health: what each partition's last run did, the Prometheus metrics, and the
small HTTP server that answers /livez, /readyz and /metrics.

Readiness is per process: ready when the last run of every partition this process holds
succeeded within `ready_within` (two intervals by default); a replica that holds no partition
(a standby) is ready once it has ticked. The clock is injected so tests never wait for time.
What this module must never do: serve on anything but the address it was given (loopback by
default), or put an error text (which may quote a service) into a metric label.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


@dataclass(frozen=True, slots=True)
class PartitionRun:
    """What the last finished run of one partition did, as /readyz judges it."""

    partition: str
    run_id: str
    status: str  # succeeded | partial | failed | interrupted
    finished_at: datetime
    error: str | None = None


class Metrics:
    """Every metric the daemon exports, on a registry of its own (one per daemon)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = ["partition"]
        self.runs = Counter(
            "billing_connector_runs", "Runs by outcome.", [*p, "outcome"], registry=r
        )
        self.records = Counter(
            "billing_connector_records", "Records by outcome.", [*p, "outcome"], registry=r
        )
        self.billing_calls = Counter(
            "billing_connector_billing_calls", "Calls to the billing system.", p, registry=r
        )
        self.salesforce_calls = Counter(
            "billing_connector_salesforce_calls", "Salesforce API calls.", p, registry=r
        )
        self.rate_limited = Counter(
            "billing_connector_rate_limited",
            "HTTP 429 answers from the billing system (retried with backoff).",
            p,
            registry=r,
        )
        self.run_duration = Histogram(
            "billing_connector_run_duration_seconds",
            "Duration of a run.",
            p,
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.last_success = Gauge(
            "billing_connector_last_success_timestamp_seconds",
            "When the partition's last successful run finished (Unix time).",
            p,
            registry=r,
        )
        self.cursor_lag = Gauge(
            "billing_connector_cursor_lag_seconds",
            "How far the partition's incremental cursor is behind now.",
            p,
            registry=r,
        )
        self.retry_list = Gauge(
            "billing_connector_retry_list_size", "Records waiting for a retry.", p, registry=r
        )
        self.open_conflicts = Gauge(
            "billing_connector_open_conflicts", "Conflicts waiting for an admin.", registry=r
        )
        self.partitions_held = Gauge(
            "billing_connector_partitions_held", "Partitions this process holds.", registry=r
        )
        self.skipped_ticks = Counter(
            "billing_connector_skipped_ticks",
            "Scheduled runs skipped because the previous one was still going.",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Health:
    """The last run of each held partition, and whether the process counts as ready."""

    def __init__(
        self, *, ready_within: timedelta, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.ready_within = ready_within
        self.now = now
        self._lock = threading.Lock()
        self._last: dict[str, PartitionRun] = {}
        self._held: frozenset[str] = frozenset()
        self._ticked = False

    def record(self, run: PartitionRun) -> None:
        with self._lock:
            self._last[run.partition] = run

    def set_held(self, partitions: frozenset[str]) -> None:
        with self._lock:
            self._held = partitions
            self._ticked = True

    def last(self, partition: str) -> PartitionRun | None:
        with self._lock:
            return self._last.get(partition)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details per partition) as /readyz reports it."""
        with self._lock:
            held, last, ticked = self._held, dict(self._last), self._ticked
        now = self.now()
        parts: dict[str, Any] = {}
        ready = ticked
        for name in sorted(held):
            run = last.get(name)
            if run is None:
                parts[name] = {"ready": False, "reason": "no run finished yet"}
                ready = False
                continue
            fresh = now - run.finished_at <= self.ready_within
            ok = run.status == "succeeded" and fresh
            parts[name] = {
                "ready": ok,
                "status": run.status,
                "run_id": run.run_id,
                "finished_at": run.finished_at.isoformat(timespec="seconds"),
            }
            if not ok:
                parts[name]["reason"] = (
                    f"last run {run.status}" if run.status != "succeeded" else "last run too old"
                )
                ready = False
        return ready, {"ready": ready, "ticked": ticked, "partitions": parts}


class HealthServer:
    """/livez, /readyz and /metrics on a thread of its own."""

    def __init__(self, health: Health, metrics: Metrics, *, host: str, port: int) -> None:
        import json

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/livez":
                    self._send(200, b'{"live": true}\n', "application/json")
                elif path == "/readyz":
                    ready, body = health.readiness()
                    data = (json.dumps(body) + "\n").encode()
                    self._send(200 if ready else 503, data, "application/json")
                elif path == "/metrics":
                    self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would drown the run logs

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
