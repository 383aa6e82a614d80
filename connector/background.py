"""Calls that run beside the writers on one worker thread, collected in order by the engine.

The write-back of customer ids to Salesforce used to run inline, between one page's writes and
the next: the billing writers stood still while Salesforce answered. Now each batch is handed
to this worker and the engine goes on with the next page; the engine's own thread collects the
answers (and records them in the store, which only that thread touches) at the next page
boundary, and waits for all of them before the run's end. A batch whose answer is never
collected (the run stopped) leaves its links pending: the next run writes them back.
"""

from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """One worker thread; `collect` hands back (tag, future) in submission order."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: deque[tuple[T, Future[Any]]] = deque()

    def submit(self, tag: T, fn: Callable[..., Any], *args: Any) -> None:
        # The worker keeps the run's log context (run_id).
        context = contextvars.copy_context()
        self._pending.append((tag, self._pool.submit(context.run, fn, *args)))

    def collect(self, *, wait: bool) -> Iterator[tuple[T, Future[Any]]]:
        """Finished calls in submission order; with `wait`, every call, waiting for each."""
        while self._pending and (wait or self._pending[0][1].done()):
            tag, future = self._pending.popleft()
            future.exception()  # waits; the caller reads the result or the error
            yield tag, future

    def __len__(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        """Let the calls in flight finish (their answers are not recorded), then stop."""
        self._pending.clear()
        self._pool.shutdown(wait=True)
