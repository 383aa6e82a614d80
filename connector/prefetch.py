"""Fetch the next page while the current one is processed: one background fetch, never more.

The caller gets page k while page k+1 is being fetched in one worker thread; the worker does
not start k+2 until the caller asks for k+1, so at most one page is held ahead of the one in
use and memory stays bounded by two pages. An error of a fetch is raised to the caller when
it asks for that page, exactly where the fetch would have raised without prefetching, so the
engine's stop-and-keep-the-cursor rules are unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
_END = object()


def prefetched(pages: Iterator[T]) -> Iterator[T]:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")

    def advance() -> object:
        return next(pages, _END)

    def fetch() -> Future[object]:
        # The worker logs with the run's context (run_id), as the caller would.
        ctx = contextvars.copy_context()
        return pool.submit(ctx.run, advance)

    pending: Future[object] | None = fetch()
    try:
        while pending is not None:
            item = pending.result()
            if item is _END:
                pending = None
                return
            pending = fetch()
            yield item  # type: ignore[misc]
    finally:
        if pending is not None:
            # The caller stopped early: let the fetch in flight finish before closing its source.
            with contextlib.suppress(BaseException):
                pending.result()  # the caller already stopped for its own reason
        pool.shutdown(wait=True)
        close = getattr(pages, "close", None)
        if close is not None:
            close()
