"""The connection, transaction and error handling every repository of the store shares.

One `Database` per opened store. Repositories borrow a connection from it (joining the caller's
`transaction()` when one is open in this thread), build dialect-correct upserts with it, and let
it turn database failures an admin can act on into `UnavailableError` naming the file or server.
What this module must never do: hold business rules (those live in the repositories) or swallow
a database error.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from connector.errors import UnavailableError

# Ids per `IN (...)` query. SQLite builds before 3.32 allow only 999 bound variables.
LOOKUP_CHUNK = 500

_T = TypeVar("_T")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(when: datetime | None) -> datetime:
    """`when` (default: now) in UTC. Arithmetic is done in UTC: adding to a local wall-clock
    time across a DST change would give the wrong instant."""
    if when is None:
        return utcnow()
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: the state store only takes aware datetimes")
    return when.astimezone(UTC)


def chunks(ids: Iterable[_T], size: int = LOOKUP_CHUNK) -> Iterator[list[_T]]:
    """Distinct `ids` in order, `size` at a time (one `IN (...)` query each)."""
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), size):
        yield unique[start : start + size]


def advisory_key(conn: Connection, name: str) -> int:
    """A 64-bit PostgreSQL advisory lock key unique to this database, schema and lock name.

    Including the schema keeps two deployments (or two test runs) sharing one database apart.
    """
    db, schema = conn.execute(sa.select(sa.func.current_database(), sa.func.current_schema())).one()
    digest = hashlib.blake2b(f"billing-connector:{db}:{schema}:{name}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class Database:
    """An SQLAlchemy engine plus the one transaction this thread has open on it, if any."""

    def __init__(self, engine: Engine, *, db_path: Path | None, busy_timeout: float) -> None:
        self.engine = engine
        self.db_path = db_path  # the SQLite file; None for PostgreSQL and in-memory SQLite
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        # Set once a write transaction committed: a read-only error after that means the store
        # *became* read-only under a running process, not that it was opened read-only.
        self.has_written = False
        # Upserts built once per (table, keys, update columns): see `upsert`.
        self._upserts: dict[tuple[str, tuple[str, ...], tuple[str, ...] | None], sa.Insert] = {}
        self._bulk: dict[tuple[sa.Insert, tuple[str, ...]], _BulkInsert | None] = {}

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def url(self) -> str:
        """The database URL without its password, safe to log and print."""
        u = self.engine.url
        bare = sa.URL.create(u.drivername, u.username, None, u.host, u.port, u.database, u.query)
        return bare.render_as_string(hide_password=False)

    def where(self) -> str:
        """The SQLite file or the server URL: what an admin looks at."""
        return str(self.db_path) if self.db_path is not None else self.url

    # --- connections and transactions ---------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group the store calls inside into one database transaction; nested calls join it."""
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self.translate(), self.engine.connect() as conn:
            # SQLite: take the write lock up front, so a read-then-write cannot deadlock.
            conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                self._local.conn = conn
                try:
                    yield
                finally:
                    self._local.conn = None
            self.has_written = True

    @contextmanager
    def connect(self, *, write: bool = False) -> Iterator[Connection]:
        """The open transaction's connection, or a new one in its own short transaction."""
        current: Connection | None = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        with self.translate(), self.engine.connect() as conn:
            if write:
                conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn
            if write:
                self.has_written = True

    @contextmanager
    def translate(self) -> Iterator[None]:
        """Turn database failures an admin can act on into `UnavailableError`."""
        try:
            yield
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.DataError):
            raise
        except (sa.exc.DatabaseError, sa.exc.InterfaceError) as exc:
            raise UnavailableError(self.unavailable_message(exc)) from exc

    def unavailable_message(self, exc: sa.exc.DBAPIError) -> str:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        if self._refuses_writes(exc, detail):
            return self._read_only_message(detail)
        if self.dialect != "sqlite":
            return f"the state database at {self.url} is unavailable: {detail}"
        where = str(self.db_path) if self.db_path is not None else "(in memory)"
        low = detail.lower()
        if "locked" in low:
            return (
                f"the state database {where} is locked by another process (waited "
                f"{self.busy_timeout:g} s): another connector run or a tool such as sqlite3 "
                "holds a write transaction; let it finish and retry"
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

    def _refuses_writes(self, exc: sa.exc.DBAPIError, detail: str) -> bool:
        """Whether the database refused a write because it is read-only (not locked, not full)."""
        if self.dialect == "postgresql":
            # 25006 read_only_sql_transaction: default_transaction_read_only, or a hot standby.
            return getattr(exc.orig, "sqlstate", None) == "25006"
        name = str(getattr(exc.orig, "sqlite_errorname", "") or "")
        low = detail.lower()
        if name.startswith("SQLITE_READONLY") or "readonly" in low or "read-only" in low:
            return True
        if name.startswith("SQLITE_IOERR") or "disk i/o error" in low:
            # SQLite reports a -wal or -shm file it may no longer write as an I/O error.
            return not self._files_writable()
        return False

    def _files_writable(self) -> bool:
        if self.db_path is None:
            return True
        folder = self.db_path.parent
        files = [self.db_path.with_name(self.db_path.name + s) for s in ("", "-wal", "-shm")]
        return os.access(folder, os.W_OK) and all(
            os.access(f, os.W_OK) for f in files if f.exists()
        )

    def _read_only_message(self, detail: str) -> str:
        state = "became read-only during the run" if self.has_written else "is read-only"
        if self.dialect == "postgresql":
            return (
                f"the state store {state}: PostgreSQL at {self.url} refuses writes ({detail}). "
                "Check default_transaction_read_only for the connector's role and database "
                "(SHOW default_transaction_read_only; ALTER ROLE/DATABASE ... RESET "
                "default_transaction_read_only) and that state.url names the primary server, "
                "not a standby or a replica left after a failover"
            )
        where = str(self.db_path) if self.db_path is not None else "(in memory)"
        folder = str(self.db_path.parent) if self.db_path is not None else "its folder"
        return (
            f"the state store {state}: SQLite cannot write the state database {where} "
            f"({detail}). Give the connector's user write access to the file, its -wal and -shm "
            f"files and the folder {folder} (check their owner and mode, and that the disk is "
            "not mounted read-only)"
        )

    def upsert(
        self, table: sa.Table, keys: Sequence[str], update: Sequence[str] | None
    ) -> sa.Insert:
        """INSERT ... ON CONFLICT (keys) DO UPDATE SET update=excluded (DO NOTHING if None).

        Built once per table, keys and columns and then reused: building one (its `excluded`
        column collection above all) cost more CPU than running it, and the engine upserts per
        record. A statement is immutable, so sharing it between threads is safe.
        """
        memo = (table.name, tuple(keys), tuple(update) if update else None)
        stmt = self._upserts.get(memo)
        if stmt is None:
            stmt = self._upserts[memo] = self._build_upsert(table, keys, update)
        return stmt

    def insert_many(
        self, conn: Connection, stmt: sa.Insert, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """`conn.execute(stmt, rows)` for an INSERT (or upsert) of rows with the same keys.

        On SQLite the statement is compiled once per set of keys and the rows go to the
        driver's executemany as tuples, each value through its column type's bind processor:
        SQLAlchemy's own executemany builds a parameter dict per row through the compiled
        statement's generic machinery, which was a fifth of the main thread's CPU per create
        (four bulk writes of a dozen columns per record). Statements whose compiled form
        needs more than the values given (a Python-side column default, a RETURNING) and
        other dialects take SQLAlchemy's path, unchanged.
        """
        if not rows:
            return
        keys = tuple(rows[0])
        bulk: _BulkInsert | None = None
        if self.dialect == "sqlite":
            memo = (stmt, keys)
            if memo in self._bulk:
                bulk = self._bulk[memo]
            else:
                bulk = self._bulk[memo] = _BulkInsert.compile(stmt, keys, conn.dialect)
        if bulk is None or any(len(row) != len(keys) for row in rows):
            conn.execute(stmt, list(rows))
            return
        conn.exec_driver_sql(bulk.sql, [bulk.values(row) for row in rows])

    def _build_upsert(
        self, table: sa.Table, keys: Sequence[str], update: Sequence[str] | None
    ) -> sa.Insert:
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


@dataclass(frozen=True)
class _BulkInsert:
    """An INSERT compiled for one set of keys: its SQL, and per positional parameter the key
    it takes and its type's bind processor (None when the driver takes the value as is)."""

    sql: str
    params: tuple[tuple[str, Callable[[Any], Any] | None], ...]

    @classmethod
    def compile(
        cls, stmt: sa.Insert, keys: tuple[str, ...], dialect: sa.Dialect
    ) -> _BulkInsert | None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)
        names = compiled.positiontup
        if (
            names is None
            or compiled.insert_prefetch
            or compiled.postfetch
            or compiled.returning
            or set(names) != set(keys)
            or len(names) != len(keys)
        ):
            return None
        params = tuple(
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in names
        )
        return cls(compiled.string, params)

    def values(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            row[name] if process is None else process(row[name]) for name, process in self.params
        )


class _IdList(sa.types.TypeDecorator[list[str]]):
    """A list of ids bound as one JSON text (SQLite's `json_each` reads it back)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Sequence[str] | None, dialect: sa.Dialect) -> str | None:
        return None if value is None else json.dumps(list(value))


class InIds(sa.sql.expression.ColumnElement[bool]):
    """`column IN (:name)`, the ids given as one list per execution.

    On SQLite the list is bound as one JSON text and read with `json_each`: an expanding
    `IN` is rendered anew by SQLAlchemy at every execution (one placeholder and one parameter
    per id), which cost about a tenth of a re-check's CPU for its four lookups per page. The
    query plan is the same: SQLite looks each id up in the index. Other dialects (PostgreSQL)
    keep the expanding `IN`.
    """

    inherit_cache = True
    # Not Boolean: SQLite (no native boolean) would compare a Boolean expression to 1, which
    # hides the IN from its planner.
    type = sa.types.NullType()  # type: ignore[assignment]
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("expanding", InternalTraversal.dp_clauseelement),
        ("packed", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: sa.ColumnElement[str], name: str = "ids") -> None:
        self.column = column
        self.expanding: sa.BindParameter[list[str]] = sa.bindparam(name, expanding=True)
        self.packed = sa.bindparam(name, type_=_IdList())


@compiles(InIds)
def _in_ids(element: InIds, compiler: SQLCompiler, **kw: object) -> str:
    return compiler.process(element.column.in_(element.expanding), **kw)


@compiles(InIds, "sqlite")
def _in_ids_sqlite(element: InIds, compiler: SQLCompiler, **kw: object) -> str:
    column = compiler.process(element.column, **kw)
    return f"{column} IN (SELECT value FROM json_each({compiler.process(element.packed, **kw)}))"
