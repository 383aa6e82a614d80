"""The daemon (`billing-connector run`): the schedule, signals, partitions and their locks,
health and metrics.

Each tick (APScheduler: an interval or a crontab line, plus an optional nightly full recheck)
the daemon first settles which partitions it holds: it counts the live replicas (each holds a
`member-*` lock), keeps at most its fair share, lets go of extras so a newcomer can take them,
and takes free ones, including those of a replica that died (the server or the OS freed its
locks). Then it runs one engine pass per held partition, with that partition's lock checked
before every write. A tick still running when the next is due is skipped and logged, never run
twice. Failures that will not pass by themselves (configuration, credentials refused) stop the
daemon with their exit code; the rest back off and are retried at later ticks.
What this module must never do: run a partition without holding its lock, or wait for a lock.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from connector.alerts import Alerter
from connector.app import (
    account_mappings,
    build_targets,
    connect_source,
    holder_name,
    make_engine,
)
from connector.billing.base import BillingTarget
from connector.config import Config, SecretSource
from connector.engine import ORDERS_CURSOR, Discard, RunReport
from connector.errors import (
    AuthenticationError,
    ConfigError,
    ConnectorError,
    LockHeldError,
    LockLost,
    UnavailableError,
)
from connector.health import Health, Metrics, PartitionRun
from connector.log import REDACTOR, get_logger
from connector.mapping import CustomerMapping, load_mappings
from connector.partitions import (
    MEMBER_PREFIX,
    Partition,
    member_lock_name,
    partitions_of,
    scoped_cursor,
    seed_cursors,
)
from connector.salesforce import SalesforceSource, parse_sf_datetime
from connector.state.ports import Lock
from connector.state.store import StateStore

log = get_logger(__name__)

# Errors after which another try cannot help until a human acts: the daemon stops.
FATAL_ERRORS = {"AuthenticationError", "ConfigError", "MappingError"}
# Longest wait between two attempts of a partition whose runs keep failing transiently.
MAX_BACKOFF = timedelta(hours=1)


class DaemonStopped(ConnectorError):
    """The daemon stopped on a failure that will not pass by itself; carries its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one tick did: the partitions held after it and the report of each run."""

    held: frozenset[str]
    reports: dict[str, RunReport]
    skipped: bool = False


@dataclass
class _Held:
    partition: Partition
    handle: Lock
    stack: ExitStack


@dataclass
class _Backoff:
    failures: int = 0
    not_before: datetime | None = None


class Daemon:
    """Ticks on demand (`tick`) or on a schedule (`serve`). One per process."""

    def __init__(
        self,
        config: Config,
        secrets: SecretSource,
        *,
        holder: str | None = None,
        stop: threading.Event | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        alerter: Alerter | None = None,
        metrics: Metrics | None = None,
        login: Callable[[Config, SecretSource], SalesforceSource] | None = None,
    ) -> None:
        self.config = config
        self.secrets = secrets
        self.holder = holder or holder_name()
        self.stop = stop or threading.Event()
        self.now = now
        self.metrics = metrics or Metrics()
        self.interval = schedule_interval(config)
        self.health = Health(
            ready_within=self.interval * config.health.ready_within_intervals, now=now
        )
        url = secrets.get(config.alerts.webhook_url_env)
        self.alerter = alerter or Alerter(url, timeout=config.alerts.timeout_seconds)
        self._connect = login or connect_source
        # Configuration first (exit 2 before anything is contacted), then the store.
        self.mapping: CustomerMapping = load_mappings(config.mappings_path)
        self.mappings = account_mappings(config, self.mapping)
        self.targets: dict[str, BillingTarget] = {t.name: t for t in build_targets(config, secrets)}
        # One per billing account, and one per sharing group: a group's members run together.
        self.partitions = partitions_of(config)
        self._by_name = {p.name: p for p in self.partitions}
        self.store = StateStore.open(config.state_url, auto_migrate=config.state.auto_migrate)
        self._member = ExitStack()
        self._held: dict[str, _Held] = {}
        self._tick_lock = threading.Lock()
        self._backoff: dict[str, _Backoff] = {}
        self._problems: dict[str, str] = {}
        self._budget_problem: str | None = None
        self.fatal: DaemonStopped | None = None
        self._recheck_pending = False
        # Replicas start their preference at different partitions, so two newcomers rarely
        # reach for the same free partition first.
        self._offset = sum(self.holder.encode()) % max(1, len(self.partitions))

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> Daemon:
        self._member.enter_context(
            self.store.locks.hold(member_lock_name(self.holder), holder=self.holder)
        )
        log.info("daemon.started", holder=self.holder, partitions=self.partition_names)
        return self

    def close(self) -> None:
        for name in list(self._held):
            self._release(name, reason="shutdown")
        self._member.close()
        self.alerter.close()
        self.store.close()

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def partition_names(self) -> list[str]:
        return [p.name for p in self.partitions]

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    # --- one tick -----------------------------------------------------------------------------

    def tick(self, mode: str = "sync") -> TickResult:
        """Settle the partitions, then run each held one once. Skipped (and logged) when the
        previous tick is still going."""
        if not self._tick_lock.acquire(blocking=False):
            self.metrics.skipped_ticks.inc()
            log.warning("schedule.run_skipped", reason="the previous run is still going")
            return TickResult(self.held, {}, skipped=True)
        try:
            return self._tick(mode)
        finally:
            self._tick_lock.release()

    def _tick(self, mode: str) -> TickResult:
        reports: dict[str, RunReport] = {}
        if self.stop.is_set():
            return TickResult(self.held, reports)
        self._settle()
        self.health.set_held(self.held)
        self.metrics.partitions_held.set(len(self._held))
        due = [n for n in sorted(self._held) if self._due(n)]
        if due:
            try:
                source = self._connect(self.config, self.secrets)
            except (ConfigError, AuthenticationError) as exc:
                self._stop_fatally(exc)
                return TickResult(self.held, reports)
            except UnavailableError as exc:
                for name in due:
                    self._failed_before_run(name, exc)
                source = None
            if source is not None:
                for name in due:
                    if self.stop.is_set() or self.fatal is not None:
                        break
                    report = self._run(name, source, mode)
                    if report is not None:
                        reports[name] = report
                self._check_budget(source)
        self._alert()
        return TickResult(self.held, reports)

    def _due(self, name: str) -> bool:
        b = self._backoff.get(name)
        return b is None or b.not_before is None or self.now() >= b.not_before

    def _scope(self, p: Partition) -> str | None:
        # One partition: the cursors `sync` uses. Several: each keeps its own.
        return p.cursor_scope if len(self.partitions) > 1 else None

    def _run(self, name: str, source: SalesforceSource, mode: str) -> RunReport | None:
        held = self._held[name]
        targets = [self.targets[a] for a in held.partition.accounts]
        try:
            # A partition whose cursors have a new name (a sharing group that used to run as
            # one partition per member) starts where the least advanced of its old ones stood.
            held.handle.check()
            seed_cursors(self.store.cursors, [held.partition], self._scope(held.partition))
        except LockLost:
            self._release(name, reason="lost")
            return None
        except UnavailableError as exc:
            self._failed_before_run(name, exc)
            return None
        engine = make_engine(
            self.config,
            mapping=self.mapping,
            mappings=self.mappings,
            store=self.store,
            source=source,
            targets=targets,
            stop=self.stop,
            before_write=held.handle.check,
            cursor_scope=self._scope(held.partition),
        )
        rate_limited = _rate_limited(targets)
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(billing_account=name):
            try:
                report = engine.run(mode, sink=Discard())  # type: ignore[arg-type]
            except Exception as exc:
                # A bug: recorded as failed by the engine; the daemon goes on with the others.
                log.exception("daemon.run_crashed")
                self._failed_before_run(name, exc)
                return None
            self._observe(name, report, time.monotonic() - started, targets, rate_limited)
        return report

    def _observe(
        self,
        name: str,
        report: RunReport,
        seconds: float,
        targets: list[BillingTarget],
        rate_limited_before: int,
    ) -> None:
        m = self.metrics
        m.runs.labels(name, report.status).inc()
        for outcome in ("created", "updated", "unchanged", "refused", "failed"):
            m.records.labels(name, outcome).inc(getattr(report, outcome))
        m.billing_calls.labels(name).inc(report.billing_calls)
        m.salesforce_calls.labels(name).inc(report.salesforce_calls)
        m.rate_limited.labels(name).inc(max(0, _rate_limited(targets) - rate_limited_before))
        m.run_duration.labels(name).observe(seconds)
        now = self.now()
        self.health.record(PartitionRun(name, report.run_id, report.status, now, report.error))
        self._gauges(name)
        if report.status in ("succeeded", "partial"):
            if report.status == "succeeded":
                m.last_success.labels(name).set(now.timestamp())
            self._backoff.pop(name, None)
            self._problems.pop(f"run_failed:{name}", None)
            seen = report.accounts_seen or 0
            ratio = report.failed / seen if seen else 0.0
            key = f"failure_ratio:{name}"
            if report.failed and ratio > self.config.alerts.failure_ratio:
                self._problems[key] = (
                    f"partition {name}: {report.failed} of {seen} records failed in run "
                    f"{report.run_id} (over {self.config.alerts.failure_ratio:.0%})"
                )
            else:
                self._problems.pop(key, None)
            return
        if report.status == "interrupted":
            if report.error_type == LockLost.__name__:
                self._release(name, reason="lost")
            return  # a stop: nothing failed
        # failed
        if report.error_type in FATAL_ERRORS:
            self._problems[f"run_failed:{name}"] = _failed_text(name, report.run_id, report.error)
            self._stop_fatally(
                DaemonStopped(report.error or "run failed", report.error_exit_code or 3)
            )
            return
        self._problems[f"run_failed:{name}"] = _failed_text(name, report.run_id, report.error)
        self._back_off(name)

    def _failed_before_run(self, name: str, exc: BaseException) -> None:
        text = REDACTOR.scrub(str(exc))
        self.metrics.runs.labels(name, "failed").inc()
        self.health.record(PartitionRun(name, "-", "failed", self.now(), text))
        self._problems[f"run_failed:{name}"] = _failed_text(name, None, text)
        self._back_off(name)

    def _back_off(self, name: str) -> None:
        b = self._backoff.setdefault(name, _Backoff())
        b.failures += 1
        # The first retry is at the next tick; each further failure doubles the wait.
        wait = min(self.interval * (2 ** (b.failures - 1)), MAX_BACKOFF)
        b.not_before = self.now() + wait - timedelta(seconds=1)
        log.warning(
            "daemon.backing_off",
            billing_account=name,
            failures=b.failures,
            next_attempt=b.not_before.isoformat(timespec="seconds"),
        )

    def _stop_fatally(self, exc: BaseException) -> None:
        code = getattr(exc, "exit_code", 3)
        text = REDACTOR.scrub(str(exc))
        log.error("daemon.fatal", error=text, exit_code=code)
        self.fatal = DaemonStopped(text, int(code))
        self.stop.set()

    def _gauges(self, name: str) -> None:
        m = self.metrics
        try:
            part = self._by_name[name]
            m.retry_list.labels(name).set(
                sum(len(self.store.retries.all(a)) for a in part.accounts)
            )
            m.open_conflicts.set(len(self.store.conflicts.list("open")))
            cursor = parse_sf_datetime(
                self.store.cursors.get(scoped_cursor(ORDERS_CURSOR, self._scope(part)))
            )
            if cursor is not None:
                m.cursor_lag.labels(name).set(max(0.0, (self.now() - cursor).total_seconds()))
        except UnavailableError as exc:
            log.warning("metrics.store_unreadable", error=str(exc))

    def _check_budget(self, source: SalesforceSource) -> None:
        usage = source.usage
        remaining, limit = usage.remaining, usage.limit
        if remaining is None or not limit:
            return
        share = remaining / limit
        if share < self.config.alerts.api_budget_low:
            self._problems["api_budget_low"] = (
                f"Salesforce API budget low: {remaining} of {limit} daily requests left "
                f"({share:.0%}, threshold {self.config.alerts.api_budget_low:.0%})"
            )
        else:
            self._problems.pop("api_budget_low", None)

    def _alert(self) -> None:
        problems = dict(self._problems)
        try:
            for c in self.store.conflicts.list("open"):
                problems[f"conflict:{c.id}"] = (
                    f"conflict #{c.id} opened ({c.kind}) for account {c.account_id} in "
                    f"{c.billing_account}: see `billing-connector conflicts list`"
                )
        except UnavailableError as exc:
            log.warning("alerts.store_unreadable", error=str(exc))
        self.alerter.observe(problems)

    # --- partitions ---------------------------------------------------------------------------

    def _settle(self) -> None:
        """Drop lost locks, let go of more than a fair share, take free partitions."""
        for name, held in list(self._held.items()):
            try:
                held.handle.check()
            except LockLost as exc:
                log.warning("partition.lost", billing_account=name, error=str(exc))
                self._release(name, reason="lost")
        try:
            members = max(1, len(self.store.locks.held(MEMBER_PREFIX)))
        except UnavailableError as exc:
            log.warning("partition.members_unknown", error=str(exc))
            return
        share = math.ceil(len(self.partitions) / members)
        preferred = self.partitions[self._offset :] + self.partitions[: self._offset]
        for p in reversed(preferred):
            if len(self._held) <= share:
                break
            if p.name in self._held:
                self._release(p.name, reason=f"fair share is {share} of {members}")
        for p in preferred:
            if len(self._held) >= share:
                break
            if p.name not in self._held:
                self._acquire(p)

    def _acquire(self, p: Partition) -> None:
        stack = ExitStack()
        try:
            handle = stack.enter_context(self.store.locks.hold(p.lock_name, holder=self.holder))
        except LockHeldError:
            stack.close()
            return
        except UnavailableError as exc:
            stack.close()
            log.warning("partition.unavailable", billing_account=p.name, error=str(exc))
            return
        self._held[p.name] = _Held(p, handle, stack)
        # Holding its lock, a run of this partition still marked running has no process left.
        abandoned = sum(self.store.runs.mark_interrupted(a) for a in p.accounts)
        log.info("partition.acquired", billing_account=p.name, abandoned=abandoned)

    def _release(self, name: str, *, reason: str) -> None:
        held = self._held.pop(name, None)
        if held is None:
            return
        with suppress(Exception):  # a lost session cannot be unlocked; the server did it
            held.stack.close()
        log.info("partition.released", billing_account=name, reason=reason)

    # --- the schedule -------------------------------------------------------------------------

    def serve(self) -> int:
        """Tick on the schedule until stopped; the exit code (0, or a fatal failure's)."""
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        sched = self.config.schedule
        scheduler = BackgroundScheduler(timezone=UTC)
        trigger: Any = (
            CronTrigger.from_crontab(sched.cron, timezone=UTC)
            if sched.cron
            else IntervalTrigger(seconds=sched.interval_seconds or 300, timezone=UTC)
        )
        common: dict[str, Any] = {
            "max_instances": 1,
            "coalesce": True,  # runs missed while one was going become one, not a burst
            "misfire_grace_time": None,
        }
        scheduler.add_job(
            self._scheduled, trigger, id="sync", next_run_time=datetime.now(UTC), **common
        )
        if sched.nightly_recheck:
            hour, minute = (int(x) for x in sched.nightly_recheck.split(":"))
            scheduler.add_job(
                self._scheduled,
                CronTrigger(hour=hour, minute=minute, timezone=UTC),
                id="recheck",
                kwargs={"mode": "recheck"},
                **common,
            )

        def skipped(event: JobEvent) -> None:
            self.metrics.skipped_ticks.inc()
            log.warning("schedule.run_skipped", job=event.job_id, reason="still running")

        scheduler.add_listener(skipped, EVENT_JOB_MAX_INSTANCES)
        scheduler.start()
        log.info(
            "schedule.started",
            every=sched.every or (None if sched.cron else "5m"),
            cron=sched.cron,
            nightly_recheck=sched.nightly_recheck,
        )
        try:
            # Waits in short slices: a signal may be delivered to another thread, and the main
            # thread must wake to run its Python handler (a second signal exits at once).
            while not self.stop.wait(0.5):
                pass
            log.info("daemon.stopping", reason="fatal" if self.fatal else "signal")
        finally:
            # The record in progress finishes (the engine checks `stop` between records).
            closer = threading.Thread(
                target=scheduler.shutdown, kwargs={"wait": True}, name="shutdown"
            )
            closer.start()
            while closer.is_alive():
                closer.join(0.5)
        log.info("daemon.stopped", exit_code=self.fatal.exit_code if self.fatal else 0)
        return self.fatal.exit_code if self.fatal else 0

    def _scheduled(self, mode: str = "sync") -> None:
        if mode == "recheck":
            # Kept until a tick runs it: a recheck due while a sync is going is not lost.
            self._recheck_pending = True
        try:
            result = self.tick("recheck" if self._recheck_pending else mode)
            if not result.skipped and self._recheck_pending and result.reports:
                self._recheck_pending = False
        except Exception as exc:
            # Never let the scheduler's thread die silently: the store may be down; retry later.
            log.exception("daemon.tick_failed", error=REDACTOR.scrub(str(exc)))


def schedule_interval(config: Config) -> timedelta:
    """The time between two ticks: `every`, or the gap between a crontab's next two firings
    (what /readyz's "within two intervals" and the back-off count in)."""
    sched = config.schedule
    if sched.cron is None:
        return timedelta(seconds=sched.interval_seconds or 300)
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger.from_crontab(sched.cron, timezone=UTC)
    now = datetime.now(UTC)
    first = trigger.get_next_fire_time(None, now)
    second = trigger.get_next_fire_time(first, first + timedelta(microseconds=1)) if first else None
    if first is None or second is None:
        return timedelta(minutes=5)
    gap: timedelta = second - first
    return gap


def _rate_limited(targets: list[BillingTarget]) -> int:
    return sum(getattr(t, "rate_limited", 0) for t in targets)


def _failed_text(name: str, run_id: str | None, error: str | None) -> str:
    run = f" run {run_id}" if run_id else ""
    return f"partition {name}:{run} failed: {error or 'unknown error'}"


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT: finish the record in progress, save state, exit 0. A second signal exits
    at once (130): every store write is one transaction, so an abrupt exit leaves it whole.
    Handlers are installed explicitly, so this works as PID 1 in a container too."""
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: object) -> None:
        # No logging here: the handler may interrupt a log write that holds the stream's lock,
        # and a second signal may interrupt the first handler. The daemon's main loop logs.
        if stop.is_set():
            os.write(2, b'{"event": "daemon.killed", "exit_code": 130}\n')
            os._exit(130)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with suppress(ValueError):  # not the main thread: leave signals alone
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
