"""Runner locks: at most one runner writes a store (or one partition of it) at a time.

SQLite file: flock on `<dbfile>.lock` (`<dbfile>.<name>.lock` for other names); PostgreSQL: a
session advisory lock on a dedicated connection; in-memory SQLite: a lock in this process. A
holder that dies releases it (the OS closes the file, the server ends the session).

A lock can also be lost while its holder lives: the PostgreSQL session is terminated
(`pg_terminate_backend`, a failover, `idle_session_timeout`) or the lock file is deleted or
replaced. The handle's `check()` finds out (a query on the lock's own session; the locked file
still being the one at the path) and raises `LockLost`, so the runner stops before its next
write. What this module must never do: wait for a lock (a second runner is refused at once,
naming the holder).
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.errors import LockHeldError, LockLost, UnavailableError
from connector.state import schema as t
from connector.state.database import Database, advisory_key, utcnow

# A bigint advisory key shows in pg_locks split into classid (high) and objid (low), objsubid 1.
_PG_HELD = (
    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND classid = :hi AND objid = :lo AND objsubid = 1"
)


def _never_lost() -> None:
    return None


@dataclass(frozen=True, slots=True)
class LockHandle:
    """A lock being held: its name, the details recorded for `status`, and its check."""

    name: str
    holder: str
    host: str
    pid: int
    since: str
    _verify: Callable[[], None] = field(default=_never_lost, repr=False, compare=False)

    def check(self) -> None:
        """Raise `LockLost` unless this lock is still held by this process. Cheap: one query
        on the lock's own PostgreSQL session, or two stat calls on SQLite."""
        self._verify()


