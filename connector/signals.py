"""What SIGTERM and SIGINT do to the command, from its first line to its exit.

The handlers are installed first thing in the entry point, before the heavy imports, and stay
until the process ends, so a signal never meets the default handler (which exits -15 and
records nothing). What a signal does depends on the phase:

- start-up (imports, config, login, admin commands): nothing to finish, so the first signal
  stops the command at once with exit 1 (`Interrupted`, raised where the program is);
- a run (or the demo, or the sandbox servers) has started: the first signal sets `STOP`, which
  the engine checks between records, so the record in progress finishes and the run is recorded
  as interrupted (exit 1); this phase lasts until the process exits, so a signal after the run
  was recorded only lets the command finish printing;
- a second signal exits at once with 130 (SystemExit, so the engine still records the run as
  interrupted on the way out); a third ends the process without any cleanup (exit 130; the next
  run marks a run left 'running' as interrupted).

This module imports only the standard library: it must be cheap to import before anything else.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import suppress
from types import FrameType

STOP = threading.Event()
SIGNALLED_EXIT = 130  # a second signal: exit at once


class Interrupted(SystemExit):
    """A signal stopped the command before any run had started (exit 1)."""

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        super().__init__(1)


class _State:
    installed = False
    graceful = False  # a run has started: the first signal asks it to finish cleanly
    first_signal_says = ""
    received = 0


def install() -> None:
    """Take over SIGTERM and SIGINT for the rest of the process (main thread only)."""
    if _State.installed:
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _handle)
    _State.installed = True


def run_started(on_first_signal: str = "stopping after the record in progress") -> threading.Event:
    """From now on the first signal only sets `STOP` (and says `on_first_signal`)."""
    _State.graceful = True
    _State.first_signal_says = on_first_signal
    return STOP


def installed() -> bool:
    return _State.installed


def _say(text: str) -> None:
    # os.write, not print: a handler can run in the middle of another write to stderr, and
    # Python's buffered streams refuse a re-entrant call.
    with suppress(OSError):
        os.write(2, text.encode() + b"\n")


def _handle(signum: int, frame: FrameType | None) -> None:
    _State.received += 1
    name = signal.Signals(signum).name
    if _State.received == 1 and _State.graceful:
        STOP.set()
        _say(f"{name}: {_State.first_signal_says} (signal again to exit at once)")
        return
    if _State.received == 1:
        _say(f"{name}: stopped before any run started (exit 1)")
        raise Interrupted(signum)
    if _State.received == 2:
        STOP.set()
        _say(f"{name} again: exiting at once ({SIGNALLED_EXIT})")
        raise SystemExit(SIGNALLED_EXIT)
    # Already on the way out and signalled again: leave now, cleanup or not.
    os._exit(SIGNALLED_EXIT)
