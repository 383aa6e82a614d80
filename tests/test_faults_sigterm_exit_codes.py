"""SIGTERM outside the middle of a run keeps the documented exit codes (README, "exit codes of an
interrupted run": 1 for an interrupted run, 130 for a second signal), never -15, and an
interrupted run is always recorded as interrupted.

Each test synchronises on something the child does (a FIFO it opens, a line it logs, a request
the sandbox counts, a write it blocks on), never on elapsed time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

import pytest
from fault_readback import add_billed_accounts, read_store, requests_seen

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

# A reader thread that dies (its stream closed under it) fails the test, not just a warning.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


class Lines:
    """Reads a child's stream line by line in a thread, until EOF; tests wait for a line to
    appear. The thread is the stream's only reader: nobody else reads or closes it (no
    `communicate()`), and `text()` joins it after EOF, so it never meets a closed file."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self.error: BaseException | None = None
        self._done = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        except (OSError, ValueError) as exc:  # ValueError: "I/O operation on closed file"
            self.error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def wait_for(self, text: str) -> bool:
        """True once a line contains `text`; False if the stream ended without one."""
        with self._cond:
            self._cond.wait_for(lambda: self._done or any(text in ln for ln in self.lines))
            return any(text in ln for ln in self.lines)

    def text(self) -> str:
        """Everything the child wrote, once it has closed the stream (it exited)."""
        self._thread.join()
        assert self.error is None, f"the reader thread failed: {self.error!r}"
        return "".join(self.lines)


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 60  # a safety net for a broken run, not a timing assertion
    while not condition():
        assert proc.poll() is None, f"the command exited before {what}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.02)


@contextmanager
def killed_on_exit(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_during_start_up_exits_1_contacts_nothing_and_prints_one_json_object(
    sandboxes: SandboxPair, cli_env: dict[str, str], tmp_path: Path
) -> None:
    # The config is a FIFO: the command is provably in start-up (reading its config) once it
    # has opened the FIFO, which is when our open() for writing returns.
    config_text = Path(cli_env["BILLING_CONNECTOR_CONFIG"]).read_text()
    fifo = tmp_path / "config-fifo.yaml"
    os.mkfifo(fifo)
    env = {**cli_env, "BILLING_CONNECTOR_CONFIG": str(fifo)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "sync", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with killed_on_exit(proc):
        writer = os.open(fifo, os.O_WRONLY)  # returns once the command opened the config
        try:
            proc.send_signal(signal.SIGTERM)
            # The command may already be gone (stopped mid-read): then nobody reads the config.
            with suppress(BrokenPipeError):
                os.write(writer, config_text.encode())
        finally:
            os.close(writer)
        out, err = proc.communicate(timeout=60)

    assert proc.returncode == 1, (proc.returncode, out, err)  # never -15
    report = json.loads(out)  # exactly one JSON object
    assert report["status"] == "interrupted" and report["exit_code"] == 1
    assert "SIGTERM" in report["error"] and "SIGTERM" in err
    assert "Traceback" not in err
    assert requests_seen(sandboxes) == 0


def test_a_double_sigterm_exits_130_and_records_the_run_as_interrupted_not_failed(
    sandboxes: SandboxPair, cli_env: dict[str, str], db_url: str
) -> None:
    add_billed_accounts(sandboxes.salesforce, 8)
    sandboxes.stripe.set_latency(2.0)  # a create in flight when the second signal lands
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "sync"],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    with killed_on_exit(proc):
        assert proc.stderr is not None
        err = Lines(proc.stderr)
        wait_until(
            lambda: sandboxes.stripe.stats()["requests"].get("POST /v1/customers", 0) >= 2,
            proc,
            "a create",
        )
        proc.send_signal(signal.SIGTERM)
        assert err.wait_for("stopping after the record in progress"), err.text()
        proc.send_signal(signal.SIGTERM)
        # Not communicate(): it would read stderr beside the reader thread and close it.
        proc.wait(timeout=60)
        stderr = err.text()

    assert proc.returncode == 130, stderr
    run = read_store(db_url).runs[0]
    assert run.status == "interrupted", (run.status, run.error)
    assert not run.error or "internal error" not in run.error
    assert "internal error" not in stderr and "Traceback" not in stderr


def _full_pipe() -> tuple[int, int]:
    """A pipe already full: the child's first write to it blocks until the test reads."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"." * 4096)
    except BlockingIOError:
        pass
    try:
        while True:
            os.write(w, b".")
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    return r, w


def _blocked_writing(pid: int) -> bool:
    with open(f"/proc/{pid}/wchan") as fh:
        return fh.read().endswith("pipe_write")


def test_a_second_sigterm_after_the_run_was_recorded_exits_130(
    sandboxes: SandboxPair,
    cli_env: dict[str, str],
    run_sync: Callable[..., RunReport],
    db_url: str,
) -> None:
    if not Path(f"/proc/{os.getpid()}/wchan").exists():
        pytest.skip("needs /proc/PID/wchan (Linux) to see the command block on its output")
    assert run_sync("sync").exit_code == 0
    add_billed_accounts(sandboxes.salesforce, 16)
    sandboxes.stripe.set_latency(0.25)
    creates = sandboxes.stripe.operations["create"]
    # stdout is a full pipe: after recording the run, the command blocks printing its report,
    # the moment a second signal used to meet the default handler (-15).
    r, w = _full_pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "sync", "--json"],
        env=cli_env,
        stdout=w,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(w)
    drained: list[bytes] = []
    with killed_on_exit(proc):
        assert proc.stderr is not None
        err = Lines(proc.stderr)
        wait_until(lambda: sandboxes.stripe.operations["create"] >= creates + 2, proc, "a create")
        proc.send_signal(signal.SIGTERM)
        assert err.wait_for('"run.finished"'), err.text()  # the run is recorded
        wait_until(lambda: _blocked_writing(proc.pid), proc, "the report being printed")
        proc.send_signal(signal.SIGTERM)
        while chunk := os.read(r, 65536):
            drained.append(chunk)
        proc.wait(timeout=60)
        os.close(r)
        stderr = err.text()

    assert proc.returncode == 130, stderr
    run = read_store(db_url).runs[0]
    assert run.status == "interrupted" and not run.error
    assert "Traceback" not in stderr


def test_sigterm_stops_the_sandbox_servers_cleanly_with_exit_0(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "sandbox", "--salesforce-port", "0", "--stripe-port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with killed_on_exit(proc):
        assert proc.stdout is not None
        out = Lines(proc.stdout)
        assert out.wait_for("Ctrl-C to stop."), out.text()  # both servers are up
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        out.text()  # the reader has met EOF and stopped
        assert proc.stderr is not None
        err = proc.stderr.read()

    assert proc.returncode == 0, err  # stopping the servers is what the signal asks for
    assert "stopping the sandbox servers" in err
