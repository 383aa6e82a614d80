"""The HTTP machinery both sandbox servers share: routing, faults, latency, rate limits.

Each server subclasses `SandboxServer`, registers routes, and answers like its real service.
The control API under `/_sandbox/` (and the same methods in Python) lets tests and benchmarks
inject faults, add latency and cap the request rate. Servers bind 127.0.0.1 only: there is no
way to make them listen elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # from the route pattern
    #: what the server learned about the request before routing it (e.g. the Stripe account)
    context: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def query_one(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Response:
    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(
            status,
            json.dumps(data, separators=(",", ":")).encode("utf-8"),
            {"Content-Type": "application/json;charset=UTF-8", **(headers or {})},
        )

    @classmethod
    def empty(cls, status: int = 204, headers: dict[str, str] | None = None) -> Response:
        return cls(status, None, dict(headers or {}))


@dataclass
class Fault:
    """The next `count` matching requests fail.

    `drop="before"` closes the connection without applying the request, `drop="after"` applies
    it and then closes the connection without answering (the write happened, the client does
    not know). Otherwise the request is answered with `status` and `body` and not applied.
    """

    count: int = 1
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    method: str | None = None  # match only this method
    path: str | None = None  # match paths containing this regex
    drop: str | None = None  # "before" | "after"
    hits: int = 0
    # match only requests carrying this header with this value (e.g. one Stripe-Context)
    header: tuple[str, str] | None = None
    # match only requests whose body contains this text (e.g. one Salesforce account's id), so
    # a fault aims at one record even when several are in flight
    body_contains: str | None = None

    def matches(self, req: Request) -> bool:
        if self.method and req.method.upper() != self.method.upper():
            return False
        if self.body_contains is not None and self.body_contains.encode() not in req.body:
            return False
        if self.header is not None and req.header(self.header[0]) != self.header[1]:
            return False
        return not (self.path and not re.search(self.path, req.path))


Clock = Callable[[], float]


class TokenBucket:
    """A token bucket refilled continuously from a clock (the monotonic clock unless given).

    Starts with `burst` tokens; each request takes one. Over any window of T seconds it lets
    through at most `burst + rate * T` requests, so a benchmark measuring over a second or
    more sees the cap itself (a burst of one is a strict cap). Tests pass their own clock and
    move it by hand: no test of the limiter ever waits for real time to pass.
    """

    def __init__(self, rate: float, burst: float = 1.0, *, clock: Clock | None = None) -> None:
        self.rate = float(rate)
        self.capacity = max(1.0, float(burst))
        self.tokens = self.capacity
        self.clock: Clock = clock or time.monotonic
        self.stamp = self.clock()
        self.lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now

    def available(self) -> bool:
        """Whether a request could pass now (takes nothing)."""
        with self.lock:
            self._refill()
            return self.tokens >= 1.0

    def take(self) -> bool:
        with self.lock:
            self._refill()
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


Handler = Callable[[Request], Response]


class SandboxServer:
    """A threaded HTTP server on 127.0.0.1 with routes and a control API."""

    #: name used in logs and the control API answers
    kind = "sandbox"

    def __init__(self, port: int = 0) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._faults: list[Fault] = []
        self._faults_lock = threading.Lock()
        self.latency = 0.0
        #: the clock the rate cap reads; tests replace it to move time by hand
        self.limit_clock: Clock = time.monotonic
        self._bucket: TokenBucket | None = None
        self.requests: Counter[str] = Counter()  # "METHOD /path" -> count (control calls excluded)
        self.rate_limited = 0
        #: API requests being served now, and the most served at once (requests overlap only
        #: when a client sends them concurrently: tests read concurrency here, not from timing)
        self.in_flight = 0
        self.peak_in_flight = 0
        #: resource -> requests on it being served now (`resource_of`), and every time a
        #: request arrived while another on the same resource was still being served
        self._busy: Counter[str] = Counter()
        self.overlaps: list[str] = []
        self._flight_lock = threading.Lock()
        #: requests whose body ended before its Content-Length (client gone mid-send): dropped
        self.incomplete_bodies = 0
        self.lock = threading.RLock()  # held by handlers that touch the data
        # Notified whenever a request finishes (answered or dropped), so tests wait on the
        # server's own progress instead of sleeping.
        self.progress = threading.Condition()
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.route("GET", r"/_sandbox/stats", self._ctl_stats)
        self.route("POST", r"/_sandbox/faults", self._ctl_faults)
        self.route("DELETE", r"/_sandbox/faults", self._ctl_clear_faults)
        self.route("POST", r"/_sandbox/latency", self._ctl_latency)
        self.route("POST", r"/_sandbox/rate_limit", self._ctl_rate_limit)

    # --- routing -------------------------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Register `handler` for `method` and a full-match regex with named groups."""
        self._routes.append((method.upper(), re.compile(pattern + r"/?"), handler))

    def dispatch(self, req: Request) -> Response:
        allowed = False
        for method, pattern, handler in self._routes:
            m = pattern.fullmatch(req.path)
            if not m:
                continue
            allowed = True
            if method != req.method.upper():
                continue
            req.params = {k: v for k, v in m.groupdict().items() if v is not None}
            return handler(req)
        if allowed:
            return self.method_not_allowed(req)
        return self.not_found(req)

    # Subclasses answer these in their service's own error shape.
    def not_found(self, req: Request) -> Response:
        return Response.json({"error": "not found", "path": req.path}, 404)

    def method_not_allowed(self, req: Request) -> Response:
        return Response.json({"error": "method not allowed"}, 405)

    def rate_limited_response(self, req: Request) -> Response:
        return Response.json({"error": "rate limited"}, 429)

    def decorate(self, req: Request, resp: Response) -> Response:
        """Add headers every answer of this service carries (request ids, limit info)."""
        return resp

    def counts_as_call(self, req: Request) -> bool:
        return not req.path.startswith("/_sandbox/")

    def reset_flight(self) -> None:
        """Start counting `peak_in_flight` and `overlaps` afresh (between two runs of a test)."""
        with self._flight_lock:
            self.peak_in_flight = self.in_flight
            self.overlaps.clear()

    def resource_of(self, req: Request) -> str | None:
        """What a write concerns, to see two writes of it overlap (None: not tracked)."""
        return None

    # --- faults, latency, rate limit -------------------------------------------------------

    def inject_fault(self, fault: Fault | None = None, **kwargs: Any) -> Fault:
        f = fault or Fault(**kwargs)
        with self._faults_lock:
            self._faults.append(f)
        return f

    def clear_faults(self) -> None:
        with self._faults_lock:
            self._faults.clear()

    def set_latency(self, seconds: float) -> None:
        self.latency = max(0.0, float(seconds))

    def set_rate_limit(self, per_second: float | None, *, burst: float = 1.0) -> None:
        """Cap every request at `per_second` (429 beyond it), allowing `burst` back-to-back.

        One bucket for the whole server, before authentication: a blunt cap. The Stripe
        sandbox also has Stripe's own two-level limiter (`StripeSandbox.set_rate_limits`).
        """
        self._bucket = (
            TokenBucket(per_second, burst, clock=lambda: self.limit_clock()) if per_second else None
        )

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Block until `predicate()` holds after some request finished; False on timeout.

        The timeout only keeps a broken test from hanging: nothing is measured by it.
        """
        with self.progress:
            return self.progress.wait_for(predicate, timeout)

    def _finished(self) -> None:
        with self.progress:
            self.progress.notify_all()

    def _take_fault(self, req: Request) -> Fault | None:
        with self._faults_lock:
            for f in self._faults:
                if f.count > 0 and f.matches(req):
                    f.count -= 1
                    f.hits += 1
                    if f.count == 0:
                        self._faults.remove(f)
                    return f
        return None

    # --- control API ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "requests": dict(self.requests),
            "total": sum(self.requests.values()),
            "rate_limited": self.rate_limited,
            "incomplete_bodies": self.incomplete_bodies,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "overlaps": list(self.overlaps),
        }

    def _ctl_stats(self, req: Request) -> Response:
        return Response.json(self.stats())

    def _ctl_faults(self, req: Request) -> Response:
        spec = req.json() or {}
        allowed = {"count", "status", "body", "headers", "method", "path", "drop", "body_contains"}
        self.inject_fault(**{k: v for k, v in spec.items() if k in allowed})
        return Response.json({"ok": True})

    def _ctl_clear_faults(self, req: Request) -> Response:
        self.clear_faults()
        return Response.json({"ok": True})

    def _ctl_latency(self, req: Request) -> Response:
        self.set_latency((req.json() or {}).get("seconds", 0))
        return Response.json({"ok": True})

    def _ctl_rate_limit(self, req: Request) -> Response:
        spec = req.json() or {}
        self.set_rate_limit(spec.get("per_second"), burst=spec.get("burst", 1.0))
        return Response.json({"ok": True})

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> SandboxServer:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; without this, Nagle's algorithm waits for
            # the client's delayed ACK and every keep-alive answer takes ~40 ms.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet by default
                pass

            def _serve(self) -> None:
                try:
                    self._answer()
                finally:
                    server._finished()

            def _answer(self) -> None:
                split = urlsplit(self.path)
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if length < 0:
                    self.send_error(400, "Bad Content-Length")
                    return
                try:
                    body = self.rfile.read(length) if length else b""
                except OSError:  # reset by a client that died mid-send
                    body = b""
                if len(body) < length:
                    # The client went away before sending the whole body (killed mid-send).
                    # A real server never sees a complete request, so nothing is applied and
                    # nothing is answered: applying the part that arrived would create, say,
                    # a customer without its metadata.
                    with server.lock:
                        server.incomplete_bodies += 1
                    self.close_connection = True
                    return
                req = Request(
                    method=self.command,
                    path=split.path,
                    query=parse_qs(split.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                resp = server._handle(req)
                if resp is None:  # drop the connection
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if "Date" in resp.headers:
                    # The server's own clock (a sandbox's logical one), not the wall clock.
                    self.send_response_only(resp.status)
                    self.send_header("Server", self.version_string())
                else:
                    self.send_response(resp.status)
                payload = resp.body or b""
                for k, v in resp.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if payload and self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _serve

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

        self._httpd = _Server((HOST, self._port), _Handler)
        # A short poll interval lets stop() return quickly (tests start and stop servers often).
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.kind}-sandbox",
            daemon=True,
        )
        self._thread.start()
        return self

    def _handle(self, req: Request) -> Response | None:
        if req.path.startswith("/_sandbox/"):
            return self._answer(req)
        try:
            resource = self.resource_of(req)
        except Exception:  # a malformed body is answered by the route, not tracked
            resource = None
        with self._flight_lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            if resource is not None:
                if self._busy[resource]:
                    self.overlaps.append(resource)
                self._busy[resource] += 1
        try:
            return self._answer(req)
        finally:
            with self._flight_lock:
                self.in_flight -= 1
                if resource is not None:
                    self._busy[resource] -= 1
                    if not self._busy[resource]:
                        del self._busy[resource]

    def _answer(self, req: Request) -> Response | None:
        control = req.path.startswith("/_sandbox/")
        if not control:
            # Counted on arrival, before the latency: a test can act while a request is in flight.
            if self.counts_as_call(req):
                self.requests[f"{req.method} {req.path}"] += 1
            if self.latency:
                time.sleep(self.latency)
            if self._bucket is not None and not self._bucket.take():
                self.rate_limited += 1
                return self.decorate(req, self.rate_limited_response(req))
            fault = self._take_fault(req)
            if fault is not None:
                if fault.drop == "before":
                    return None
                if fault.drop == "after":
                    self.dispatch(req)
                    return None
                resp = (
                    Response.json(fault.body, fault.status, fault.headers)
                    if fault.body is not None
                    else Response.empty(fault.status, fault.headers)
                )
                return self.decorate(req, resp)
        try:
            resp = self.dispatch(req)
        except Exception as exc:  # a sandbox bug must answer 500, not hang the client
            resp = Response.json({"error": f"sandbox error: {type(exc).__name__}: {exc}"}, 500)
        return resp if control else self.decorate(req, resp)

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> SandboxServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
