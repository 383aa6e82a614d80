"""Alerts to a Slack-compatible webhook: one message per change of health, never one per run.

The daemon hands the alerter the problems it sees after every run (a failed run, a failure
ratio over the threshold, a conflict opened, the Salesforce API budget low), keyed so that the
same problem seen again is not news. A message goes out when a problem appears that was not
there before, and once when every problem is gone. Delivery happens on a thread of its own, so
a webhook that is slow or down never holds up a sync; a failed delivery is logged, never raised.
What this module must never do: log or print the webhook URL (it is a token).
"""

from __future__ import annotations

import json
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping

from connector.log import REDACTOR, get_logger

log = get_logger(__name__)


class Alerter:
    """Remembers the problems last reported and posts `{"text": ...}` when they change."""

    def __init__(self, url: str | None, *, name: str = "billing-connector", timeout: float = 5):
        self.url = url
        self.name = name
        self.timeout = timeout
        self.sent = 0
        self.failed = 0
        self._known: dict[str, str] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        if url:
            REDACTOR.add(url)  # an incoming-webhook URL is its own credential

    @property
    def problems(self) -> dict[str, str]:
        return dict(self._known)

    def observe(self, problems: Mapping[str, str]) -> str | None:
        """Compare with what was last reported; queue a message if the state changed.

        `problems` maps a stable key (`run_failed:main`, `conflict:12`) to a sentence for people.
        Returns the message queued, if any.
        """
        new = {k: v for k, v in problems.items() if k not in self._known}
        recovered = bool(self._known) and not problems
        self._known = dict(problems)
        if new:
            lines = "\n".join(f"- {v}" for v in new.values())
            still = len(problems) - len(new)
            tail = f"\n({still} earlier problem(s) still open)" if still else ""
            text = f":warning: {self.name} is unhealthy:\n{lines}{tail}"
        elif recovered:
            text = f":white_check_mark: {self.name} has recovered: every problem is gone"
        else:
            return None
        text = REDACTOR.scrub(text)
        log.warning("alert.unhealthy" if new else "alert.recovered", problems=sorted(problems))
        if self.url:
            self._start()
            self._queue.put(text)
        return text

    def wait_delivered(self) -> None:
        """Block until every queued message was tried (tests and shutdown)."""
        if self._thread is not None:
            self._queue.join()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=self.timeout + 1)
            self._thread = None

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._deliver, name="alerts", daemon=True)
            self._thread.start()

    def _deliver(self) -> None:
        while True:
            text = self._queue.get()
            try:
                if text is None:
                    return
                self._post(text)
            finally:
                self._queue.task_done()

    def _post(self, text: str) -> None:
        assert self.url is not None
        body = json.dumps({"text": text}).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
            self.sent += 1
        except (urllib.error.URLError, OSError, ValueError) as exc:
            # Down or refusing: the sync goes on; the next change of state tries again.
            self.failed += 1
            reason = getattr(exc, "reason", None) or getattr(exc, "code", None) or exc
            log.warning("alert.delivery_failed", error=REDACTOR.scrub(str(reason)))
