"""The single-runner lock: at most one runner syncs a store at a time.

SQLite file: flock on `<dbfile>.lock`; PostgreSQL: a session advisory lock on a dedicated
connection; in-memory SQLite: a lock in this process. A holder that dies releases it (the OS
closes the file, the server ends the session). What this module must never do: wait for a lock
(a second runner is refused at once, naming the holder).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connector.errors import LockHeldError, UnavailableError
from connector.state import schema as t
from connector.state.database import Database, advisory_key, utcnow


@dataclass(frozen=True, slots=True)
class LockHandle:
    """A lock being held: its name and the details recorded for `status`."""

    name: str
    holder: str
    host: str
    pid: int
    since: str


class LockRepository:
    """`store.locks`: named single-runner locks."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._memory_lock = threading.Lock()
        self._memory_lock_info: dict[str, Any] = {}

    @contextmanager
    def hold(self, name: str = "sync", *, holder: str) -> Iterator[LockHandle]:
        """Hold the named single-runner lock for the block, or raise `LockHeldError` at once."""
        handle = LockHandle(
            name=name,
            holder=holder,
            host=socket.gethostname(),
            pid=os.getpid(),
            since=utcnow().isoformat(timespec="seconds"),
        )
        info = {"holder": holder, "host": handle.host, "pid": handle.pid, "since": handle.since}
        if self._db.dialect == "postgresql":
            with self._pg_lock(name, info):
                yield handle
        elif self._db.db_path is None:
            if not self._memory_lock.acquire(blocking=False):
                raise LockHeldError(_held_message(name, self._memory_lock_info, "this process"))
            self._memory_lock_info = info
            try:
                yield handle
            finally:
                self._memory_lock_info = {}
                self._memory_lock.release()
        else:
            with self._file_lock(name, info):
                yield handle

    def holder(self, name: str = "sync") -> dict[str, Any] | None:
        """Who holds the named lock now (holder, host, pid, since), or None; for `status`."""
        if self._db.dialect == "postgresql":
            with self._db.connect() as conn:
                key = advisory_key(conn, f"lock:{name}")
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
        if self._db.db_path is None:
            return dict(self._memory_lock_info) if self._memory_lock.locked() else None
        path = self.path(name)
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

    def path(self, name: str = "sync") -> Path | None:
        """The lock file for `name` next to the SQLite database (None on PostgreSQL/in memory)."""
        db_path = self._db.db_path
        if db_path is None:
            return None
        suffix = ".lock" if name == "sync" else f".{_safe_name(name)}.lock"
        return db_path.with_name(db_path.name + suffix)

    @contextmanager
    def _file_lock(self, name: str, info: dict[str, Any]) -> Iterator[None]:
        path = self.path(name)
        assert path is not None
        try:
            # Readable by the service user only, like the database it sits next to.
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
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
        db = self._db
        with db.translate():
            conn = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
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
                yield
            finally:
                try:
                    with db.connect(write=True) as write:
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
