"""The state store: every read and write of local state, on SQLite or PostgreSQL.

The engine talks to `StateStore` only; it gets and gives the frozen rows of records.py, never a
connection, session or SQL. Look-ups take iterables of ids and run one query per chunk of
`LOOKUP_CHUNK` ids (under SQLite's bound-variable limit), writes take whole pages and use one
statement with many parameter sets. What this module must never do: call Salesforce or a billing
system, or swallow a database error that an admin could act on (those become `UnavailableError`
naming the file or server).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.pool import StaticPool

from connector.errors import ConfigError, ConflictError, LockHeldError, UnavailableError
from connector.state import schema as t
from connector.state.records import (
    Conflict,
    Intent,
    Link,
    OrderLink,
    Outcome,
    RetryItem,
    RunRecord,
)

log = structlog.get_logger("connector.state")

# Ids per `IN (...)` query. SQLite builds before 3.32 allow only 999 bound variables.
LOOKUP_CHUNK = 500
# Retry backoff: RETRY_BASE after the first failure, doubling per attempt, never above RETRY_CAP.
RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=6)
# Outcomes `recent_failures` and `iter_outcomes(failed_only=True)` report: both need a human.
FAILURE_OUTCOMES: tuple[str, ...] = ("failed", "refused")
# Seconds a SQLite write waits for another writer before giving up with UnavailableError.
DEFAULT_BUSY_TIMEOUT = 5.0
UPGRADE_COMMAND = "billing-connector db upgrade"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")

_T = TypeVar("_T")


class ConflictResolutionError(ConfigError):
    """A conflict cannot be resolved: there is no such conflict, or it is already resolved."""

    def __init__(self, message: str, *, conflict_id: int) -> None:
        self.conflict_id = conflict_id
        super().__init__(message)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(when: datetime | None) -> datetime:
    """`when` (default: now) in UTC. Arithmetic is done in UTC: adding to a local wall-clock
    time across a DST change would give the wrong instant."""
    if when is None:
        return utcnow()
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: the state store only takes aware datetimes")
    return when.astimezone(UTC)


def retry_delay(attempts: int) -> timedelta:
    """Wait before the next try after `attempts` failures: 1 min, 2, 4, ... capped at 6 h."""
    exponent = min(max(attempts, 1) - 1, 30)  # 2**30 minutes is far past the cap already
    delay: timedelta = RETRY_BASE * (2**exponent)
    return min(delay, RETRY_CAP)


def _chunks(ids: Iterable[_T], size: int = LOOKUP_CHUNK) -> Iterator[list[_T]]:
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), size):
        yield unique[start : start + size]


@functools.cache
def _script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS_DIR))


class StateStore:
    """Local state on SQLite (one file) or PostgreSQL (shared by replicas)."""

    def __init__(self, engine: Engine, *, db_path: Path | None, busy_timeout: float) -> None:
        self._engine = engine
        self.db_path = db_path  # the SQLite file; None for PostgreSQL and in-memory SQLite
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._memory_lock = threading.Lock()
        self._memory_lock_info: dict[str, Any] = {}

    # --- opening and migrations ---------------------------------------------------------------

    @classmethod
    def open(
        cls, url: str, *, auto_migrate: bool = True, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    ) -> StateStore:
        """Open the store at `url`, upgrading its schema unless `auto_migrate` is off."""
        try:
            parsed = sa.make_url(url)
        except sa.exc.ArgumentError:
            raise ConfigError(
                "not a database URL; use sqlite:///path/to/state.db or "
                "postgresql+psycopg://user@host/dbname",
                key="state.url",
            ) from None
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            engine, db_path = _sqlite_engine(parsed, busy_timeout)
            if not auto_migrate and db_path is not None and not db_path.exists():
                engine.dispose()
                # Opening would create an empty file; say what to run instead.
                raise ConfigError(
                    f"the state database {db_path} does not exist; run `{UPGRADE_COMMAND}` "
                    "(or set state.auto_migrate: true)"
                )
        elif backend == "postgresql":
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is what we ship
            # Fail in seconds, not minutes, when the server is unreachable (unless the URL says).
            connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": 10}
            engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
            db_path = None
        else:
            raise ConfigError(
                f"unsupported database '{backend}'; use sqlite:///... or postgresql+psycopg://...",
                key="state.url",
            )
        store = cls(engine, db_path=db_path, busy_timeout=busy_timeout)
        try:
            if auto_migrate:
                store.upgrade()
            else:
                store._require_current_schema()
        except BaseException:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The database URL without its password, safe to log and print."""
        u = self._engine.url
        bare = sa.URL.create(u.drivername, u.username, None, u.host, u.port, u.database, u.query)
        return bare.render_as_string(hide_password=False)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def current_revision(self) -> str | None:
        with self._conn() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @staticmethod
    def head_revision() -> str | None:
        return _script_directory().get_current_head()

    def upgrade(self) -> None:
        """Bring the schema to the newest revision (Alembic `upgrade head`), in one transaction."""
        self._refuse_unknown_revision()
        with self._translate(), self._engine.connect() as conn:
            conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                if self.dialect == "postgresql":
                    # Replicas starting together must not both run the same migration.
                    key = _advisory_key(conn, "migrate")
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
                cfg = AlembicConfig()
                # configparser would read a '%' in the install path as interpolation
                cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
                cfg.attributes["connection"] = conn
                before = MigrationContext.configure(conn).get_current_revision()
                command.upgrade(cfg, "head")
                after = MigrationContext.configure(conn).get_current_revision()
        if after != before:
            log.info("state.migrated", url=self.url, from_revision=before, to_revision=after)

    def _where(self) -> str:
        return str(self.db_path) if self.db_path is not None else self.url

    def _refuse_unknown_revision(self) -> None:
        current = self.current_revision()
        known = {script.revision for script in _script_directory().walk_revisions()}
        if current is not None and current not in known:
            raise ConfigError(
                f"the state database {self._where()} is at schema revision {current}, which this "
                "version of billing-connector does not know; it was upgraded by a newer version"
            )

    def _require_current_schema(self) -> None:
        self._refuse_unknown_revision()
        current, head = self.current_revision(), self.head_revision()
        if current == head:
            return
        if current is None:
            raise ConfigError(
                f"the state database {self._where()} has no schema yet; run `{UPGRADE_COMMAND}` "
                "(or set state.auto_migrate: true)"
            )
        raise ConfigError(
            f"the state database {self._where()} is at schema revision {current} but this version "
            f"needs {head}; run `{UPGRADE_COMMAND}`"
        )

    # --- connections and transactions ---------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group the store calls inside into one database transaction; nested calls join it."""
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self._translate(), self._engine.connect() as conn:
            # SQLite: take the write lock up front, so a read-then-write cannot deadlock.
            conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                self._local.conn = conn
                try:
                    yield
                finally:
                    self._local.conn = None

    @contextmanager
    def _conn(self, *, write: bool = False) -> Iterator[Connection]:
        current: Connection | None = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        with self._translate(), self._engine.connect() as conn:
            if write:
                conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    @contextmanager
    def _translate(self) -> Iterator[None]:
        """Turn database failures an admin can act on into `UnavailableError`."""
        try:
            yield
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.DataError):
            raise
        except (sa.exc.DatabaseError, sa.exc.InterfaceError) as exc:
            raise UnavailableError(self._unavailable_message(exc)) from exc

    def _unavailable_message(self, exc: sa.exc.DBAPIError) -> str:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        if self.dialect != "sqlite":
            return f"the state database at {self.url} is unavailable: {detail}"
        where = str(self.db_path) if self.db_path is not None else "(in memory)"
        low = detail.lower()
        if "locked" in low:
            return (
                f"the state database {where} is locked by another process (waited "
                f"{self._busy_timeout:g} s): another connector run or a tool such as sqlite3 "
                "holds a write transaction; let it finish and retry"
            )
        if "readonly" in low or "read-only" in low:
            return (
                f"the state database {where} is read-only: give the connector write access to the "
                "file and its folder (SQLite also writes the -wal and -shm files next to it)"
            )
        if "full" in low:
            return f"the state database {where} cannot grow: the disk is full; free space and retry"
        if "unable to open" in low:
            return (
                f"cannot open the state database {where}: the file or its folder is missing or "
                "not accessible; check state.url in config.yaml and the folder's permissions"
            )
        if "not a database" in low or "malformed" in low:
            return f"{where} is not a usable SQLite database ({detail}); restore it from a backup"
        return f"the state database {where} failed: {detail}"

    def _upsert(
        self, table: sa.Table, keys: Sequence[str], update: Sequence[str] | None
    ) -> sa.Insert:
        """INSERT ... ON CONFLICT (keys) DO UPDATE SET update=excluded (DO NOTHING if None)."""
        if self.dialect == "postgresql":
            pg = postgresql.insert(table)
            if not update:
                return pg.on_conflict_do_nothing(index_elements=list(keys))
            return pg.on_conflict_do_update(
                index_elements=list(keys), set_={c: pg.excluded[c] for c in update}
            )
        lite = sqlite.insert(table)
        if not update:
            return lite.on_conflict_do_nothing(index_elements=list(keys))
        return lite.on_conflict_do_update(
            index_elements=list(keys), set_={c: lite.excluded[c] for c in update}
        )

    # --- runs ---------------------------------------------------------------------------------

    def start_run(self, mode: str, *, dry_run: bool) -> str:
        run_id = uuid.uuid4().hex
        with self._conn(write=True) as conn:
            conn.execute(
                t.runs.insert().values(
                    run_id=run_id,
                    mode=mode,
                    dry_run=dry_run,
                    started_at=utcnow(),
                    status="running",
                    counts={},
                    host=socket.gethostname(),
                    pid=os.getpid(),
                )
            )
        return run_id

    def finish_run(
        self, run_id: str, *, status: str, counts: Mapping[str, int], error: str | None = None
    ) -> None:
        with self._conn(write=True) as conn:
            result = conn.execute(
                t.runs.update()
                .where(t.runs.c.run_id == run_id)
                .values(
                    status=status,
                    counts={k: int(v) for k, v in counts.items()},
                    error=error,
                    finished_at=utcnow(),
                )
            )
        if result.rowcount == 0:
            raise ValueError(f"no run {run_id} in the state store")

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._conn() as conn:
            row = conn.execute(sa.select(t.runs).where(t.runs.c.run_id == run_id)).first()
        return _run(row) if row is not None else None

    def recent_runs(self, limit: int = 10) -> list[RunRecord]:
        query = sa.select(t.runs).order_by(t.runs.c.started_at.desc()).limit(limit)
        with self._conn() as conn:
            return [_run(row) for row in conn.execute(query)]

    def mark_interrupted_runs(self) -> int:
        """Runs left 'running' by a crash become 'interrupted'. Call only while holding the lock."""
        with self._conn(write=True) as conn:
            result = conn.execute(
                t.runs.update()
                .where(t.runs.c.status == "running")
                .values(
                    status="interrupted",
                    finished_at=utcnow(),
                    error=sa.func.coalesce(
                        t.runs.c.error, "the process stopped before the run finished"
                    ),
                )
            )
        return result.rowcount

    # --- links --------------------------------------------------------------------------------

    def get_links(self, billing_account: str, account_ids: Iterable[str]) -> dict[str, Link]:
        out: dict[str, Link] = {}
        with self._conn() as conn:
            for chunk in _chunks(account_ids):
                query = sa.select(t.links).where(
                    t.links.c.billing_account == billing_account, t.links.c.account_id.in_(chunk)
                )
                for row in conn.execute(query):
                    out[row.account_id] = _link(row)
        return out

    def get_link(self, billing_account: str, account_id: str) -> Link | None:
        return self.get_links(billing_account, [account_id]).get(account_id)

    def get_link_by_customer(self, billing_account: str, customer_id: str) -> Link | None:
        # A merged-away account's link may share the customer with the survivor's: the link in
        # use comes first.
        query = (
            sa.select(t.links)
            .where(
                t.links.c.billing_account == billing_account, t.links.c.customer_id == customer_id
            )
            .order_by(sa.case((t.links.c.status == "merged", 1), else_=0), t.links.c.account_id)
        )
        with self._conn() as conn:
            row = conn.execute(query).first()
        return _link(row) if row is not None else None

    def iter_links(
        self, billing_account: str, *, status: str | None = None, batch: int = 2000
    ) -> Iterator[Link]:
        """Every link of a billing account in account-id order, read `batch` rows at a time.

        Each batch is its own short read, so no snapshot or cursor stays open between yields.
        """
        after = ""
        while True:
            query = (
                sa.select(t.links)
                .where(t.links.c.billing_account == billing_account, t.links.c.account_id > after)
                .order_by(t.links.c.account_id)
                .limit(batch)
            )
            if status is not None:
                query = query.where(t.links.c.status == status)
            with self._conn() as conn:
                rows = [_link(row) for row in conn.execute(query)]
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].account_id

    def fingerprints_in_use(self, billing_account: str) -> set[str]:
        """The mapping fingerprints active links were last written with (one query, no rows)."""
        query = (
            sa.select(t.links.c.mapping_fingerprint)
            .where(
                t.links.c.billing_account == billing_account,
                t.links.c.status == "active",
                t.links.c.mapping_fingerprint.is_not(None),
            )
            .distinct()
        )
        with self._conn() as conn:
            return {str(fp) for fp in conn.execute(query).scalars()}

    def count_links(self, billing_account: str) -> dict[str, int]:
        query = (
            sa.select(t.links.c.status, sa.func.count())
            .where(t.links.c.billing_account == billing_account)
            .group_by(t.links.c.status)
        )
        with self._conn() as conn:
            return {status: int(n) for status, n in conn.execute(query)}

    def save_links(self, links: Iterable[Link]) -> None:
        """Insert or update links by (billing_account, account_id); first_synced_at is kept.

        Raises `ConflictError` (code customer_already_linked) and writes nothing if a customer
        is already linked to another account of the same billing account whose link is not
        merged away.
        """
        now = utcnow()
        by_key: dict[tuple[str, str], Link] = {}
        for link in links:
            by_key[(link.billing_account, link.account_id)] = link
        if not by_key:
            return
        # Links merged away are written first, so a survivor taking over their customer in the
        # same batch never meets the unique index while both are still in use.
        ordered = sorted(by_key.values(), key=lambda link: link.status != "merged")
        rows = [_link_values(link, now) for link in ordered]
        update = [
            c.name
            for c in t.links.columns
            if c.name not in ("billing_account", "account_id", "first_synced_at")
        ]
        with self._conn(write=True) as conn:
            self._refuse_customer_reuse(conn, list(by_key.values()))
            conn.execute(self._upsert(t.links, ["billing_account", "account_id"], update), rows)

    def _refuse_customer_reuse(self, conn: Connection, links: list[Link]) -> None:
        """One customer per account per billing account among links not merged away (the
        partial unique index uq_links_billing_account_customer_id); say which account holds it
        instead of failing on the index."""
        merged_here = {(k.billing_account, k.account_id) for k in links if k.status == "merged"}
        claimed: dict[tuple[str, str], Link] = {}
        for link in links:
            if link.status == "merged":
                continue
            other = claimed.setdefault((link.billing_account, link.customer_id), link)
            if other.account_id != link.account_id:
                raise _customer_taken(link, other.account_id)
        by_account: dict[str, dict[str, Link]] = {}
        for (billing_account, customer_id), link in claimed.items():
            by_account.setdefault(billing_account, {})[customer_id] = link
        for billing_account, wanted in by_account.items():
            for chunk in _chunks(wanted):
                query = sa.select(t.links.c.customer_id, t.links.c.account_id).where(
                    t.links.c.billing_account == billing_account,
                    t.links.c.customer_id.in_(chunk),
                    t.links.c.status != "merged",
                )
                for customer_id, holder in conn.execute(query):
                    if holder == wanted[customer_id].account_id:
                        continue
                    if (billing_account, holder) in merged_here:
                        continue  # this batch merges the holder away first (see save_links)
                    raise _customer_taken(wanted[customer_id], holder)

    def set_link_status(self, billing_account: str, account_id: str, status: str) -> bool:
        """Set one link's status; False if there is no such link."""
        with self._conn(write=True) as conn:
            result = conn.execute(
                t.links.update()
                .where(
                    t.links.c.billing_account == billing_account,
                    t.links.c.account_id == account_id,
                )
                .values(status=status)
            )
        return result.rowcount > 0

    def mark_written_back(self, billing_account: str, account_ids: Iterable[str]) -> None:
        with self._conn(write=True) as conn:
            for chunk in _chunks(account_ids):
                conn.execute(
                    t.links.update()
                    .where(
                        t.links.c.billing_account == billing_account,
                        t.links.c.account_id.in_(chunk),
                    )
                    .values(writeback_pending=False)
                )

    def pending_writebacks(self, billing_account: str, limit: int = 200) -> list[Link]:
        """Active links whose customer id is not yet confirmed on the Salesforce Account."""
        query = (
            sa.select(t.links)
            .where(
                t.links.c.billing_account == billing_account,
                t.links.c.writeback_pending.is_(True),
                t.links.c.status == "active",
            )
            .order_by(t.links.c.last_synced_at, t.links.c.account_id)
            .limit(limit)
        )
        with self._conn() as conn:
            return [_link(row) for row in conn.execute(query)]

    # --- orders -------------------------------------------------------------------------------

    def save_order_links(self, rows: Iterable[OrderLink]) -> None:
        """Insert or update order -> account/customer rows; first_seen_at is kept."""
        now = utcnow()
        by_key = {(r.billing_account, r.order_id): r for r in rows}
        if not by_key:
            return
        values = [
            {
                "billing_account": r.billing_account,
                "order_id": r.order_id,
                "account_id": r.account_id,
                "customer_id": r.customer_id,
                "first_seen_at": now,
                "last_seen_at": now,
            }
            for r in by_key.values()
        ]
        stmt = self._upsert(
            t.order_links,
            ["billing_account", "order_id"],
            ["account_id", "customer_id", "last_seen_at"],
        )
        with self._conn(write=True) as conn:
            conn.execute(stmt, values)

    def get_order_links(
        self, billing_account: str, order_ids: Iterable[str]
    ) -> dict[str, OrderLink]:
        out: dict[str, OrderLink] = {}
        with self._conn() as conn:
            for chunk in _chunks(order_ids):
                query = sa.select(t.order_links).where(
                    t.order_links.c.billing_account == billing_account,
                    t.order_links.c.order_id.in_(chunk),
                )
                for row in conn.execute(query):
                    out[row.order_id] = OrderLink(
                        billing_account=row.billing_account,
                        order_id=row.order_id,
                        account_id=row.account_id,
                        customer_id=row.customer_id,
                    )
        return out

    # --- cursors ------------------------------------------------------------------------------

    def get_cursor(self, name: str) -> str | None:
        with self._conn() as conn:
            value: str | None = conn.execute(
                sa.select(t.cursors.c.value).where(t.cursors.c.name == name)
            ).scalar()
        return value

    def set_cursor(self, name: str, value: str) -> None:
        stmt = self._upsert(t.cursors, ["name"], ["value", "updated_at"])
        with self._conn(write=True) as conn:
            conn.execute(stmt, [{"name": name, "value": value, "updated_at": utcnow()}])

    # --- outcomes -----------------------------------------------------------------------------

    def record_outcomes(
        self, run_id: str, outcomes: Iterable[Outcome], *, now: datetime | None = None
    ) -> None:
        at = _utc(now)
        rows = [
            {
                "run_id": run_id,
                "billing_account": o.billing_account,
                "account_id": o.account_id,
                "order_id": o.order_id,
                "outcome": o.outcome,
                "customer_id": o.customer_id,
                "error_code": o.error_code,
                "error_message": o.error_message,
                "changed_fields": list(o.changed_fields),
                "at": at,
            }
            for o in outcomes
        ]
        if rows:
            with self._conn(write=True) as conn:
                conn.execute(t.record_outcomes.insert(), rows)

    def outcomes_for_run(self, run_id: str) -> list[Outcome]:
        query = (
            sa.select(t.record_outcomes)
            .where(t.record_outcomes.c.run_id == run_id)
            .order_by(t.record_outcomes.c.id)
        )
        with self._conn() as conn:
            return [_outcome(row) for row in conn.execute(query)]

    def recent_failures(self, limit: int = 50) -> list[tuple[datetime, str, Outcome]]:
        """The newest outcomes in FAILURE_OUTCOMES, newest first, as (at, run_id, outcome)."""
        o = t.record_outcomes
        query = (
            sa.select(o)
            .where(o.c.outcome.in_(FAILURE_OUTCOMES))
            .order_by(o.c.at.desc(), o.c.id.desc())
            .limit(limit)
        )
        with self._conn() as conn:
            return [(row.at, row.run_id, _outcome(row)) for row in conn.execute(query)]

    def iter_outcomes(
        self, *, failed_only: bool = False, since: datetime | None = None, batch: int = 2000
    ) -> Iterator[tuple[datetime, str, Outcome]]:
        """Every recorded outcome in the order written, as (at, run_id, outcome), for export."""
        o = t.record_outcomes
        after = 0
        while True:
            query = sa.select(o).where(o.c.id > after).order_by(o.c.id).limit(batch)
            if failed_only:
                query = query.where(o.c.outcome.in_(FAILURE_OUTCOMES))
            if since is not None:
                query = query.where(o.c.at >= since)
            with self._conn() as conn:
                rows = list(conn.execute(query))
            for row in rows:
                yield row.at, row.run_id, _outcome(row)
            if len(rows) < batch:
                return
            after = rows[-1].id

    # --- retry list ---------------------------------------------------------------------------

    def schedule_retry(
        self, billing_account: str, account_id: str, error: str, *, now: datetime | None = None
    ) -> RetryItem:
        """Count one more failure and set the next attempt per `retry_delay`."""
        return self.schedule_retries(billing_account, {account_id: error}, now=now)[account_id]

    def schedule_retries(
        self, billing_account: str, errors: Mapping[str, str], *, now: datetime | None = None
    ) -> dict[str, RetryItem]:
        """`schedule_retry` for many accounts of one billing account, in one transaction."""
        now = _utc(now)
        if not errors:
            return {}
        q = t.retry_queue
        out: dict[str, RetryItem] = {}
        with self._conn(write=True) as conn:
            previous: dict[str, tuple[int, datetime]] = {}
            for chunk in _chunks(errors):
                query = sa.select(q.c.account_id, q.c.attempts, q.c.first_failed_at).where(
                    q.c.billing_account == billing_account, q.c.account_id.in_(chunk)
                )
                for account_id, attempts, first in conn.execute(query):
                    previous[account_id] = (attempts, first)
            rows = []
            for account_id, error in errors.items():
                attempts, first = previous.get(account_id, (0, now))
                item = RetryItem(
                    billing_account=billing_account,
                    account_id=account_id,
                    attempts=attempts + 1,
                    next_attempt_at=now + retry_delay(attempts + 1),
                    last_error=error,
                )
                out[account_id] = item
                rows.append(
                    {
                        "billing_account": billing_account,
                        "account_id": account_id,
                        "attempts": item.attempts,
                        "next_attempt_at": item.next_attempt_at,
                        "last_error": error,
                        "first_failed_at": first,
                    }
                )
            stmt = self._upsert(
                q, ["billing_account", "account_id"], ["attempts", "next_attempt_at", "last_error"]
            )
            conn.execute(stmt, rows)
        return out

    def due_retries(
        self, billing_account: str, *, now: datetime | None = None, limit: int = 2000
    ) -> list[RetryItem]:
        q = t.retry_queue
        query = (
            sa.select(q)
            .where(q.c.billing_account == billing_account, q.c.next_attempt_at <= _utc(now))
            .order_by(q.c.next_attempt_at, q.c.account_id)
            .limit(limit)
        )
        with self._conn() as conn:
            return [_retry(row) for row in conn.execute(query)]

    def all_retries(self, billing_account: str) -> list[RetryItem]:
        q = t.retry_queue
        query = (
            sa.select(q)
            .where(q.c.billing_account == billing_account)
            .order_by(q.c.next_attempt_at, q.c.account_id)
        )
        with self._conn() as conn:
            return [_retry(row) for row in conn.execute(query)]

    def clear_retries(self, billing_account: str, account_ids: Iterable[str]) -> None:
        q = t.retry_queue
        with self._conn(write=True) as conn:
            for chunk in _chunks(account_ids):
                conn.execute(
                    q.delete().where(
                        q.c.billing_account == billing_account, q.c.account_id.in_(chunk)
                    )
                )

    # --- intents ------------------------------------------------------------------------------

    def record_intent(self, intent: Intent) -> Intent:
        """Record a create about to be sent, replacing any earlier intent for the account.

        Whether an earlier intent must be replayed instead (same key, same payload) is the
        engine's decision, taken before it records a new one; what is stored here is always the
        key and payload actually sent next. Returns the intent as stored.
        """
        stmt = self._upsert(
            t.intents,
            ["billing_account", "account_id"],
            ["idempotency_key", "payload_hash", "payload", "created_at"],
        )
        row = {
            "billing_account": intent.billing_account,
            "account_id": intent.account_id,
            "idempotency_key": intent.idempotency_key,
            "payload_hash": intent.payload_hash,
            "payload": intent.payload,
            "created_at": intent.created_at,
        }
        with self._conn(write=True) as conn:
            conn.execute(stmt, [row])
            current = self._select_intent(conn, intent.billing_account, intent.account_id)
        assert current is not None
        return current

    def get_intent(self, billing_account: str, account_id: str) -> Intent | None:
        with self._conn() as conn:
            return self._select_intent(conn, billing_account, account_id)

    def open_intents(self, billing_account: str) -> list[Intent]:
        i = t.intents
        query = (
            sa.select(i)
            .where(i.c.billing_account == billing_account)
            .order_by(i.c.created_at, i.c.account_id)
        )
        with self._conn() as conn:
            return [_intent(row) for row in conn.execute(query)]

    def complete_create(self, link: Link, order_links: Iterable[OrderLink] = ()) -> None:
        """Save the new link and its orders and drop the intent, all or nothing."""
        rows = list(order_links)
        for row in rows:
            if (row.billing_account, row.account_id) != (link.billing_account, link.account_id):
                raise ValueError(f"order {row.order_id} is not for account {link.account_id}")
        with self.transaction():
            self.save_links([link])
            self.save_order_links(rows)
            self.drop_intent(link.billing_account, link.account_id)

    def drop_intent(self, billing_account: str, account_id: str) -> None:
        i = t.intents
        with self._conn(write=True) as conn:
            conn.execute(
                i.delete().where(
                    i.c.billing_account == billing_account, i.c.account_id == account_id
                )
            )

    @staticmethod
    def _select_intent(conn: Connection, billing_account: str, account_id: str) -> Intent | None:
        i = t.intents
        row = conn.execute(
            sa.select(i).where(i.c.billing_account == billing_account, i.c.account_id == account_id)
        ).first()
        return _intent(row) if row is not None else None

    # --- conflicts ----------------------------------------------------------------------------

    def open_conflict(
        self,
        kind: str,
        *,
        billing_account: str,
        account_id: str,
        other_account_id: str | None = None,
        customer_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Conflict:
        """Open a conflict, or return the one of this kind already open for the account."""
        c = t.conflicts
        is_open = c.c.status == "open"
        row = {
            "kind": kind,
            "billing_account": billing_account,
            "account_id": account_id,
            "other_account_id": other_account_id,
            "customer_id": customer_id,
            "details": dict(details or {}),
            "status": "open",
            "created_at": utcnow(),
        }
        keys = ["kind", "billing_account", "account_id"]
        # The partial unique index uq_conflicts_open makes this safe against a concurrent opener.
        stmt: sa.Insert
        if self.dialect == "postgresql":
            stmt = postgresql.insert(c).on_conflict_do_nothing(
                index_elements=keys, index_where=is_open
            )
        else:
            stmt = sqlite.insert(c).on_conflict_do_nothing(index_elements=keys, index_where=is_open)
        with self._conn(write=True) as conn:
            conn.execute(stmt, [row])
            found = conn.execute(
                sa.select(c).where(
                    c.c.kind == kind,
                    c.c.billing_account == billing_account,
                    c.c.account_id == account_id,
                    is_open,
                )
            ).one()
        return _conflict(found)

    def list_conflicts(self, status: str | None = "open") -> list[Conflict]:
        query = sa.select(t.conflicts).order_by(t.conflicts.c.id)
        if status is not None:
            query = query.where(t.conflicts.c.status == status)
        with self._conn() as conn:
            return [_conflict(row) for row in conn.execute(query)]

    def get_conflict(self, id: int) -> Conflict | None:
        with self._conn() as conn:
            row = conn.execute(sa.select(t.conflicts).where(t.conflicts.c.id == id)).first()
        return _conflict(row) if row is not None else None

    def resolve_conflict(self, id: int, *, resolution: str, by: str) -> Conflict:
        """Close an open conflict, recording who resolved it, when and how."""
        c = t.conflicts
        with self._conn(write=True) as conn:
            result = conn.execute(
                c.update()
                .where(c.c.id == id, c.c.status == "open")
                .values(
                    status="resolved", resolution=resolution, resolved_by=by, resolved_at=utcnow()
                )
            )
            row = conn.execute(sa.select(c).where(c.c.id == id)).first()
        if row is None:
            raise ConflictResolutionError(f"there is no conflict #{id}", conflict_id=id)
        conflict = _conflict(row)
        if result.rowcount == 0:
            raise ConflictResolutionError(
                f"conflict #{id} was already resolved by {conflict.resolved_by} at "
                f"{_when(conflict.resolved_at)}: {conflict.resolution}",
                conflict_id=id,
            )
        return conflict

    def open_conflict_accounts(self, billing_account: str) -> set[str]:
        c = t.conflicts
        query = sa.select(c.c.account_id).where(
            c.c.billing_account == billing_account, c.c.status == "open"
        )
        with self._conn() as conn:
            return set(conn.execute(query).scalars())

    # --- the single-runner lock ---------------------------------------------------------------

    @contextmanager
    def lock(self, name: str = "sync", *, holder: str) -> Iterator[None]:
        """Hold the named single-runner lock for the block, or raise `LockHeldError` at once.

        SQLite file: flock on `<dbfile>.lock`; PostgreSQL: a session advisory lock on a dedicated
        connection; in-memory SQLite: a lock in this process. A holder that dies releases it (the
        OS closes the file, the server ends the session).
        """
        info = {
            "holder": holder,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": utcnow().isoformat(timespec="seconds"),
        }
        if self.dialect == "postgresql":
            with self._pg_lock(name, info):
                yield
        elif self.db_path is None:
            if not self._memory_lock.acquire(blocking=False):
                raise LockHeldError(_held_message(name, self._memory_lock_info, "this process"))
            self._memory_lock_info = info
            try:
                yield
            finally:
                self._memory_lock_info = {}
                self._memory_lock.release()
        else:
            with self._file_lock(name, info):
                yield

    def lock_holder(self, name: str = "sync") -> dict[str, Any] | None:
        """Who holds the named lock now (holder, host, pid, since), or None; for `status`."""
        if self.dialect == "postgresql":
            with self._conn() as conn:
                key = _advisory_key(conn, f"lock:{name}")
                # A bigint advisory key shows in pg_locks split into classid (high) and objid (low).
                held = conn.execute(
                    sa.text(
                        "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                        " AND database = (SELECT oid FROM pg_database"
                        "                 WHERE datname = current_database())"
                        " AND classid = :hi AND objid = :lo AND objsubid = 1"
                    ),
                    {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
                ).first()
                if held is None:
                    return None
                row = conn.execute(sa.select(t.locks).where(t.locks.c.name == name)).first()
            if row is None:
                return {"holder": None, "host": None, "pid": None, "since": None}
            return {
                "holder": row.holder,
                "host": row.host,
                "pid": row.pid,
                "since": row.acquired_at.isoformat(timespec="seconds"),
            }
        if self.db_path is None:
            return dict(self._memory_lock_info) if self._memory_lock.locked() else None
        path = self.lock_path(name)
        assert path is not None
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_holder(path)
            return {k: info.get(k) for k in ("holder", "host", "pid", "since")}
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def lock_path(self, name: str = "sync") -> Path | None:
        """The lock file for `name` next to the SQLite database (None on PostgreSQL/in memory)."""
        if self.db_path is None:
            return None
        suffix = ".lock" if name == "sync" else f".{_safe_name(name)}.lock"
        return self.db_path.with_name(self.db_path.name + suffix)

    @contextmanager
    def _file_lock(self, name: str, info: dict[str, Any]) -> Iterator[None]:
        path = self.lock_path(name)
        assert path is not None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UnavailableError(f"cannot open the lock file {path}: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockHeldError(
                    _held_message(name, _read_holder(path), f"lock file {path}")
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextmanager
    def _pg_lock(self, name: str, info: dict[str, Any]) -> Iterator[None]:
        with self._translate():
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            with self._translate():
                key = _advisory_key(conn, f"lock:{name}")
                acquired = bool(conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar())
            if not acquired:
                with self._conn() as read:
                    row = read.execute(sa.select(t.locks).where(t.locks.c.name == name)).first()
                known = (
                    {
                        "holder": row.holder,
                        "host": row.host,
                        "pid": row.pid,
                        "since": row.acquired_at.isoformat(timespec="seconds"),
                    }
                    if row is not None
                    else {}
                )
                raise LockHeldError(_held_message(name, known, f"PostgreSQL {self.url}"))
            try:
                stmt = self._upsert(
                    t.locks, ["name"], ["holder", "host", "pid", "acquired_at", "expires_at"]
                )
                with self._conn(write=True) as write:
                    write.execute(
                        stmt,
                        [
                            {
                                "name": name,
                                "holder": info["holder"],
                                "host": info["host"],
                                "pid": info["pid"],
                                "acquired_at": utcnow(),
                                "expires_at": None,  # held as long as the session lives
                            }
                        ],
                    )
                yield
            finally:
                try:
                    with self._conn(write=True) as write:
                        write.execute(
                            t.locks.delete().where(
                                t.locks.c.name == name,
                                t.locks.c.host == info["host"],
                                t.locks.c.pid == info["pid"],
                            )
                        )
                    conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                except (sa.exc.DBAPIError, UnavailableError):
                    # The session is gone, and the server dropped its locks with it.
                    conn.invalidate()
        finally:
            conn.close()

    # --- status -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Numbers for the status command; plain JSON-ready values."""
        now = utcnow()
        lk, q, c = t.links, t.retry_queue, t.conflicts
        with self._conn() as conn:
            links: dict[str, dict[str, int]] = {}
            for ba, status, n in conn.execute(
                sa.select(lk.c.billing_account, lk.c.status, sa.func.count()).group_by(
                    lk.c.billing_account, lk.c.status
                )
            ):
                links.setdefault(ba, {})[status] = int(n)
            open_conflicts = conn.execute(
                sa.select(sa.func.count()).select_from(c).where(c.c.status == "open")
            ).scalar_one()
            retries_total = conn.execute(sa.select(sa.func.count()).select_from(q)).scalar_one()
            retries_due = conn.execute(
                sa.select(sa.func.count()).select_from(q).where(q.c.next_attempt_at <= now)
            ).scalar_one()
            open_intents = conn.execute(
                sa.select(sa.func.count()).select_from(t.intents)
            ).scalar_one()
            cursors = {
                name: {"value": value, "updated_at": updated.isoformat()}
                for name, value, updated in conn.execute(
                    sa.select(t.cursors.c.name, t.cursors.c.value, t.cursors.c.updated_at).order_by(
                        t.cursors.c.name
                    )
                )
            }
            last = conn.execute(
                sa.select(t.runs).order_by(t.runs.c.started_at.desc()).limit(1)
            ).first()
            revision = MigrationContext.configure(conn).get_current_revision()
        lock = self.lock_holder()
        last_run = _run(last) if last is not None else None
        return {
            "database": {"dialect": self.dialect, "url": self.url, "revision": revision},
            "links": links,
            "open_conflicts": int(open_conflicts),
            "retries": {"due": int(retries_due), "total": int(retries_total)},
            "open_intents": int(open_intents),
            "cursors": cursors,
            "lock": lock,
            "last_run": None
            if last_run is None
            else {
                "run_id": last_run.run_id,
                "mode": last_run.mode,
                "dry_run": last_run.dry_run,
                "status": last_run.status,
                "started_at": last_run.started_at.isoformat(),
                "finished_at": last_run.finished_at.isoformat() if last_run.finished_at else None,
                "counts": last_run.counts,
                "error": last_run.error,
            },
        }


# --- engine set-up -------------------------------------------------------------------------------


def _sqlite_engine(url: sa.URL, busy_timeout: float) -> tuple[Engine, Path | None]:
    database = url.database or ""
    memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    if memory:
        # One shared connection, so every thread sees the same in-memory database.
        engine = sa.create_engine(
            "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
        db_path = None
    else:
        db_path = Path(database).expanduser().resolve()
        engine = sa.create_engine(
            url.set(database=str(db_path)), connect_args={"timeout": busy_timeout}
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling begins late and cannot BEGIN IMMEDIATE;
        # take it over (SQLAlchemy's documented recipe) and begin in `_on_begin`.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not memory:
                # WAL: readers (status, history) never wait for the runner's writes.
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine, db_path


def _advisory_key(conn: Connection, name: str) -> int:
    """A 64-bit advisory lock key unique to this database, schema and lock name.

    Including the schema keeps two deployments (or two test runs) sharing one database apart.
    """
    db, schema = conn.execute(sa.select(sa.func.current_database(), sa.func.current_schema())).one()
    digest = hashlib.blake2b(f"billing-connector:{db}:{schema}:{name}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _safe_name(name: str) -> str:
    if not name or not all(ch.isalnum() or ch in "-_" for ch in name):
        raise ValueError(f"lock name {name!r}: use letters, digits, '-' and '_'")
    return name


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _held_message(name: str, info: Mapping[str, Any], where: str) -> str:
    if info.get("holder"):
        who = (
            f"{info['holder']} (host {info.get('host', '?')}, pid {info.get('pid', '?')}, "
            f"since {info.get('since', '?')})"
        )
    else:
        who = "another process (it has not recorded its details yet)"
    return (
        f"the '{name}' lock is held by {who} [{where}]; only one runner may sync at a time. "
        "Wait for it to finish; a holder that crashed releases the lock automatically"
    )


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC" if at is not None else "an unknown time"


def _customer_taken(link: Link, holder: str) -> ConflictError:
    return ConflictError(
        f"customer {link.customer_id} in billing account {link.billing_account} is already "
        f"linked to account {holder}; refusing to also link it to {link.account_id}",
        code="customer_already_linked",
        account_id=link.account_id,
    )


# --- rows <-> records ----------------------------------------------------------------------------


def _link_values(link: Link, now: datetime) -> dict[str, Any]:
    return {
        "billing_account": link.billing_account,
        "account_id": link.account_id,
        "customer_id": link.customer_id,
        "status": link.status,
        "payload_hash": link.payload_hash,
        "payload": link.payload,
        "mapping_fingerprint": link.mapping_fingerprint,
        "basis_order_id": link.basis_order_id,
        "basis_order_activated_at": link.basis_order_activated_at,
        "writeback_pending": link.writeback_pending,
        "first_synced_at": link.first_synced_at or now,
        "last_synced_at": link.last_synced_at or now,
    }


def _link(row: Row[Any]) -> Link:
    return Link(
        billing_account=row.billing_account,
        account_id=row.account_id,
        customer_id=row.customer_id,
        status=row.status,
        payload_hash=row.payload_hash,
        payload=row.payload,
        mapping_fingerprint=row.mapping_fingerprint,
        basis_order_id=row.basis_order_id,
        basis_order_activated_at=row.basis_order_activated_at,
        writeback_pending=bool(row.writeback_pending),
        first_synced_at=row.first_synced_at,
        last_synced_at=row.last_synced_at,
    )


def _run(row: Row[Any]) -> RunRecord:
    return RunRecord(
        run_id=row.run_id,
        mode=row.mode,
        dry_run=bool(row.dry_run),
        started_at=row.started_at,
        finished_at=row.finished_at,
        status=row.status,
        counts=dict(row.counts or {}),
        error=row.error,
    )


def _outcome(row: Row[Any]) -> Outcome:
    return Outcome(
        account_id=row.account_id,
        billing_account=row.billing_account,
        outcome=row.outcome,
        customer_id=row.customer_id,
        order_id=row.order_id,
        error_code=row.error_code,
        error_message=row.error_message,
        changed_fields=tuple(row.changed_fields or ()),
    )


def _retry(row: Row[Any]) -> RetryItem:
    return RetryItem(
        billing_account=row.billing_account,
        account_id=row.account_id,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
    )


def _intent(row: Row[Any]) -> Intent:
    return Intent(
        billing_account=row.billing_account,
        account_id=row.account_id,
        idempotency_key=row.idempotency_key,
        payload_hash=row.payload_hash,
        created_at=row.created_at,
        payload=row.payload,
    )


def _conflict(row: Row[Any]) -> Conflict:
    return Conflict(
        id=int(row.id),
        kind=row.kind,
        billing_account=row.billing_account,
        account_id=row.account_id,
        other_account_id=row.other_account_id,
        customer_id=row.customer_id,
        details=dict(row.details or {}),
        status=row.status,
        created_at=row.created_at,
        resolution=row.resolution,
        resolved_by=row.resolved_by,
        resolved_at=row.resolved_at,
    )


__all__ = [
    "FAILURE_OUTCOMES",
    "LOOKUP_CHUNK",
    "RETRY_BASE",
    "RETRY_CAP",
    "ConflictResolutionError",
    "StateStore",
    "retry_delay",
]
