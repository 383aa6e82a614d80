"""The next page is fetched while the current one is processed, and never more than one ahead;
a fetch's error reaches the caller when it asks for that page; stopping early closes the source."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from connector.prefetch import prefetched


def test_the_next_page_is_fetched_while_the_current_one_is_processed() -> None:
    started = [threading.Event() for _ in range(4)]
    produced: list[int] = []

    def pages() -> Iterator[int]:
        for k in range(4):
            started[k].set()
            produced.append(k)
            yield k

    seen = []
    for k in prefetched(pages()):
        seen.append(k)
        if k + 1 < 4:
            # Page k+1 is on its way while page k is still being worked on.
            assert started[k + 1].wait(10), f"page {k + 1} was not fetched during page {k}"
        # Never more than one page ahead of the one in use.
        assert len(produced) <= k + 2
    assert seen == [0, 1, 2, 3]


def test_a_fetch_error_is_raised_when_its_page_is_asked_for() -> None:
    def pages() -> Iterator[int]:
        yield 0
        raise RuntimeError("page 1 failed")

    it = prefetched(pages())
    assert next(it) == 0
    with pytest.raises(RuntimeError, match="page 1 failed"):
        next(it)


def test_stopping_early_closes_the_source() -> None:
    closed = threading.Event()

    def pages() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            closed.set()

    for k in prefetched(pages()):
        if k == 2:
            break
    assert closed.is_set()
