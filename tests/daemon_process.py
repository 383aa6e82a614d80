"""Driving `billing-connector run` as a real process: its config on disk, and its JSON log
lines read as they come so a test waits for an event (a run finished, a partition taken)
instead of sleeping."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

Event = dict[str, Any]
# Only guards against a hang; the tests wait for events, not for time.
HANG = 180


def write_config(cli_env: dict[str, str], **sections: Any) -> Path:
    """The test's config file with sections replaced (schedule, billing, ...)."""
    path = Path(cli_env["BILLING_CONNECTOR_CONFIG"])
    data = yaml.safe_load(path.read_text())
    data.update(sections)
    path.write_text(yaml.safe_dump(data))
    return path


class Daemon:
    """One `billing-connector run` process and the events it logged."""

    def __init__(
        self, env: dict[str, str], *args: str, name: str = "daemon", prefix: tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.events: list[Event] = []
        self.other: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "connector", "run", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            with self._changed:
                if isinstance(event, dict):
                    self.events.append(event)
                else:
                    self.other.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, match: Callable[[Event], bool], count: int = 1) -> list[Event]:
        """Block until `count` logged events match (or fail if the process ends first)."""

        def ready() -> bool:
            return len([e for e in self.events if match(e)]) >= count or not self._reader.is_alive()

        with self._changed:
            self._changed.wait_for(ready, HANG)
            found = [e for e in self.events if match(e)]
        assert len(found) >= count, f"{self.name}: waited for {count}, log: {self.tail()}"
        return found

    def event(self, name: str, count: int = 1, **fields: Any) -> list[Event]:
        return self.wait_for(
            lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items()),
            count,
        )

    def seen(self, name: str, **fields: Any) -> list[Event]:
        with self._changed:
            return [
                e
                for e in self.events
                if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
            ]

    def tail(self, n: int = 30) -> str:
        with self._changed:
            lines = [json.dumps(e) for e in self.events[-n:]] + self.other[-10:]
        return "\n".join(lines)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self) -> int:
        code = self.proc.wait(timeout=HANG)
        self._reader.join(timeout=HANG)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