class LockRepository:
    """`store.locks`: named runner locks (the one-shot commands' and each partition's)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._memory_guard = threading.Lock()
        self._memory_locks: dict[str, dict[str, Any]] = {}

    @contextmanager
    def hold(self, name: str = "sync", *, holder: str) -> Iterator[LockHandle]:
        """Hold the named lock for the block, or raise `LockHeldError` at once."""
        info: dict[str, Any] = {
            "holder": holder,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": utcnow().isoformat(timespec="seconds"),
        }
        if self._db.dialect == "postgresql":
            with self._pg_lock(name, info) as verify:
                yield _handle(name, info, verify)
        elif self._db.db_path is None:
            with self._memory_guard:
                if name in self._memory_locks:
                    raise LockHeldError(
                        _held_message(name, self._memory_locks[name], "this process")
                    )
                self._memory_locks[name] = info
            try:
                yield _handle(name, info, _never_lost)
            finally:
                with self._memory_guard:
                    self._memory_locks.pop(name, None)
        else:
            with self._file_lock(name, info) as verify:
                yield _handle(name, info, verify)

    def holder(self, name: str = "sync") -> dict[str, Any] | None:
        """Who holds the named lock now (holder, host, pid, since), or None; for `status`."""
        if self._db.dialect == "postgresql":
            with self._db.connect() as conn:
                if not _pg_held(conn, name):
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
        if self._db.db_path is None:
            with self._memory_guard:
                info = self._memory_locks.get(name)
            return dict(info) if info is not None else None
        path = self.path(name)
        assert path is not None
        return _file_holder(path)

    def held(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Every lock whose name starts with `prefix` that some process holds now, with its
        holder. The daemon counts live replicas and sees who runs which partition with it."""
        _safe_name(prefix)
        out: dict[str, dict[str, Any]] = {}
        if self._db.dialect == "postgresql":
            with self._db.connect() as conn:
                rows = list(
                    conn.execute(sa.select(t.locks).where(t.locks.c.name.startswith(prefix)))
                )
                for row in rows:
                    # A row left by a process that died is not a lock: its session is gone.
                    if _pg_held(conn, row.name):
                        out[row.name] = {
                            "holder": row.holder,
                            "host": row.host,
                            "pid": row.pid,
                            "since": row.acquired_at.isoformat(timespec="seconds"),
                        }
            return out
        if self._db.db_path is None:
            with self._memory_guard:
                return {n: dict(i) for n, i in self._memory_locks.items() if n.startswith(prefix)}
        db_path = self._db.db_path
        pattern = glob.escape(str(db_path)) + "." + prefix + "*.lock"
        for file in glob.glob(pattern):
            name = Path(file).name[len(db_path.name) + 1 : -len(".lock")]
            info = _file_holder(Path(file))
            if info is not None:
                out[name] = info
        return out

    def path(self, name: str = "sync") -> Path | None:
        """The lock file for `name` next to the SQLite database (None on PostgreSQL/in memory)."""
        db_path = self._db.db_path
        if db_path is None:
            return None
        suffix = ".lock" if name == "sync" else f".{_safe_name(name)}.lock"
        return db_path.with_name(db_path.name + suffix)

    @contextmanager
    def _file_lock(self, name: str, info: dict[str, Any]) -> Iterator[Callable[[], None]]:
        path = self.path(name)
        assert path is not None
        try:
            # Readable by the service user only, like the database it sits next to.
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise UnavailableError(f"cannot open the lock file {path}: {exc.strerror}") from None
        released = threading.Event()
        # The open file's identity cannot change while the fd is open: read once, not per write
        # (verify runs before every write, and each syscall counted in the CPU per create).
        mine = os.fstat(fd)

        def verify() -> None:
            # flock belongs to the open file, not the path: if the file was deleted or replaced,
            # a second runner can lock the new one while we still "hold" ours.
            if released.is_set():
                raise LockLost(f"the '{name}' lock was already released")
            try:
                there = os.stat(path)
            except FileNotFoundError:
                raise LockLost(
                    f"the lock file {path} was deleted while this runner held the '{name}' lock; "
                    "another runner may be running now, so this one stops writing"
                ) from None
            if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
                raise LockLost(
                    f"the lock file {path} was replaced while this runner held the '{name}' "
                    "lock; another runner may be running now, so this one stops writing"
                )

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
                yield verify
            finally:
                released.set()
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextmanager
    def _pg_lock(self, name: str, info: dict[str, Any]) -> Iterator[Callable[[], None]]:
        db = self._db
        with db.translate():
            conn = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        # The lock's session is used by whichever thread checks or releases it.
        session = threading.Lock()
        released = threading.Event()
        lost = threading.Event()
        try:
            with db.translate():
                key = advisory_key(conn, f"lock:{name}")
                acquired = bool(conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar())
            if not acquired:
                with db.connect() as read:
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
                raise LockHeldError(_held_message(name, known, f"PostgreSQL {db.url}"))
            with db.translate():
                # This session must live as long as the lock: a server-wide idle_session_timeout
                # would end it between two batches and hand the lock to another runner.
                conn.execute(sa.text("SELECT set_config('idle_session_timeout', '0', false)"))

            def verify() -> None:
                with session:
                    if released.is_set():
                        raise LockLost(f"the '{name}' lock was already released")
                    if lost.is_set():
                        raise LockLost(f"the '{name}' lock was lost earlier in this run")
                    try:
                        still = conn.execute(
                            sa.text(_PG_HELD + " AND pid = pg_backend_pid()"),
                            {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
                        ).first()
                    except sa.exc.SQLAlchemyError as exc:
                        lost.set()
                        orig = getattr(exc, "orig", None) or exc
                        reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
                        raise LockLost(
                            f"the PostgreSQL session holding the '{name}' lock ended ({reason}); "
                            "another runner may hold the lock now, so this one stops writing"
                        ) from None
                    if still is None:
                        lost.set()
                        raise LockLost(
                            f"the '{name}' lock is no longer held by this runner's PostgreSQL "
                            "session; another runner may hold it now, so this one stops writing"
                        )

            try:
                stmt = db.upsert(
                    t.locks, ["name"], ["holder", "host", "pid", "acquired_at", "expires_at"]
                )
                with db.connect(write=True) as write:
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
                yield verify
            finally:
                with session:
                    released.set()
                    if lost.is_set():
                        # The session is gone and the server dropped its lock; the row may
                        # already name the runner that took over, so it is left alone.
                        conn.invalidate()
                    else:
                        try:
                            with db.connect(write=True) as write:
                                write.execute(
                                    t.locks.delete().where(
                                        t.locks.c.name == name,
                                        t.locks.c.holder == info["holder"],
                                        t.locks.c.host == info["host"],
                                        t.locks.c.pid == info["pid"],
                                    )
                                )
                            conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                        except (sa.exc.SQLAlchemyError, UnavailableError):
                            # The session is gone, and the server dropped its locks with it.
                            conn.invalidate()
        finally:
            conn.close()


def _handle(name: str, info: Mapping[str, Any], verify: Callable[[], None]) -> LockHandle:
    return LockHandle(
        name=name,
        holder=str(info["holder"]),
        host=str(info["host"]),
        pid=int(info["pid"]),
        since=str(info["since"]),
        _verify=verify,
    )


def _pg_held(conn: Connection, name: str) -> bool:
    key = advisory_key(conn, f"lock:{name}")
    held = conn.execute(
        sa.text(_PG_HELD), {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}
    ).first()
    return held is not None


def _file_holder(path: Path) -> dict[str, Any] | None:
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
