"""The state store: open a database, migrate it, and hand out its repositories by concern.

`StateStore` holds only the database (open, close, migrations, one shared `transaction()`, the
numbers for `status`); every read and write of state goes through a repository attribute:
`links`, `runs`, `cursors`, `retries`, `intents`, `conflicts` and `locks` (connector/state/ports.py
declares what each offers). What this module must never do: call Salesforce or a billing system,
or swallow a database error that an admin could act on (those become `UnavailableError` naming the
file or server).
"""

from __future__ import annotations

import functools
import os
import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from connector.errors import ConfigError
from connector.state import schema as t
from connector.state.conflicts import ConflictRepository
from connector.state.cursors import CursorRepository
from connector.state.database import Database, advisory_key, utcnow
from connector.state.digests import DigestRepository
from connector.state.intents import IntentRepository
from connector.state.links import LinkRepository
from connector.state.lock import LockRepository
from connector.state.retries import RetryRepository
from connector.state.runs import RunRepository, run_record

log = structlog.get_logger("connector.state")

# Seconds a SQLite write waits for another writer before giving up with UnavailableError.
DEFAULT_BUSY_TIMEOUT = 5.0
UPGRADE_COMMAND = "billing-connector db upgrade"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


@functools.cache
def _script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS_DIR))


class StateStore:
    """Local state on SQLite (one file) or PostgreSQL (shared by replicas)."""

    def __init__(self, engine: Engine, *, db_path: Path | None, busy_timeout: float) -> None:
        self._db = Database(engine, db_path=db_path, busy_timeout=busy_timeout)
        self._engine = engine
        self.db_path = db_path  # the SQLite file; None for PostgreSQL and in-memory SQLite
        self.links = LinkRepository(self._db)
        self.runs = RunRepository(self._db)
        self.cursors = CursorRepository(self._db)
        self.digests = DigestRepository(self._db)
        self.retries = RetryRepository(self._db)
        self.intents = IntentRepository(self._db, self.links)
        self.conflicts = ConflictRepository(self._db)
        self.locks = LockRepository(self._db)

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
            if db_path is not None:
                _create_private_file(db_path)
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
        return self._db.url

    @property
    def dialect(self) -> str:
        return self._db.dialect

    def current_revision(self) -> str | None:
        with self._db.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @staticmethod
    def head_revision() -> str | None:
        return _script_directory().get_current_head()

    def upgrade(self) -> None:
        """Bring the schema to the newest revision (Alembic `upgrade head`), in one transaction."""
        self._refuse_unknown_revision()
        with self._db.translate(), self._engine.connect() as conn:
            conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                if self.dialect == "postgresql":
                    # Replicas starting together must not both run the same migration.
                    key = advisory_key(conn, "migrate")
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
                cfg = AlembicConfig()
                # configparser would read a '%' in the install path as interpolation
                cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
                cfg.attributes["connection"] = conn
                before = MigrationContext.configure(conn).get_current_revision()
                command.upgrade(cfg, "head")
                after = MigrationContext.configure(conn).get_current_revision()
        self._db.has_written = True  # the write transaction above committed
        if after != before:
            log.info("state.migrated", url=self.url, from_revision=before, to_revision=after)

    def _where(self) -> str:
        return self._db.where()

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

    # --- transactions -------------------------------------------------------------------------

    def transaction(self) -> AbstractContextManager[None]:
        """Group the repository calls inside into one database transaction; nested calls join."""
        return self._db.transaction()

    # --- status -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Numbers for the status command; plain JSON-ready values."""
        now = utcnow()
        lk, q, c = t.links, t.retry_queue, t.conflicts
        with self._db.connect() as conn:
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
        lock = self.locks.holder()
        last_run = run_record(last) if last is not None else None
        return {
            "database": {"dialect": self.dialect, "url": self.url, "revision": revision},
            "links": links,
            "open_conflicts": int(open_conflicts),
            "retries": {"due": int(retries_due), "total": int(retries_total)},
            "open_intents": int(open_intents),
            "cursors": cursors,
            "lock": lock,
            # Who runs which partition now (daemon replicas, or a one-shot sync holding all).
            "partitions": self.locks.held("partition-"),
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


# --- files --------------------------------------------------------------------------------------

# The state database holds customer names, emails, phones and addresses: readable by the service
# user only. SQLite creates its -wal, -shm and -journal files with the database file's mode, so
# creating the database itself as 0600 covers them too, whatever the umask.
PRIVATE_FILE_MODE = 0o600


def _create_private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if it does not exist (SQLite takes an empty file as a
    new database). An existing file keeps the mode its admin gave it; a missing folder is left
    for SQLite to report ("cannot open the state database ...")."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except (FileExistsError, FileNotFoundError, NotADirectoryError):
        return
    except PermissionError:
        return  # SQLite says the same, with the file named (UnavailableError)
    os.close(fd)


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
        # Sent on the driver's connection: through `exec_driver_sql` this one statement cost
        # as much CPU as the write it opens (SQLAlchemy's execute path and its events), and a
        # sync begins a transaction or two per record. Errors are wrapped as SQLAlchemy would
        # (a locked file stays an OperationalError), so the store still explains them.
        statement = f"BEGIN {mode}".strip()
        try:
            conn.connection.driver_connection.execute(statement)  # type: ignore[union-attr]
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc

    return engine, db_path


__all__ = ["DEFAULT_BUSY_TIMEOUT", "UPGRADE_COMMAND", "StateStore"]
