"""Concurrent writes of one page to one billing account, results handed back in input order.

The engine plans a page, records the intents of its creates, then applies each planned write.
One request at a time leaves a billing account's rate cap mostly unused (at 250 ms a request,
4 a second against Stripe's 25 or 100), so the writes of a page go out from a bounded pool: as
many in flight as the account's pace times the latency seen needs (`RateLimiter.in_flight`),
never more than `max_in_flight`. The limiter, shared by every thread, keeps the pace.

What must not change with concurrency:
- results are handed to `on_result` one by one in the order of the plans, so outcomes, counts
  and decisions read exactly as in a serial run;
- one Salesforce account is never written by two requests at once (a plan whose account is in
  flight waits until that one is handed back);
- whatever stops the page (the stop event, the runner lock lost, a signal, an unreachable
  account) stops sending, waits for the requests already in flight and hands their results
  back too: what billing now holds is always recorded.
"""

from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

P = TypeVar("P")
R = TypeVar("R")


class Stop(Exception):
    """Raised by `on_result` to stop sending; the requests in flight are still handed back."""


class _Done(Generic[R]):
    """The result of a plan applied on the caller's thread, read back like a finished Future."""

    __slots__ = ("_error", "_value")

    def __init__(self, value: R | None, error: BaseException | None) -> None:
        self._value = value
        self._error = error

    def result(self) -> R:
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


class WritePool(Generic[P, R]):
    """Applies plans with up to `window()` requests in flight; `window` is asked before each."""

    def __init__(
        self,
        apply: Callable[[P], R],
        *,
        key: Callable[[P], str],
        writes: Callable[[P], bool],
        window: Callable[[], int],
        most: int,
    ) -> None:
        self.apply = apply
        self.key = key
        self.writes = writes
        self.window = window
        self.most = max(1, most)
        #: the most requests seen in flight at once (for the run report and tests)
        self.peak = 0

    def run(
        self,
        plans: Sequence[P],
        *,
        before_send: Callable[[P], bool],
        on_result: Callable[[P, R], None],
    ) -> bool:
        """Apply `plans`; False when `before_send` said stop before every plan was sent.

        `before_send(plan)` runs on the caller's thread before a plan is applied (progress, the
        stop event, the runner lock); it returns False to stop sending, or raises. `on_result`
        runs on the caller's thread, in plan order, and may raise `Stop` (or anything else) to
        stop sending; the requests in flight are handed back to it first either way.
        """
        if self.most == 1:
            return self._serial(plans, before_send, on_result)
        pending: deque[tuple[P, Future[R] | _Done[R]]] = deque()
        busy: dict[str, int] = {}  # account -> writes of it in flight
        sending = True
        error: BaseException | None = None
        sent_all = True
        with ThreadPoolExecutor(max_workers=self.most, thread_name_prefix="writer") as pool:
            it = iter(plans)
            nxt: P | None = None
            exhausted = False
            while True:
                # Fill the window.
                try:
                    while sending and not exhausted:
                        if nxt is None:
                            nxt = next(it, None)
                            if nxt is None:
                                exhausted = True
                                break
                        writes = self.writes(nxt)
                        if writes:
                            in_flight = sum(busy.values())
                            # The window is at least one: with nothing in flight it is not asked
                            # (it takes the limiter's lock, once per write otherwise).
                            if in_flight and in_flight >= max(1, min(self.most, self.window())):
                                break
                            if busy.get(self.key(nxt)):
                                break  # the same account is in flight: it goes after that one
                        if not before_send(nxt):
                            sending, sent_all = False, False
                            break
                        plan, nxt = nxt, None
                        pending.append((plan, self._submit(pool, plan, writes)))
                        if writes:
                            busy[self.key(plan)] = busy.get(self.key(plan), 0) + 1
                            self.peak = max(self.peak, sum(busy.values()))
                except BaseException as exc:  # the lock lost, a signal: stop, hand back, raise
                    sending, error = False, exc
                    if nxt is not None or not exhausted:
                        sent_all = False
                if not pending:
                    break
                plan, future = pending.popleft()
                try:
                    result = future.result()
                except BaseException as exc:
                    sending, sent_all = False, False
                    error = error or exc
                    self._release(busy, plan)
                    continue
                self._release(busy, plan)
                try:
                    on_result(plan, result)
                except Stop:
                    sending, sent_all = False, False
                except BaseException as exc:
                    sending, sent_all = False, False
                    error = error or exc
        if error is not None:
            raise error
        return sent_all and (exhausted or nxt is None)

    def _submit(self, pool: ThreadPoolExecutor, plan: P, writes: bool) -> Future[R] | _Done[R]:
        if not writes:
            # Nothing to send (unchanged, refused): no thread and no Future (a Future builds a
            # Condition, which cost more than applying an unchanged record), just its place in
            # order.
            try:
                return _Done(self.apply(plan), None)
            except BaseException as exc:
                return _Done(None, exc)
        # Each request keeps the run's log context (run_id) on its worker thread.
        context = contextvars.copy_context()
        return pool.submit(context.run, self.apply, plan)

    def _release(self, busy: dict[str, int], plan: P) -> None:
        k = self.key(plan)
        if busy.get(k):
            busy[k] -= 1
            if not busy[k]:
                del busy[k]

    def _serial(
        self,
        plans: Sequence[P],
        before_send: Callable[[P], bool],
        on_result: Callable[[P, R], None],
    ) -> bool:
        """`max_in_flight: 1`: one request at a time, on the caller's thread."""
        for plan in plans:
            if not before_send(plan):
                return False
            if self.writes(plan):
                self.peak = 1
            try:
                on_result(plan, self.apply(plan))
            except Stop:
                return False
        return True
