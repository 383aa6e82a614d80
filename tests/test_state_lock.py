"""One runner at a time: the store's lock, across store objects and processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from state_fixtures import db_url

from connector.errors import LockHeldError
from connector.state import schema
from connector.state.store import StateStore

__all__ = ["db_url"]  # fixture, imported for pytest

REPO = Path(__file__).resolve().parents[1]
HOLDER_SCRIPT = """
import sys, time
from connector.state.store import StateStore
store = StateStore.open(sys.argv[1])
with store.locks.hold("sync", holder="subprocess-holder"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_store_is_refused_naming_the_holder(db_url: str) -> None:
    with StateStore.open(db_url) as first, StateStore.open(db_url) as second:
        with first.locks.hold(holder="daemon"):
            with pytest.raises(LockHeldError) as err, second.locks.hold(holder="cli sync"):
                pass
            message = str(err.value)
            assert "daemon" in message
            assert f"host {socket.gethostname()}" in message
            assert f"pid {os.getpid()}" in message
            assert "since 20" in message
            with second.locks.hold("other", holder="cli"):  # another name is another lock
                pass
        with second.locks.hold(holder="cli sync"):  # released when the first left its block
            pass
        with first.locks.hold(holder="daemon"):  # and again
            pass


def test_the_lock_is_released_when_the_block_raises(db_url: str) -> None:
    with StateStore.open(db_url) as store:
        with pytest.raises(RuntimeError), store.locks.hold(holder="a"):
            raise RuntimeError("run failed")
        with store.locks.hold(holder="b"):
            pass


def test_holder_details_are_recorded_while_held(db_url: str) -> None:
    with StateStore.open(db_url) as store, StateStore.open(db_url) as other:
        assert other.locks.holder() is None
        with store.locks.hold(holder="daemon"):
            seen = other.locks.holder()
            assert seen is not None
            assert (seen["holder"], seen["pid"], seen["host"]) == (
                "daemon",
                os.getpid(),
                socket.gethostname(),
            )
            assert other.stats()["lock"] == seen
            assert other.locks.holder("other") is None
            if store.dialect == "sqlite":
                path = store.locks.path()
                assert path is not None and path.name == "state.db.lock"
                info = json.loads(path.read_text())
                assert (info["holder"], info["pid"]) == ("daemon", os.getpid())
            else:
                with store._engine.connect() as conn:
                    row = conn.execute(sa.select(schema.locks)).one()
                assert (row.name, row.holder, row.pid) == ("sync", "daemon", os.getpid())
        assert other.locks.holder() is None
        if store.dialect == "sqlite":
            assert store.locks.path().read_text() == ""  # type: ignore[union-attr]
        else:
            with store._engine.connect() as conn:
                assert conn.execute(sa.select(schema.locks)).first() is None


def test_a_killed_holder_process_releases_the_lock(db_url: str) -> None:
    StateStore.open(db_url).close()  # migrate before the child starts
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, db_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "locked", child.stderr.read() if child.stderr else ""
        with StateStore.open(db_url) as store:
            held = pytest.raises(LockHeldError, match=rf"subprocess-holder .*pid {child.pid}\b")
            with held, store.locks.hold(holder="test"):
                pass
            child.kill()
            child.wait(timeout=10)
            deadline = time.monotonic() + 10
            while True:  # the server notices the closed session within moments
                try:
                    with store.locks.hold(holder="test"):
                        break
                except LockHeldError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def test_in_memory_store_locks_within_the_process() -> None:
    with StateStore.open("sqlite:///:memory:") as store:
        with (
            store.locks.hold(holder="daemon"),
            pytest.raises(LockHeldError, match="daemon"),
            store.locks.hold(holder="cli"),
        ):
            pass
        assert store.locks.holder() is None
        with store.locks.hold(holder="cli"):
            assert store.locks.holder()["holder"] == "cli"  # type: ignore[index]
